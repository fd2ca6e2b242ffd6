"""Writing labelmaps and 3D Slicer segmentation files under the output rule.

Every output follows the rule of :mod:`.outputs` (never over an input, never replacing a file unless
``overwrite``, written under a temporary name in the destination folder, read back and checked complete,
then created exclusively under its final name; "Wrote" is logged only after that):

* labelmaps (:func:`write_labelmap`): ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha`` (uint8, the input's
  geometry), ``.png`` (2D);
* ``.seg.nrrd`` (:func:`write_seg_nrrd`): a 3D Slicer segmentation file with one segment per class (name,
  colour, label value, SNOMED CT terminology tag, status "in progress"), written with slicerio.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .images import atomic_output, check_file_complete, check_output_path
from .outputs import path_extension

logger = logging.getLogger(__name__)

__all__ = ["check_labelmap", "read_back_verifier", "write_labelmap", "write_seg_nrrd"]


def read_back_verifier(expected: np.ndarray, *, reader=None):
    """A ``verify`` function for :func:`.images.atomic_output`: the written file, read again, must hold ``expected``.

    Args:
        expected: the array written (any shape and dtype), compared exactly.
        reader: ``reader(path) -> np.ndarray`` for the written file; default SimpleITK (voxels in (k, j, i) order).

    Returns:
        ``verify(path)``, which raises ValueError when the file is incomplete (:func:`.images.check_file_complete`)
        or holds another shape or other values.
    """

    def verify(tmp: Path) -> None:
        check_file_complete(tmp)
        array = reader(tmp) if reader is not None else sitk.GetArrayFromImage(sitk.ReadImage(str(tmp)))
        if array.shape != expected.shape or not np.array_equal(array, expected):
            raise ValueError(
                f"the file read back holds other values or shape ({array.shape}) than those written ({expected.shape})"
            )

    return verify


def _as_2d(labelmap: sitk.Image) -> sitk.Image:
    if labelmap.GetDimension() == 2:
        return labelmap
    size = labelmap.GetSize()
    if labelmap.GetDimension() == 3 and sum(s > 1 for s in size) <= 2 and 1 in size:
        axis = size.index(1)
        extract_size = list(size)
        extract_size[axis] = 0
        return sitk.Extract(labelmap, extract_size, [0, 0, 0])
    raise ValueError(
        f"PNG output needs a 2D labelmap (or a single slice), got size {size}. Write .nii.gz, .nrrd or "
        ".seg.nrrd instead."
    )


def check_labelmap(labelmap: sitk.Image) -> sitk.Image:
    """The labelmap as uint8 (the image itself when it already is).

    Raises:
        ValueError: vector pixels, or values outside 0..255.
    """
    if labelmap.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("A labelmap must have scalar pixels.")
    if labelmap.GetPixelID() != sitk.sitkUInt8:
        arr = sitk.GetArrayViewFromImage(labelmap)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"Label values must lie in 0..255, got {arr.min()}..{arr.max()}.")
        labelmap = sitk.Cast(labelmap, sitk.sitkUInt8)
    return labelmap


def write_labelmap(
    labelmap: sitk.Image,
    path: str | os.PathLike,
    classes: Sequence[dict] | None = None,
    flagged=(),
    *,
    overwrite: bool = False,
    inputs: Sequence = (),
) -> Path:
    """Write a labelmap under the output rule (:mod:`.outputs`); the format follows the extension.

    Args:
        labelmap: uint8 (or integer 0..255) scalar image; its geometry is written as is.
        path: ``.nii.gz``/``.nii``/``.nrrd``/``.mha`` (geometry kept), ``.png`` (2D or one slice; no
            geometry; grey 0/255 for one class with label value 1, else a palette PNG whose index is the
            label value, :func:`.masks.png_mask`), or ``.seg.nrrd`` (Slicer segmentation; needs ``classes``).
        classes: class descriptions as in model.json, required for ``.seg.nrrd`` (and the PNG palette).
        flagged: label values whose ``.seg.nrrd`` segments get the status "flagged" (needs review).
        overwrite: replace an existing file at ``path`` (never an input).
        inputs: the files the labelmap was made from (``path`` must not be one of them).

    Returns:
        The written path.

    Raises:
        ValueError: unsupported extension, vector pixels, values outside 0..255, PNG of a volume,
            ``.seg.nrrd`` without classes, ``path`` is an input.
        FileExistsError: ``path`` exists (before or during the write) and ``overwrite`` is False.
        FileNotFoundError, PermissionError: see :func:`.images.check_output_path`.
        OSError: :class:`.outputs.OutputError` for a full disk or a file that reads back incomplete.
    """
    path = check_output_path(path, overwrite=overwrite, inputs=inputs)
    ext = path_extension(path)
    if ext == ".seg.nrrd":
        if classes is None:
            raise ValueError("Writing a .seg.nrrd needs the class list (names, colours, label values).")
        return write_seg_nrrd(labelmap, path, classes, flagged=flagged, overwrite=overwrite, inputs=inputs)
    labelmap = check_labelmap(labelmap)
    if ext == ".png":  # 0/255 for one class, else a palette PNG in the class colours (:mod:`.masks`)
        from .masks import write_png_mask

        write_png_mask(_as_2d(labelmap), path, classes, overwrite=overwrite, inputs=inputs)
        logger.info("Wrote labelmap %s", path)
        return path
    with atomic_output(
        path, overwrite=overwrite, inputs=inputs, verify=read_back_verifier(sitk.GetArrayFromImage(labelmap))
    ) as tmp:
        sitk.WriteImage(labelmap, str(tmp), useCompression=ext != ".png")
    logger.info("Wrote labelmap %s", path)
    return path


def _ijk_to_lps(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(voxels in (i, j, k) order, 4x4 IJK-to-LPS) of a 2D or 3D labelmap."""
    arr = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 2:
        arr = arr[None]
        spacing = (*image.GetSpacing(), 1.0)
        origin = (*image.GetOrigin(), 0.0)
        d2 = np.asarray(image.GetDirection(), dtype=float).reshape(2, 2)
        direction = np.eye(3)
        direction[:2, :2] = d2
    else:
        spacing, origin = image.GetSpacing(), image.GetOrigin()
        direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction * np.asarray(spacing, dtype=float)[None, :]
    matrix[:3, 3] = origin
    return np.ascontiguousarray(np.transpose(arr, (2, 1, 0))), matrix


def write_seg_nrrd(
    labelmap: sitk.Image,
    path: str | os.PathLike,
    classes: Sequence[dict],
    *,
    status: str = "inprogress",
    flagged=(),
    overwrite: bool = False,
    inputs: Sequence = (),
) -> Path:
    """Write a 3D Slicer segmentation (``.seg.nrrd``) under the output rule (:mod:`.outputs`).

    All segments share layer 0 with their model label values, so Slicer and slicerio read the same
    numbers back. Every class gets a segment, even when empty.

    Args:
        labelmap: 2D or 3D integer labelmap (values 0..255); a 2D one is written as one slice.
        path: destination ending in ``.seg.nrrd``.
        classes: model.json class dicts or :class:`~AttentionMambaSegLib.terminology.ClassEntry`
            objects (read and checked by :mod:`.terminology`); entries with label_value 0 are skipped.
        status: segment status tag (``"inprogress"``: a result to review before use).
        flagged: label values whose segments get the status ``"flagged"`` instead (low confidence, or
            not found: :mod:`.inference.result`).
        overwrite, inputs: as :func:`write_labelmap`.

    Returns:
        The written path.

    Raises:
        ValueError: wrong extension, bad labelmap, duplicate label values, or labels present in the
            image but missing from ``classes``.
        FileExistsError, OSError: as :func:`write_labelmap`.
    """
    import slicerio

    path = check_output_path(path, allowed=(".seg.nrrd",), overwrite=overwrite, inputs=inputs)
    labelmap = check_labelmap(labelmap)
    if labelmap.GetDimension() not in (2, 3):
        raise ValueError(f"A segmentation needs a 2D or 3D labelmap, got {labelmap.GetDimension()}D.")
    from .terminology import ClassEntry, check_distinct

    voxels, ijk_to_lps = _ijk_to_lps(labelmap)
    entries = [
        c if isinstance(c, ClassEntry) else ClassEntry.from_dict(c, f"classes[{i}]") for i, c in enumerate(classes)
    ]
    foreground = [e for e in entries if e.label_value != 0]
    values = [e.label_value for e in foreground]
    check_distinct(foreground)  # label values, codes and colours
    present = set(np.unique(voxels).tolist()) - {0}
    missing = sorted(present - set(values))
    if missing:
        raise ValueError(f"Label values {missing} are in the labelmap but not in the class list {values}.")
    segments = _slicer_segments(foreground, status, flagged)
    segmentation = {
        "voxels": voxels,
        "ijkToLPS": ijk_to_lps,
        "encoding": "gzip",
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
        "referenceImageExtentOffset": [0, 0, 0],
        "segments": segments,
    }
    layers = np.transpose(voxels, (2, 1, 0))  # (k, j, i): as ITK reads the NRRD back
    with atomic_output(path, overwrite=overwrite, inputs=inputs, verify=read_back_verifier(layers)) as tmp:
        slicerio.write_segmentation(str(tmp), segmentation)
    logger.info("Wrote segmentation %s (%d segments)", path, len(segments))
    return path


def _slicer_segments(foreground: Sequence, status: str, flagged) -> list[dict]:
    """The ``segments`` of a slicerio segmentation: one per class on layer 0, with its model label value,
    colour, status (``"flagged"`` for a label value in ``flagged``) and terminology."""
    segments = []
    for c in foreground:
        segment = {
            "id": f"Segment_{c.label_value}",
            "name": c.name,
            "labelValue": c.label_value,
            "layer": 0,
            "color": [round(v, 6) for v in c.color_float()],
            "colorAutoGenerated": False,
            "nameAutoGenerated": False,
            "status": "flagged" if c.label_value in set(flagged) else status,
        }
        term = c.slicerio_terminology()
        if term is not None:
            segment["terminology"] = term
        segments.append(segment)
    return segments
