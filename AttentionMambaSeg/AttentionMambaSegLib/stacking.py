"""The way back from the slice grid: class probabilities to a labelmap on the input image's own grid.

Probabilities on the model's slice grid (:func:`.slicing.image_to_slices`) are resampled in-plane to the
image's grid (:func:`.slicing.resample_in_plane`), then the argmax is taken (:func:`probabilities_to_label_slices`,
batch by batch); the label slices are put back into an image with the original size, spacing, origin and
direction, undoing the reorientation exactly (:func:`label_slices_to_image`).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .slicing import SliceGeometry, resample_in_plane

__all__ = ["label_slices_to_image", "probabilities_to_label_slices", "slices_to_image"]


def probabilities_to_label_slices(probabilities: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """Resample slice-grid probabilities back to the image's in-plane grid, then take the argmax.

    Works on any run of slices (e.g. one inference batch), so a whole volume of float probabilities
    never has to be held at once.

    Args:
        probabilities: float ``(B, K, H, W)`` with (H, W) = ``geometry.slice_shape``. K >= 2:
            per-class probabilities (softmax); the label is the argmax channel index. K == 1: the
            foreground probability of a sigmoid model; the label is 1 where it exceeds 0.5.
        geometry: from :func:`.slicing.image_to_slices`.

    Returns:
        uint8 ``(B, h, w)`` labels with (h, w) = ``geometry.in_plane_shape``.

    Raises:
        ValueError: on a shape mismatch or more than 256 classes.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 4 or tuple(probabilities.shape[2:]) != tuple(geometry.slice_shape):
        raise ValueError(
            f"probabilities must have shape (B, K, {geometry.slice_shape[0]}, {geometry.slice_shape[1]}), "
            f"got {probabilities.shape}."
        )
    num_slices, num_classes = probabilities.shape[:2]
    if num_classes > 256:
        raise ValueError(f"At most 256 classes fit a uint8 labelmap, got {num_classes}.")
    h, w = geometry.in_plane_shape
    if not geometry.resampled:
        resampled = probabilities
    else:
        resampled = resample_in_plane(probabilities.astype(np.float32, copy=False), geometry, to_slice_grid=False)
    if num_classes == 1:
        return (resampled[:, 0] > 0.5).astype(np.uint8)
    return np.argmax(resampled, axis=1).astype(np.uint8)


def label_slices_to_image(labels: np.ndarray, geometry: SliceGeometry) -> sitk.Image:
    """Put labels on the image's in-plane grid back into an image with the original geometry.

    Args:
        labels: uint8 ``(S, h, w)`` with (h, w) = ``geometry.in_plane_shape`` (as returned by
            :func:`probabilities_to_label_slices`).
        geometry: from :func:`.slicing.image_to_slices`.

    Returns:
        uint8 labelmap with exactly the original size, spacing, origin and direction.

    Raises:
        ValueError: on a shape mismatch.
    """
    labels = np.asarray(labels)
    expected = (geometry.num_slices, *geometry.in_plane_shape)
    if tuple(labels.shape) != expected:
        raise ValueError(f"labels must have shape {expected}, got {labels.shape}.")
    labels = labels.astype(np.uint8, copy=False)
    if geometry.dimension == 2:
        out = sitk.GetImageFromArray(np.ascontiguousarray(labels[0]))
        return geometry.copy_geometry_to(out)
    inverse = tuple(int(i) for i in np.argsort(geometry.permutation))
    reoriented = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(labels, inverse)))
    same_grid = (
        tuple(geometry.reoriented_size) == tuple(geometry.size)
        and tuple(geometry.reoriented_direction) == tuple(geometry.direction)
        and tuple(geometry.reoriented_origin) == tuple(geometry.origin)
    )
    if same_grid:  # the volume was not reoriented: no resampling (and no extra copy) needed
        return geometry.copy_geometry_to(reoriented)
    reoriented.SetSpacing(geometry.reoriented_spacing)
    reoriented.SetOrigin(geometry.reoriented_origin)
    reoriented.SetDirection(geometry.reoriented_direction)
    # The reoriented grid is a permutation/flip of the original one, so the nearest neighbour of each
    # original voxel is that same voxel: this resample is an exact rearrangement.
    out = sitk.Resample(
        reoriented,
        [int(s) for s in geometry.size],
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        geometry.origin,
        geometry.spacing,
        geometry.direction,
        0,
        sitk.sitkUInt8,
    )
    return out


def slices_to_image(probabilities: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """Turn slice-grid probabilities into a labelmap array on the original grid.

    Args:
        probabilities: float32 ``(S, K, H, W)`` (see :func:`probabilities_to_label_slices`).
        geometry: from :func:`.slicing.image_to_slices`.

    Returns:
        uint8 array in the original image's numpy order: (k, j, i) for 3D, (j, i) for 2D. Use
        ``sitk.GetImageFromArray`` and :meth:`.slicing.SliceGeometry.copy_geometry_to` to make an image, or
        call :func:`label_slices_to_image` on the output of :func:`probabilities_to_label_slices`.

    Raises:
        ValueError: on a shape mismatch.
    """
    if np.asarray(probabilities).shape[0] != geometry.num_slices:
        raise ValueError(
            f"Expected probabilities for {geometry.num_slices} slices, got {np.asarray(probabilities).shape[0]}."
        )
    labels = probabilities_to_label_slices(probabilities, geometry)
    return sitk.GetArrayFromImage(label_slices_to_image(labels, geometry))
