"""Post-processing of labelmaps: connected components and their selection."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

__all__ = ["keep_largest_component"]


def keep_largest_component(labelmap: sitk.Image, label_values) -> sitk.Image:
    """Keep only the largest connected component of each of ``label_values``; the rest becomes 0.

    nnU-Net's best-known post-processing (Isensee et al., Nature Methods 2021), applied to classes that
    are one structure per image (e.g. the left ventricle); whether it helps is decided per model on the
    validation cases and recorded in model.json (``postprocessing.largest_component``).

    Args:
        labelmap: uint8 labelmap, 2D or 3D, any geometry (face-connected components in index space).
        label_values: label values to clean; values absent from the labelmap are skipped.

    Returns:
        A new uint8 labelmap with the same geometry; the input is not modified.
    """
    arr = sitk.GetArrayFromImage(labelmap).astype(np.uint8, copy=False)  # a copy
    statistics = sitk.LabelShapeStatisticsImageFilter()
    for value in label_values:
        # Components are labelled inside the label's bounding box only: the uint32 component image
        # (4 bytes a voxel) then costs a fraction of the volume for a structure like the heart.
        box = _bounding_box(arr == value)
        if box is None:
            continue
        sub = arr[box]  # a view: edits below change arr
        mask = (sub == value).astype(np.uint8)
        components = sitk.ConnectedComponent(sitk.GetImageFromArray(mask))
        statistics.Execute(components)
        found = statistics.GetLabels()
        if len(found) > 1:  # keep the largest; ties go to the first in index order
            largest = max(found, key=lambda label: (statistics.GetNumberOfPixels(label), -label))
            sub[(sitk.GetArrayViewFromImage(components) != largest) & (mask == 1)] = 0
        del components, mask
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(labelmap)
    return out


def _bounding_box(mask: np.ndarray):
    """The smallest tuple of slices holding every True voxel of ``mask``, or None if there is none."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)
