"""Segmenting inside a region of interest: crop in physical space, segment, place the labels back.

A model trained on crops around a structure (the hippocampus of MSD) sees a whole head as something it
never saw, and a whole head is many more network passes. A box around the structure, as Slicer's
markups ROI or Crop Volume places it, gives the model the view it knows and the CPU a fraction of the
work. The box is a centre and a size in millimetres along its own axes (an ROI may be rotated); the
image is cropped to the index-space bounding box of the box's corners (its grid, spacing, origin and
direction are kept, so the crop is exact: no resampling), and the labels come back on the full input
grid, zero outside the box.

Coordinates: a Slicer ``.mrk.json`` file says its own coordinate system (``"LPS"``, Slicer's default
for files, or ``"RAS"``); a centre and size given as numbers are RAS, as Slicer shows them. Internally
everything is LPS, ITK's physical space.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import SimpleITK as sitk

__all__ = ["RegionOfInterest", "crop_to_roi", "paste_labels"]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def _triple(values) -> tuple[float, float, float]:
    """The values as a tuple of floats (:class:`RegionOfInterest` checks that there are three)."""
    return cast("tuple[float, float, float]", tuple(float(v) for v in values))


@dataclass(frozen=True)
class RegionOfInterest:
    """A box in LPS physical space.

    Attributes:
        center: (x, y, z) in mm, LPS.
        size: edge lengths in mm along the box's own axes.
        axes: 3 x 3, the box's axis directions as columns, in LPS (identity for an axis-aligned box).
    """

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    axes: tuple[tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def __post_init__(self):
        if (
            len(self.center) != 3
            or len(self.size) != 3
            or not all(math.isfinite(v) for v in (*self.center, *self.size))
        ):
            raise ValueError(
                f"A region of interest needs a 3D centre and size, got centre {self.center}, size {self.size}."
            )
        if min(self.size) <= 0:
            raise ValueError(
                f"The region of interest's size must be positive in every direction (mm), got {self.size}."
            )

    @classmethod
    def from_ras(cls, center_ras, size_mm) -> RegionOfInterest:
        """An axis-aligned box from a RAS centre (as Slicer shows coordinates) and a size in mm."""
        center = _RAS_TO_LPS @ np.asarray(center_ras, dtype=np.float64)
        return cls(_triple(center), _triple(size_mm))

    @classmethod
    def from_text(cls, text: str) -> RegionOfInterest:
        """``"CX,CY,CZ,SX,SY,SZ"``: RAS centre and size in mm (the ``--roi`` numbers).

        Raises:
            ValueError: not six numbers.
        """
        try:
            values = [float(v) for v in text.replace(" ", "").split(",")]
        except ValueError:
            values = []
        if len(values) != 6:
            raise ValueError(
                f"--roi {text!r}: give a Slicer ROI file (.mrk.json) or six numbers "
                "CX,CY,CZ,SX,SY,SZ (centre R, A, S and size in mm)."
            )
        return cls.from_ras(values[:3], values[3:])

    @classmethod
    def from_markups_file(cls, path) -> RegionOfInterest:
        """The first ROI of a Slicer markups file (``.mrk.json``), in its stated coordinate system.

        Raises:
            ValueError: the file holds no ROI or is not a markups file.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            markups = [m for m in data.get("markups", []) if str(m.get("type", "")).upper() == "ROI"]
        except (OSError, ValueError, AttributeError) as e:
            raise ValueError(
                f"{path} is not a Slicer markups file ({e}); save the ROI from Slicer as .mrk.json."
            ) from e
        if not markups:
            raise ValueError(f"{path} holds no ROI markup; place an ROI in Slicer (Markups > ROI) and save it.")
        roi = markups[0]
        system = str(roi.get("coordinateSystem", "LPS")).upper()
        flip = _RAS_TO_LPS if system == "RAS" else np.eye(3)
        try:
            center = flip @ np.asarray(roi["center"], dtype=np.float64)
            size = [float(v) for v in roi["size"]]
            axes = np.asarray(roi.get("orientation", np.eye(3).reshape(-1)), dtype=np.float64).reshape(3, 3)
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: the ROI needs 'center' and 'size' (3 numbers each): {e}") from e
        axes = flip @ axes
        return cls(_triple(center), _triple(size), tuple(tuple(float(v) for v in row) for row in axes))

    def corners(self) -> np.ndarray:
        """The 8 corners, (8, 3) LPS mm."""
        half = np.asarray(self.size) / 2.0
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        return np.asarray(self.center) + (signs * half) @ np.asarray(self.axes).T

    def contains(self, points_lps: np.ndarray) -> np.ndarray:
        """Whether each (N, 3) LPS point lies inside the box (bool (N,))."""
        local = (np.asarray(points_lps) - np.asarray(self.center)) @ np.asarray(self.axes)
        return np.all(np.abs(local) <= np.asarray(self.size) / 2.0 + 1e-6, axis=1)


def crop_to_roi(image: sitk.Image, roi: RegionOfInterest) -> tuple[sitk.Image, tuple[int, ...]]:
    """The part of ``image`` under the box: ``(crop, start index)``; the crop keeps the input's geometry.

    Raises:
        ValueError: the box does not overlap the image, or the image is not 3D.
    """
    if image.GetDimension() != 3:
        raise ValueError("A region of interest applies to 3D volumes; a 2D image is segmented whole.")
    corners = np.asarray(
        [image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in c)) for c in roi.corners()]
    )
    size = np.asarray(image.GetSize())
    # voxel i covers [i - 0.5, i + 0.5]: keep every voxel whose centre range the box touches
    lo = np.maximum(np.floor(corners.min(axis=0) + 0.5).astype(int), 0)
    hi = np.minimum(np.ceil(corners.max(axis=0) - 0.5).astype(int), size - 1)
    if np.any(hi < lo):
        first = image.TransformIndexToPhysicalPoint((0, 0, 0))
        last = image.TransformIndexToPhysicalPoint(tuple(int(v) - 1 for v in size))
        lps = ", ".join(f"{v:.1f}" for v in roi.center)
        raise ValueError(
            f"The region of interest (centre {lps} mm LPS, size {roi.size} mm) lies outside the image "
            f"(from {tuple(round(v, 1) for v in first)} to {tuple(round(v, 1) for v in last)} "
            "mm LPS). Place the ROI over the image."
        )
    crop = sitk.RegionOfInterest(image, [int(v) for v in hi - lo + 1], [int(v) for v in lo])
    return crop, tuple(int(v) for v in lo)


def paste_labels(labels: sitk.Image, image: sitk.Image, start: tuple[int, ...], roi: RegionOfInterest) -> sitk.Image:
    """The crop's labels on the full grid of ``image``: zero outside the box (also inside the crop's corners).

    Returns:
        uint8 labelmap with the input's size, spacing, origin and direction.
    """
    arr = sitk.GetArrayFromImage(labels)  # (z, y, x) of the crop
    nz, ny, nx = arr.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    index = np.stack([i.ravel() + start[0], j.ravel() + start[1], k.ravel() + start[2]], axis=1).astype(np.float64)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    points = np.asarray(image.GetOrigin()) + (index * np.asarray(image.GetSpacing())) @ direction.T
    arr[~roi.contains(points).reshape(arr.shape)] = 0
    full = np.zeros(tuple(reversed(image.GetSize())), dtype=np.uint8)
    full[start[2] : start[2] + nz, start[1] : start[1] + ny, start[0] : start[0] + nx] = arr
    out = sitk.GetImageFromArray(full)
    out.CopyInformation(image)
    return out
