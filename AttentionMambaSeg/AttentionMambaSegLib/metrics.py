"""Overlap and surface-distance metrics: Dice and HD95 (arXiv 2402.02286 v4, Sec. 4).

Both functions take boolean (or 0/1) masks as numpy arrays of any dimension (2D images, 3D volumes).
Distances are physical: ``spacing`` gives the size of one voxel along each *array* axis, in mm and in the
array's axis order. For an array from ``sitk.GetArrayFromImage`` (axes (S, H, W) = (k, j, i)) that is
``image.GetSpacing()[::-1]``; :func:`array_spacing` does the conversion.

Conventions for empty masks (the authors' code has none; these are the usual ones):

- both masks empty: Dice 1, HD95 0 (a correct "absent");
- exactly one empty: Dice 0, HD95 = the image diagonal in mm, ``sqrt(sum_d (n_d * spacing_d)^2)``
  (the largest distance possible in the image, a finite worst case that still averages).

HD95 follows the definition of medpy's ``hd95`` used by the TransUNet/Attention-Mamba evaluation: the
surface of a mask is the set of its voxels removed by one binary erosion with the face-connected
structuring element (voxels on the image border count as surface), distances from every surface voxel of
one mask to the nearest surface voxel of the other are taken in both directions (Euclidean distance
transform with anisotropic ``sampling``), and the 95th percentile of the pooled distances is returned.
Deviation from the authors' code: every case uses its own spacing, on its original grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["dice", "hd95", "array_spacing", "image_diagonal", "per_class_metrics"]


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool:
        mask = mask != 0
    return mask


def _check_shapes(pred: np.ndarray, ref: np.ndarray) -> None:
    if pred.shape != ref.shape:
        raise ValueError(f"prediction and reference shapes differ: {pred.shape} vs {ref.shape}")


def _check_spacing(spacing: Sequence[float] | np.ndarray | None, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    values = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if values.size != ndim:
        raise ValueError(f"spacing needs one value per array axis ({ndim}), got {values.tolist()}")
    if np.any(values <= 0) or not np.all(np.isfinite(values)):
        raise ValueError(f"spacing must be positive and finite, got {values.tolist()}")
    return values


def array_spacing(image) -> tuple[float, ...]:
    """Spacing of a SimpleITK image in numpy array axis order (mm).

    Args:
        image: ``SimpleITK.Image``; its spacing is (i, j, k) while its array is (k, j, i).

    Returns:
        the spacing reversed, e.g. (10.0, 1.5625, 1.5625) for an ACDC volume.
    """
    return tuple(float(s) for s in reversed(image.GetSpacing()))


def image_diagonal(shape: Sequence[int], spacing: Sequence[float] | np.ndarray | None = None) -> float:
    """Length of the image diagonal in mm: ``sqrt(sum_d (shape_d * spacing_d)^2)``.

    Args:
        shape: array shape.
        spacing: voxel size per array axis in mm (ones if None).

    Returns:
        the diagonal length (mm; pixels when spacing is None).
    """
    sp = _check_spacing(spacing, len(shape))
    return float(np.sqrt(np.sum((np.asarray(shape, dtype=np.float64) * sp) ** 2)))


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient ``2 |P and G| / (|P| + |G|)`` of two binary masks.

    Args:
        pred: predicted mask, any shape, bool or 0/1 (non-zero = foreground).
        ref: reference mask, same shape.

    Returns:
        Dice in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.

    Raises:
        ValueError: if the shapes differ.
    """
    pred = _as_bool(pred, "pred")
    ref = _as_bool(ref, "ref")
    _check_shapes(pred, ref)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    eroded = ndimage.binary_erosion(mask, structure=structure, iterations=1, border_value=0)
    return mask & ~eroded


def _directed_surface_distances(a_surface: np.ndarray, b_surface: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm) from every surface voxel of ``a`` to the nearest surface voxel of ``b``."""
    distance_to_b = ndimage.distance_transform_edt(~b_surface, sampling=spacing)
    return distance_to_b[a_surface]


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance between the surfaces of two binary masks.

    Args:
        pred: predicted mask, any shape (2D or 3D), bool or 0/1.
        ref: reference mask, same shape.
        spacing: voxel size along each array axis in mm (array axis order; see :func:`array_spacing`).
            None means 1 per axis (distances in pixels).

    Returns:
        HD95 in mm: 0.0 when both masks are empty; the image diagonal (:func:`image_diagonal`) when
        exactly one is empty.

    Raises:
        ValueError: if the shapes differ or the spacing does not have one positive value per axis.
    """
    pred = _as_bool(pred, "pred")
    ref = _as_bool(ref, "ref")
    _check_shapes(pred, ref)
    sp = _check_spacing(spacing, pred.ndim)
    pred_any, ref_any = bool(pred.any()), bool(ref.any())
    if not pred_any and not ref_any:
        return 0.0
    if pred_any != ref_any:
        return image_diagonal(pred.shape, sp)
    pred_surface, ref_surface = _surface(pred), _surface(ref)
    distances = np.concatenate(
        [
            _directed_surface_distances(pred_surface, ref_surface, sp),
            _directed_surface_distances(ref_surface, pred_surface, sp),
        ]
    )
    return float(np.percentile(distances, 95))


def per_class_metrics(
    pred: np.ndarray, ref: np.ndarray, label_values: Sequence[int], spacing: Sequence[float] | None = None
) -> dict[int, dict[str, float]]:
    """Dice and HD95 of every label value of two labelmaps.

    Args:
        pred: predicted labelmap, integer array, any shape.
        ref: reference labelmap, same shape.
        label_values: the foreground label values to score.
        spacing: voxel size per array axis in mm (see :func:`hd95`).

    Returns:
        ``{label_value: {"dice": float, "hd95": float, "pred_voxels": int, "ref_voxels": int}}``.

    Raises:
        ValueError: if the shapes differ.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    _check_shapes(pred, ref)
    results: dict[int, dict[str, float]] = {}
    for value in label_values:
        p, r = pred == value, ref == value
        results[int(value)] = {
            "dice": dice(p, r),
            "hd95": hd95(p, r, spacing),
            "pred_voxels": int(p.sum()),
            "ref_voxels": int(r.sum()),
        }
    return results
