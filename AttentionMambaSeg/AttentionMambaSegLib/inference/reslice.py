"""The slicing plane: the acquisition's, or the model's own axes for an input that is oblique to them.

A 2D network sees one plane. For a short-axis cardiac cine the acquisition plane is the plane the
model knows, whatever its angle to the patient axes (model.json ``"slicing": "acquisition"``, the
default). A model trained on volumes in the patient axes (isotropic brain MRI, the hippocampus)
knows those axes: an input tilted by more than :data:`OBLIQUE_DEGREES` to them is resampled onto an
axis-aligned grid (linear interpolation), segmented there, and its labels are resampled back to the
input grid (nearest neighbour), model.json ``"slicing": "canonical"``. With a region of interest the
axis-aligned grid is the region's box, resampled from the whole input: a model trained on crops
around a structure then sees a crop of the size it knows, without the empty corners of a tilted grid.
"""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import SimpleITK as sitk

__all__ = ["OBLIQUE_DEGREES", "obliquity_degrees", "canonical_reference", "to_canonical", "labels_back"]

logger = logging.getLogger(__name__)

#: Inputs tilted by more than this to the patient axes are resampled for a "canonical" model.
OBLIQUE_DEGREES = 10.0


def obliquity_degrees(image: sitk.Image) -> float:
    """The largest angle (degrees) between an image axis and the patient (LPS) axis closest to it."""
    dim = image.GetDimension()
    d = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    cosines = np.abs(d).max(axis=0) / np.linalg.norm(d, axis=0)
    return float(np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0))).max())


def canonical_reference(image: sitk.Image, roi=None) -> sitk.Image:
    """An axis-aligned (identity direction) grid that covers the image (a uint8 image; its grid is what counts).

    Each patient axis takes the spacing of the image axis closest to it; the grid covers the physical
    bounding box of the image's corner voxels or, with a :class:`~.roi.RegionOfInterest`, the part of
    it inside the box's bounding box (the model then sees only the region, all of it image data when
    the box lies inside the image).
    """
    dim = image.GetDimension()
    d = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    spacing_in = np.asarray(image.GetSpacing(), dtype=np.float64)
    closest = np.abs(d).argmax(axis=1)  # for each patient axis, the image axis most along it
    spacing = spacing_in[closest]
    size_in = image.GetSize()
    corners = np.array(
        [
            image.TransformIndexToPhysicalPoint([int(c) for c in corner])
            for corner in itertools.product(*[(0, n - 1) for n in size_in])
        ]
    )
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    if roi is not None:
        box = roi.corners()
        lo, hi = np.maximum(lo, box.min(axis=0)), np.minimum(hi, box.max(axis=0))
        hi = np.maximum(hi, lo)
    size = [int(math.floor((high - low) / s + 1e-6)) + 1 for low, high, s in zip(lo, hi, spacing)]
    reference = sitk.Image(size, sitk.sitkUInt8)  # only its grid is used: one byte a voxel
    reference.SetSpacing(tuple(float(v) for v in spacing))
    reference.SetOrigin(tuple(float(v) for v in lo))
    reference.SetDirection(tuple(np.eye(dim).reshape(-1)))
    return reference


def to_canonical(image: sitk.Image, roi=None) -> sitk.Image:
    """The image on its :func:`canonical_reference` grid (linear interpolation; 0 outside)."""
    reference = canonical_reference(image, roi)
    work = sitk.Cast(image, sitk.sitkFloat32 if image.GetNumberOfComponentsPerPixel() == 1 else sitk.sitkVectorFloat32)
    out = sitk.Resample(work, reference, sitk.Transform(), sitk.sitkLinear, 0.0)
    logger.info(
        "The input is %.0f degrees oblique to the patient axes: resampled onto an axis-aligned grid "
        "(%s voxels of %s mm) for this model, which segments in its own axes",
        obliquity_degrees(image),
        out.GetSize(),
        tuple(round(v, 3) for v in out.GetSpacing()),
    )
    return out


def labels_back(labels: sitk.Image, image: sitk.Image) -> sitk.Image:
    """Labels of the canonical grid on the input's grid (nearest neighbour), uint8."""
    out = sitk.Resample(labels, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    out.CopyInformation(image)
    return out
