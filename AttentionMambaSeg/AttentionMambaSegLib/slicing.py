"""Slice geometry shared by training and inference: volumes cut into 2D slices on the model's grid.

Attention-Mamba (arXiv 2402.02286) is a 2D network: volumes are cut into 2D slices, each slice is
resampled in-plane only to the model's spacing (the through-plane axis is never interpolated), and
intensities are normalised per model.json (nnU-Net's schemes, :mod:`.normalization`). This module makes
the slices; :mod:`.stacking` is the way back: class probabilities on the slice grid are resampled to the
input's own grid, then argmax.

Geometry contract (see docs/CONTRACTS.md):

* Everything is decided in physical space, never from numpy axis order. A volume is first reoriented
  losslessly (a permutation and flips of its axes, ``sitk.DICOMOrient``) to the model's axes code, so
  the same physical image stored with permuted or flipped axes yields the same slices.
* The slice axis is the axis of largest spacing when it is at least 1.5x the others, else the axis
  whose direction is closest to the patient z axis (:func:`choose_slice_axis`).
* In SimpleITK index order the axes are (i, j, k) = (x, y, z); numpy arrays from SimpleITK are
  (k, j, i). Slices are returned as ``(S, C, H, W)``: S runs along the slice axis, H along the higher
  of the two in-plane SimpleITK axes and W along the lower one (so for axial slices of an LPS volume
  (S, H, W) = (k, j, i), Slicer's (K, J, I)).
* In-plane resampling keeps the field of view's edges: the first new pixel centre lies half a new
  pixel from the first old pixel's outer edge ("align corners = False").
* 2D images (PNG/JPEG photos; grey or RGB vector pixels) are one slice and are not reoriented.

Deviation from the paper: the paper resamples to the training median spacing only; here the spacing
comes from each model.json, and ``None`` keeps the image's own pixel spacing (used for 2D photos).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .card.axes import validate_axes_code
from .normalization import normalize

logger = logging.getLogger(__name__)

__all__ = [
    "SliceGeometry",
    "SliceSource",
    "check_resampling",
    "choose_slice_axis",
    "image_to_slices",
    "reorient",
    "resample_in_plane",
    "validate_axes_code",
]

#: The largest spacing must be at least this many times every other spacing to be the slice axis.
ANISOTROPY_RATIO = 1.5


def reorient(image: sitk.Image, axes_code: str) -> sitk.Image:
    """Reorient a volume to ``axes_code`` by permuting and flipping its axes (no interpolation).

    Args:
        image: 2D or 3D image, scalar or vector pixels. Not modified.
        axes_code: target orientation, e.g. ``"LPS"`` (see :func:`validate_axes_code`).

    Returns:
        3D: an image with the same voxels rearranged, whose direction matrix is the closest to
        ``axes_code``; the physical position of every voxel is unchanged. ``image`` itself (no copy)
        when it already has that orientation, and for 2D images. Callers must not modify the result.

    Raises:
        ValueError: if ``axes_code`` is invalid or the image is neither 2D nor 3D.
    """
    code = validate_axes_code(axes_code)
    dim = image.GetDimension()
    if dim == 2:
        return image
    if dim != 3:
        raise ValueError(f"Cannot reorient a {dim}D image: expected a 2D or 3D image.")
    if sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection()) == code:
        return image  # DICOMOrient would only copy it
    return sitk.DICOMOrient(image, code)


def choose_slice_axis(image: sitk.Image) -> int:
    """Choose the axis along which a 3D volume is cut into 2D slices.

    Rule ``"largest-spacing-else-z"``: the axis of largest spacing if it is at least
    :data:`ANISOTROPY_RATIO` (1.5) times each other spacing; otherwise the axis whose direction
    column is closest to the patient z (superior-inferior) axis. Extension of the rule: a volume with
    exactly one axis of size 1 (a single slice) is sliced along that axis, whatever the spacing.
    Ties in the z rule prefer k, then j, then i.

    Args:
        image: 3D image; only its size, spacing and direction are used.

    Returns:
        Axis index in SimpleITK order: 0 = i (x), 1 = j (y), 2 = k (z). In the numpy array of the
        image that axis is ``2 - axis``.

    Raises:
        ValueError: if the image is not 3D.
    """
    if image.GetDimension() != 3:
        raise ValueError(
            f"choose_slice_axis needs a 3D image, got a {image.GetDimension()}D one (2D images are one slice)."
        )
    size = image.GetSize()
    singleton = [a for a in range(3) if size[a] == 1]
    if len(singleton) == 1:
        return singleton[0]
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    largest = int(np.argmax(spacing))
    others = [spacing[a] for a in range(3) if a != largest]
    if all(spacing[largest] >= ANISOTROPY_RATIO * s for s in others):
        return largest
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)  # columns = axis directions
    best, best_z = 2, -1.0
    for axis in (2, 1, 0):
        z = abs(direction[2, axis])
        if z > best_z + 1e-9:
            best, best_z = axis, z
    return best


@dataclass(frozen=True)
class SliceGeometry:
    """Everything needed to map slice-grid results back onto the original image grid.

    Attributes:
        dimension: 2 or 3, the original image dimension.
        size, spacing, origin, direction: the original image's geometry (SimpleITK conventions, mm).
        axes_code: the orientation the volume was reoriented to (3D), or ``""`` (2D).
        slice_axis: slicing axis in SimpleITK order of the *reoriented* image (3D), or -1 (2D).
        permutation: numpy axis order that turns the reoriented image array (k, j, i) into (S, H, W).
        reoriented_size, reoriented_spacing, reoriented_origin, reoriented_direction: geometry of
            the reoriented image (3D; equal to the original for 2D).
        in_plane_shape: (h, w) of each slice on the reoriented grid, before resampling.
        in_plane_spacing: (row_mm, col_mm) of the reoriented slices, before resampling.
        slice_shape: (H, W) of the slices after in-plane resampling.
        slice_spacing: (row_mm, col_mm) after resampling.
        num_slices: S.
    """

    dimension: int
    size: tuple
    spacing: tuple
    origin: tuple
    direction: tuple
    axes_code: str
    slice_axis: int
    permutation: tuple
    reoriented_size: tuple
    reoriented_spacing: tuple
    reoriented_origin: tuple
    reoriented_direction: tuple
    in_plane_shape: tuple
    in_plane_spacing: tuple
    slice_shape: tuple
    slice_spacing: tuple
    num_slices: int

    @property
    def resampled(self) -> bool:
        """True when the slices were resampled in-plane (their grid differs from the image's)."""
        return tuple(self.slice_shape) != tuple(self.in_plane_shape) or not np.allclose(
            self.slice_spacing, self.in_plane_spacing, rtol=1e-6, atol=0
        )

    def copy_geometry_to(self, image: sitk.Image) -> sitk.Image:
        """Set the original spacing, origin and direction on ``image`` (same size required); returns it."""
        if tuple(image.GetSize()) != tuple(self.size):
            raise ValueError(f"Image size {image.GetSize()} differs from the original size {self.size}.")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


#: Limits of the in-plane resampling that :func:`check_resampling` accepts.
MIN_SLICE_PIXELS = 8
MAX_SLICE_PIXELS = 8192
MAX_RESAMPLING_FACTOR = 32.0


def check_resampling(image: sitk.Image, target_spacing: Sequence[float] | None) -> None:
    """Refuse images whose spacing is invalid or implausible for resampling to ``target_spacing``.

    A spacing in the wrong unit (metres instead of mm) or a header without spacing would otherwise give
    slices of 1 x 1 pixel (all background) or of many thousand pixels a side (tens of GB).

    Args:
        image: 2D or 3D image (only size, spacing and direction are used).
        target_spacing: the model's (row_mm, col_mm), or None (no resampling: only validity is checked).

    Raises:
        ValueError: a spacing that is zero, negative or not finite; or in-plane resampling that would
            make a slice side below :data:`MIN_SLICE_PIXELS` (from a larger one, shrunk over 2x) or above
            :data:`MAX_SLICE_PIXELS` pixels, or change a side by more than :data:`MAX_RESAMPLING_FACTOR`.
    """
    spacing = tuple(float(s) for s in image.GetSpacing())
    for axis, s in enumerate(spacing):
        if not np.isfinite(s) or s <= 0:
            raise ValueError(
                f"The image has an invalid spacing {spacing} mm: axis {axis} is {s} (zero, negative or not "
                "finite). Fix the spacing in the image header."
            )
    target = _check_target_spacing(target_spacing)
    if image.GetDimension() == 3:
        rest = [a for a in (0, 1, 2) if a != choose_slice_axis(image)]
    elif image.GetDimension() == 2:
        rest = [0, 1]
    else:
        return
    size = image.GetSize()
    for a in rest:
        for t in target:
            if t is None:
                continue
            factor = spacing[a] / float(t)
            new = max(1, int(round(size[a] * factor)))
            # A small image shrunk a little is fine; a usable slice shrunk to a few pixels is not.
            too_small = new < MIN_SLICE_PIXELS <= size[a] and factor < 0.5
            too_big = new > MAX_SLICE_PIXELS and new > size[a]
            if too_small or too_big or not 1 / MAX_RESAMPLING_FACTOR <= factor <= MAX_RESAMPLING_FACTOR:
                in_plane = " x ".join(f"{spacing[b]:g}" for b in rest)
                raise ValueError(
                    f"Implausible image spacing {in_plane} mm (in-plane): resampling to the model's "
                    f"{float(t):g} mm spacing would turn {size[a]} pixels into {new} (factor {factor:.3g}). "
                    "The spacing is probably wrong (e.g. metres instead of mm, or a header without "
                    "spacing); fix the spacing in the image header."
                )


def _in_plane_axes(slice_axis: int) -> tuple[int, int]:
    """SimpleITK axes of (H, W) for a slice axis: H is the higher-index in-plane axis."""
    rest = [a for a in (0, 1, 2) if a != slice_axis]
    return rest[1], rest[0]


def _resample_grid(size, spacing, target):
    """New size and spacing along one axis for edge-aligned resampling; target None keeps spacing."""
    if target is None:
        return size, spacing
    target = float(target)
    if not np.isfinite(target) or target <= 0:
        raise ValueError(f"target_spacing values must be positive numbers in mm, got {target!r}.")
    new_size = max(1, int(round(size * spacing / target)))
    return new_size, target


def _check_target_spacing(target_spacing) -> tuple:
    if target_spacing is None:
        return (None, None)
    if len(target_spacing) != 2:
        raise ValueError(f"target_spacing must be (row_mm, col_mm) or None, got {target_spacing!r}.")
    return tuple(None if t is None else float(t) for t in target_spacing)


def image_to_slices(
    image: sitk.Image, target_spacing: Sequence[float] | None, axes_code: str, *, is_label: bool = False
) -> tuple[np.ndarray, SliceGeometry]:
    """Cut an image into 2D slices resampled in-plane to ``target_spacing``.

    Steps: reorient (3D) to ``axes_code``; choose the slice axis (:func:`choose_slice_axis`); resample
    every slice in-plane (linear for images, nearest neighbour for labels; the slice axis is never
    interpolated); stack as slices.

    Args:
        image: 2D or 3D SimpleITK image. Images may have vector pixels (e.g. RGB); labels must be
            scalar with integer values in 0..255.
        target_spacing: (row_mm, col_mm) of the output slices, or None to keep the image's own
            in-plane spacing (no resampling). Either entry may also be None.
        axes_code: orientation code to reorient 3D volumes to, e.g. ``"LPS"``.
        is_label: treat the image as a labelmap (nearest neighbour, uint8 output).

    Returns:
        ``(slices, geometry)``. Images: float32 ``(S, C, H, W)``, C = number of pixel components,
        intensities unchanged (not normalised). Labels: uint8 ``(S, H, W)``. ``geometry`` is a
        :class:`SliceGeometry` for :func:`.stacking.slices_to_image` /
        :func:`.stacking.label_slices_to_image`.

    Raises:
        ValueError: if the image is not 2D/3D, the axes code or spacing is invalid, or a label image
            has vector pixels or values outside 0..255.
    """
    plan = _SlicePlan(image, target_spacing, axes_code, is_label=is_label)
    work, dim = plan.work, plan.dim
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    if is_label:
        work = sitk.Cast(work, sitk.sitkUInt8)
    else:
        work = sitk.Cast(work, sitk.sitkFloat32 if plan.ncomp == 1 else sitk.sitkVectorFloat32)
    spacing, new_size, new_spacing = plan.spacing, plan.new_size, plan.new_spacing
    if plan.geometry.resampled:
        direction = np.asarray(work.GetDirection(), dtype=float).reshape(dim, dim)
        shift = np.zeros(dim)
        for a in (plan.h_axis, plan.w_axis):
            shift[a] = (new_spacing[a] - spacing[a]) / 2.0  # keep the outer edge of the first pixel
        new_origin = np.asarray(work.GetOrigin(), dtype=float) + direction @ shift
        resampler = sitk.ResampleImageFilter()
        resampler.SetSize([int(s) for s in new_size])
        resampler.SetOutputSpacing([float(s) for s in new_spacing])
        resampler.SetOutputOrigin(new_origin.tolist())
        resampler.SetOutputDirection(work.GetDirection())
        resampler.SetInterpolator(interpolator)
        resampler.SetDefaultPixelValue(0)
        resampler.SetUseNearestNeighborExtrapolator(True)
        resampler.SetOutputPixelType(work.GetPixelID())
        work = resampler.Execute(work)

    arr = sitk.GetArrayFromImage(work)  # (k, j, i[, C]) or (j, i[, C])
    spatial = plan.to_slice_order(arr)
    if is_label:
        slices = np.ascontiguousarray(spatial, dtype=np.uint8)
    elif spatial.ndim == 3:
        slices = np.ascontiguousarray(spatial[:, None], dtype=np.float32)
    else:
        slices = np.ascontiguousarray(np.moveaxis(spatial, -1, 1), dtype=np.float32)
    geometry = plan.geometry
    logger.debug(
        "image_to_slices: size %s -> %d slices of %s (axis %d, %s), spacing %s -> %s",
        image.GetSize(),
        geometry.num_slices,
        geometry.slice_shape,
        geometry.slice_axis,
        geometry.axes_code,
        geometry.in_plane_spacing,
        geometry.slice_spacing,
    )
    return slices, geometry


class _SlicePlan:
    """The decisions shared by :func:`image_to_slices` and :class:`SliceSource`: reorientation, slice
    axis, in-plane grid and the resulting :class:`SliceGeometry`. ``work`` is the reoriented image in its
    own pixel type (the input itself when it already has the target orientation: no copy)."""

    def __init__(self, image: sitk.Image, target_spacing, axes_code: str, *, is_label: bool = False):
        dim = image.GetDimension()
        if dim not in (2, 3):
            raise ValueError(
                f"Expected a 2D or 3D image, got a {dim}D image of size {image.GetSize()}. "
                "For 4D (time series) images, extract one frame first."
            )
        target = _check_target_spacing(target_spacing)
        self.ncomp = image.GetNumberOfComponentsPerPixel()
        if is_label:
            if self.ncomp != 1:
                raise ValueError(f"A labelmap must have scalar pixels, got {self.ncomp} components per pixel.")
            arr = sitk.GetArrayViewFromImage(image)
            if arr.size and (arr.min() < 0 or arr.max() > 255):
                raise ValueError(
                    f"Label values must lie in 0..255, got {arr.min()}..{arr.max()}; is this an intensity image?"
                )
        self.permutation: tuple[int, ...]
        if dim == 3:
            code = validate_axes_code(axes_code)
            work = reorient(image, code)
            slice_axis = choose_slice_axis(work)
            h_axis, w_axis = _in_plane_axes(slice_axis)
            self.permutation = (2 - slice_axis, 2 - h_axis, 2 - w_axis)
        else:
            work, code, slice_axis = image, "", -1
            h_axis, w_axis = 1, 0
            self.permutation = (0, 1)  # (H, W); a leading S axis of length 1 is added
        size, spacing = list(work.GetSize()), list(work.GetSpacing())
        new_size, new_spacing = list(size), list(spacing)
        new_size[h_axis], new_spacing[h_axis] = _resample_grid(size[h_axis], spacing[h_axis], target[0])
        new_size[w_axis], new_spacing[w_axis] = _resample_grid(size[w_axis], spacing[w_axis], target[1])
        self.work, self.dim, self.h_axis, self.w_axis = work, dim, h_axis, w_axis
        self.size, self.spacing, self.new_size, self.new_spacing = size, spacing, new_size, new_spacing
        self.geometry = SliceGeometry(
            dimension=dim,
            size=tuple(image.GetSize()),
            spacing=tuple(image.GetSpacing()),
            origin=tuple(image.GetOrigin()),
            direction=tuple(image.GetDirection()),
            axes_code=code,
            slice_axis=slice_axis,
            permutation=self.permutation,
            reoriented_size=tuple(work.GetSize()),
            reoriented_spacing=tuple(work.GetSpacing()),
            reoriented_origin=tuple(work.GetOrigin()),
            reoriented_direction=tuple(work.GetDirection()),
            in_plane_shape=(size[h_axis], size[w_axis]),
            in_plane_spacing=(spacing[h_axis], spacing[w_axis]),
            slice_shape=(int(new_size[h_axis]), int(new_size[w_axis])),
            slice_spacing=(float(new_spacing[h_axis]), float(new_spacing[w_axis])),
            num_slices=1 if dim == 2 else int(size[slice_axis]),
        )

    def to_slice_order(self, arr: np.ndarray) -> np.ndarray:
        """A view of a (k, j, i[, C]) array of the reoriented grid (or (j, i[, C]) in 2D) as (S, H, W[, C])."""
        if self.dim == 2:
            return arr[None]
        return np.transpose(arr, self.permutation + ((3,) if arr.ndim == 4 else ()))


class SliceSource:
    """Normalised model-space slices of one image, made batch by batch (the streaming form of
    :func:`image_to_slices` followed by :func:`.normalization.normalize`).

    Only the reoriented input (no copy at all when the image already has the model's orientation) and
    one batch of float32 slices exist at a time, so inference memory does not grow with a float copy of
    the volume. Each slice is resampled in-plane on its own (2D linear interpolation on the same grid as
    :func:`image_to_slices`, which never interpolates along the slice axis) and z-score statistics are
    gathered over all resampled slices first, so ``source[a:b]`` equals
    ``normalize(image_to_slices(...)[0], scheme)[a:b]`` up to float32 round-off.

    Args:
        image: 2D or 3D SimpleITK image, scalar or vector pixels. Kept (not copied, never modified).
        target_spacing: (row_mm, col_mm) of the slices, or None (keep the image's spacing).
        axes_code: orientation 3D volumes are reoriented to, e.g. ``"LPS"``.
        normalization: model.json ``normalization`` scheme (see :func:`.normalization.normalize`).

    Attributes:
        geometry: the :class:`SliceGeometry` (as :func:`image_to_slices` returns it).

    Raises:
        ValueError: as :func:`image_to_slices` and :func:`.normalization.normalize` (e.g. a constant image).
    """

    def __init__(self, image: sitk.Image, target_spacing, axes_code: str, normalization: dict, statistics=None):
        self._plan = _SlicePlan(image, target_spacing, axes_code)
        self.geometry = self._plan.geometry
        self._normalization = normalization
        self._array = self._plan.to_slice_order(sitk.GetArrayViewFromImage(self._plan.work))  # a view
        # Pixel types float32 cannot hold exactly (e.g. float64 data offset by 1e12) are resampled and
        # normalised in float64; the slices handed out are float32 either way.
        wide = self._array.dtype in (np.float64, np.int32, np.uint32, np.int64, np.uint64)
        self._dtype = np.float64 if wide else np.float32
        self._statistics = None
        if (normalization or {}).get("type") == "zscore":
            # given statistics: those of the image this one was resampled from (no padding counted)
            self._statistics = statistics if statistics is not None else self._zscore_statistics()
            normalize(self._raw(0, 1), normalization, statistics=self._statistics)  # fail now if constant

    def __len__(self) -> int:
        return self.geometry.num_slices

    @property
    def statistics(self):
        """Per-channel z-score (mean, std) used, or None for other normalisations."""
        return self._statistics

    def __getitem__(self, index: slice) -> np.ndarray:
        """float32 (B, C, H, W) normalised slices for ``source[start:stop]``."""
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("SliceSource supports source[start:stop] only.")
        start, stop, _ = index.indices(len(self))
        return normalize(self._raw(start, stop), self._normalization, statistics=self._statistics)

    def _raw(self, start: int, stop: int) -> np.ndarray:
        """float32 or float64 (B, C, H, W) resampled, not normalised."""
        geo = self.geometry
        chunk = np.asarray(self._array[start:stop], dtype=self._dtype)  # (B, h, w[, C])
        if chunk.ndim == 3:
            chunk = chunk[..., None]
        if not geo.resampled:
            return np.ascontiguousarray(np.moveaxis(chunk, -1, 1))
        return resample_in_plane(np.moveaxis(chunk, -1, 1), geo, to_slice_grid=True)

    def _zscore_statistics(self, step: int = 4) -> list[tuple[float, float]]:
        """Per-channel (mean, std) over all resampled slices (Chan et al.'s pairwise combination, float64)."""
        count = 0
        mean: np.ndarray | None = None
        m2: np.ndarray | None = None
        for start in range(0, len(self), step):
            x = self._raw(start, min(len(self), start + step)).astype(np.float64)
            n = x.shape[0] * x.shape[2] * x.shape[3]
            chunk_mean = x.mean(axis=(0, 2, 3))
            chunk_m2 = ((x - chunk_mean[None, :, None, None]) ** 2).sum(axis=(0, 2, 3))
            if mean is None:
                count, mean, m2 = n, chunk_mean, chunk_m2
                continue
            delta = chunk_mean - mean
            total = count + n
            mean = mean + delta * n / total
            m2 = m2 + chunk_m2 + delta**2 * count * n / total
            count = total
        if mean is None or m2 is None:
            raise ValueError("A z-score normalisation needs at least one slice.")
        std = np.sqrt(m2 / count)
        return [(float(m), float(s)) for m, s in zip(mean, std)]


def resample_in_plane(stack: np.ndarray, geometry: SliceGeometry, *, to_slice_grid: bool) -> np.ndarray:
    """2D linear resampling of every slice of a (B, C, rows, cols) stack between the image's in-plane grid
    and the model's slice grid of ``geometry`` (either way), keeping the float dtype.

    Coordinates are in-plane mm from the first original pixel centre; the first slice-grid pixel centre
    lies at (t - s) / 2 (the outer edge of the first pixel is kept, as in :func:`image_to_slices`). Per
    slice this equals resampling the 3D volume, since the slice axis is never interpolated.

    Args:
        stack: float32 or float64 ``(B, C, rows, cols)``: (rows, cols) = ``geometry.in_plane_shape`` when
            ``to_slice_grid``, else ``geometry.slice_shape``.
        geometry: from :func:`image_to_slices`.
        to_slice_grid: True for image grid -> slice grid, False for the way back.

    Returns:
        A new ``(B, C, H, W)`` array of the same dtype on the other grid (``geometry.slice_shape`` when
        ``to_slice_grid``, else ``geometry.in_plane_shape``).
    """
    (sr, sc), (tr, tc) = geometry.in_plane_spacing, geometry.slice_spacing
    image_grid = ([float(sc), float(sr)], [0.0, 0.0])  # SimpleITK (x, y) = (col, row)
    slice_grid = ([float(tc), float(tr)], [(tc - sc) / 2.0, (tr - sr) / 2.0])
    (src_spacing, src_origin), (dst_spacing, dst_origin) = (
        (image_grid, slice_grid) if to_slice_grid else (slice_grid, image_grid)
    )
    h, w = geometry.slice_shape if to_slice_grid else geometry.in_plane_shape
    num, channels = stack.shape[:2]
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(w), int(h)])
    resampler.SetOutputSpacing(dst_spacing)
    resampler.SetOutputOrigin(dst_origin)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetUseNearestNeighborExtrapolator(True)
    out = np.empty((num, channels, h, w), dtype=stack.dtype)
    for b in range(num):
        src = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(stack[b], 0, -1)), isVector=True)
        src.SetSpacing(src_spacing)
        src.SetOrigin(src_origin)
        resampler.SetOutputPixelType(src.GetPixelID())
        out[b] = np.moveaxis(sitk.GetArrayFromImage(resampler.Execute(src)).reshape(h, w, channels), -1, 0)
    return out
