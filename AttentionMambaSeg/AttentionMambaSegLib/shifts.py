"""The shift suite: fixed, seeded changes of the kind that differ between sites, scanners and devices.

A model chosen on its own dataset's validation split is scored there on images from the same clinic and
device. The shift suite applies changes that another site would bring to the same validation cases,
so that a model card can state how much the figure falls (``evaluate --shift-suite``):

- dermoscopy (RGB photographs): ``colour_cast`` (a warm or cool light and a brightness change),
  ``scale`` (another magnification: 0.6-0.75x or 1.35-1.6x, mirrored at the border), ``vignette``
  (a circular field of view with black corners), ``blur`` (a Gaussian of sigma 2-3 pixels);
- MRI: ``bias_field`` (a smooth multiplicative field, exp of a degree-2 polynomial), ``contrast``
  (a gamma of 0.6-0.75 or 1.4-1.7), ``noise`` (Rician, sigma 4-6 % of the 99th intensity percentile),
  ``coarse`` (2x coarser in-plane resolution: averaged over 2 x 2 pixels, then linearly back to the grid).

Each shift draws its parameters from a generator seeded by the shift's name and the case id (CRC-32),
so the suite is the same on every machine and run. A shift returns new images on the input's grid
(spacing, origin, direction and pixel type kept) and never changes its inputs; only ``scale`` moves
the label, with the same mapping as the image (nearest neighbour).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

__all__ = [
    "Shift",
    "SUITES",
    "suite_for",
    "colour_cast",
    "zoom",
    "vignette",
    "gaussian_blur",
    "bias_field",
    "gamma_contrast",
    "rician_noise",
    "coarse_in_plane",
]


# --------------------------------------------------------------------------------------------------
# the changes, on arrays (known-answer testable)


def colour_cast(rgb: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    """Per-channel gains of an RGB photograph.

    Args:
        rgb: (H, W, 3) array, values in [0, 255].
        gains: factor per channel (R, G, B).

    Returns:
        (H, W, 3) float64, clipped to [0, 255].
    """
    return np.clip(rgb.astype(np.float64) * np.asarray(gains, dtype=np.float64), 0.0, 255.0)


def zoom(array: np.ndarray, factor: float, nearest: bool = False) -> np.ndarray:
    """Magnify the content of a 2D image about its centre, keeping its size (mirrored at the border).

    Args:
        array: (H, W) or (H, W, C) array.
        factor: > 1 magnifies (the centre fills the frame), < 1 shrinks (mirrored copies fill the border).
        nearest: nearest-neighbour interpolation (labels) instead of bilinear.

    Returns:
        float64 array of the input's shape.
    """
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    h, w = x.shape[-2:]
    # output pixel (i, j) reads the input at centre + (q - centre) / factor, in align_corners=True units
    qy = (torch.arange(h, dtype=torch.float64) - (h - 1) / 2) / factor / max((h - 1) / 2, 0.5)
    qx = (torch.arange(w, dtype=torch.float64) - (w - 1) / 2) / factor / max((w - 1) / 2, 0.5)
    gy, gx = torch.meshgrid(qy, qx, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None]
    y = F.grid_sample(
        x, grid, mode="nearest" if nearest else "bilinear", padding_mode="reflection", align_corners=True
    )[0]
    return (y[0] if array.ndim == 2 else y.permute(1, 2, 0)).numpy()


def vignette(rgb: np.ndarray, radius: float, softness: float = 0.04) -> np.ndarray:
    """A circular field of view: black outside a centred circle, a linear edge of ``softness``.

    Args:
        rgb: (H, W, C) array.
        radius: circle radius as a fraction of half the image diagonal (1 touches the corners).
        softness: edge width, same unit.

    Returns:
        (H, W, C) float64.
    """
    h, w = rgb.shape[:2]
    y = np.arange(h) - (h - 1) / 2
    x = np.arange(w) - (w - 1) / 2
    r = np.sqrt(y[:, None] ** 2 + x[None, :] ** 2) / max(math.hypot((h - 1) / 2, (w - 1) / 2), 1e-6)
    mask = np.clip((radius - r) / softness, 0.0, 1.0)
    return rgb.astype(np.float64) * mask[..., None]


def gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each channel of a 2D image, sigma in pixels (SimpleITK, edges replicated).

    Args:
        rgb: (H, W, C) array.
        sigma: standard deviation in pixels.

    Returns:
        (H, W, C) float64.
    """
    out = np.empty(rgb.shape, dtype=np.float64)
    for c in range(rgb.shape[2]):
        channel = sitk.GetImageFromArray(rgb[..., c].astype(np.float64))
        out[..., c] = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(channel, sigma))
    return out


def bias_field(volume: np.ndarray, coefficients: tuple[float, ...]) -> np.ndarray:
    """Multiply by exp(p), p a degree-2 polynomial of the array coordinates scaled to [-1, 1].

    Args:
        volume: (Z, Y, X) or (Y, X) array.
        coefficients: 5 numbers (y, x, y*x, y**2, x**2) for 2D, 9 for 3D (z, y, x, z*y, z*x, y*x, z**2,
            y**2, x**2).

    Returns:
        float64 array of the input's shape.

    Raises:
        ValueError: a wrong number of coefficients.
    """
    axes = np.meshgrid(*[np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in volume.shape], indexing="ij")
    terms = list(axes)
    terms += [axes[i] * axes[j] for i in range(len(axes)) for j in range(i + 1, len(axes))]
    terms += [a**2 for a in axes]
    if len(coefficients) != len(terms):
        raise ValueError(f"a {volume.ndim}D bias field takes {len(terms)} coefficients, got {len(coefficients)}")
    exponent = sum(c * t for c, t in zip(coefficients, terms))
    return volume.astype(np.float64) * np.exp(exponent)


def gamma_contrast(volume: np.ndarray, gamma: float) -> np.ndarray:
    """Gamma on the intensities rescaled to [0, 1] by their minimum and maximum, then mapped back.

    Returns:
        float64 array of the input's shape (a constant image is returned unchanged).
    """
    v = volume.astype(np.float64)
    lo, hi = float(v.min()), float(v.max())
    if hi - lo <= 0:
        return v
    return ((v - lo) / (hi - lo)) ** gamma * (hi - lo) + lo


def rician_noise(volume: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Rician noise of a magnitude image: |v + n1 + i n2|, n1, n2 Gaussian of ``sigma``.

    Returns:
        float64 array of the input's shape.
    """
    v = volume.astype(np.float64)
    n1 = rng.normal(0.0, sigma, v.shape)
    n2 = rng.normal(0.0, sigma, v.shape)
    return np.sqrt((v + n1) ** 2 + n2**2)


def coarse_in_plane(volume: np.ndarray, in_plane_axes: tuple[int, int], factor: int = 2) -> np.ndarray:
    """Lower the resolution along two axes: the mean of ``factor`` x ``factor`` pixels, then linear back.

    Args:
        volume: (Z, Y, X) or (Y, X) array.
        in_plane_axes: the two array axes to coarsen.
        factor: integer coarsening.

    Returns:
        float64 array of the input's shape.
    """
    v = np.moveaxis(volume.astype(np.float64), in_plane_axes, (-2, -1))
    lead = v.shape[:-2]
    h, w = v.shape[-2:]
    x = torch.from_numpy(np.ascontiguousarray(v.reshape(-1, 1, h, w)))
    small = F.avg_pool2d(x, factor, ceil_mode=True, count_include_pad=False)
    back = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return np.moveaxis(back.numpy().reshape(*lead, h, w), (-2, -1), in_plane_axes)


# --------------------------------------------------------------------------------------------------
# the suites, on SimpleITK images


@dataclass(frozen=True)
class Shift:
    """One named change of the suite.

    Attributes:
        name: short name (a column of the model card's ``shift_suite``).
        description: what it simulates, with its parameter ranges.
        change: ``change(image_array, label_array, spacing_zyx, rng) -> (image_array, label_array)`` on
            SimpleITK array order ((Z,) Y, X[, C]).
    """

    name: str
    description: str
    change: Callable[[np.ndarray, np.ndarray, tuple[float, ...], np.random.Generator], tuple[np.ndarray, np.ndarray]]

    def rng(self, case_id: str) -> np.random.Generator:
        """The generator of this shift for one case (seeded by CRC-32 of ``name:case_id``)."""
        return np.random.default_rng(zlib.crc32(f"{self.name}:{case_id}".encode()))

    def apply(self, image: sitk.Image, label: sitk.Image, case_id: str) -> tuple[sitk.Image, sitk.Image]:
        """The shifted image and label on the input's grid and pixel type; the inputs are not changed."""
        arr = sitk.GetArrayFromImage(image)
        lab = sitk.GetArrayFromImage(label)
        spacing_zyx = tuple(reversed(image.GetSpacing()))
        new_arr, new_lab = self.change(arr, lab, spacing_zyx, self.rng(case_id))
        return _like(image, new_arr), _like(label, new_lab)


def _like(reference: sitk.Image, array: np.ndarray) -> sitk.Image:
    """``array`` cast to the reference's pixel type (rounded and clipped for integers), its geometry copied."""
    dtype = sitk.GetArrayViewFromImage(reference).dtype
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = np.clip(np.rint(array), info.min, info.max)
    image = sitk.GetImageFromArray(array.astype(dtype), isVector=reference.GetNumberOfComponentsPerPixel() > 1)
    image.CopyInformation(reference)
    return image


def _colour_cast(arr, lab, spacing, rng):
    strength = rng.uniform(0.12, 0.2)
    warm = rng.random() < 0.5
    brightness = rng.uniform(0.85, 1.1)
    gains = (1 + strength, 1.0, 1 - strength) if warm else (1 - strength, 1.0, 1 + strength)
    return colour_cast(arr, tuple(g * brightness for g in gains)), lab


def _scale(arr, lab, spacing, rng):
    factor = rng.uniform(0.6, 0.75) if rng.random() < 0.5 else rng.uniform(1.35, 1.6)
    return zoom(arr, factor), zoom(lab, factor, nearest=True)


def _vignette(arr, lab, spacing, rng):
    return vignette(arr, rng.uniform(0.75, 0.9)), lab


def _blur(arr, lab, spacing, rng):
    return gaussian_blur(arr, rng.uniform(2.0, 3.0)), lab


def _bias_field(arr, lab, spacing, rng):
    terms = {2: 5, 3: 9}[arr.ndim]
    return bias_field(arr, tuple(rng.uniform(-0.3, 0.3, terms))), lab


def _contrast(arr, lab, spacing, rng):
    gamma = rng.uniform(0.6, 0.75) if rng.random() < 0.5 else rng.uniform(1.4, 1.7)
    return gamma_contrast(arr, gamma), lab


def _noise(arr, lab, spacing, rng):
    level = rng.uniform(0.04, 0.06) * float(np.percentile(arr, 99))
    return rician_noise(arr, level, rng), lab


def _coarse(arr, lab, spacing, rng):
    if arr.ndim == 2:
        return coarse_in_plane(arr, (0, 1)), lab
    # the slice axis: the largest spacing when clearly the largest (1.5x), else Z (array axis 0)
    order = np.argsort(spacing)
    slice_axis = int(order[-1]) if spacing[order[-1]] >= 1.5 * spacing[order[-2]] else 0
    return coarse_in_plane(arr, tuple(a for a in range(3) if a != slice_axis)), lab


#: The suite per kind of image.
SUITES: dict[str, tuple[Shift, ...]] = {
    "dermoscopy": (
        Shift("colour_cast", "warm or cool light: R and B gains 1 +- (0.12-0.2), brightness 0.85-1.1", _colour_cast),
        Shift("scale", "another magnification: content zoomed 0.6-0.75x or 1.35-1.6x, mirrored at the border", _scale),
        Shift("vignette", "circular field of view, black outside 0.75-0.9 of the half diagonal", _vignette),
        Shift("blur", "Gaussian blur, sigma 2-3 pixels", _blur),
    ),
    "mri": (
        Shift("bias_field", "smooth multiplicative field exp(p), p of degree 2, coefficients +-0.3", _bias_field),
        Shift("contrast", "gamma 0.6-0.75 or 1.4-1.7 on the min-max range", _contrast),
        Shift("noise", "Rician noise, sigma 4-6 % of the 99th intensity percentile", _noise),
        Shift("coarse", "2x coarser in-plane resolution (2 x 2 mean, linear back)", _coarse),
    ),
}


def suite_for(normalization: dict) -> tuple[str, tuple[Shift, ...]]:
    """The suite that fits a model's normalisation: ``rgb`` -> dermoscopy, ``zscore`` -> MRI.

    Raises:
        ValueError: no suite for the normalisation (CT, none).
    """
    kind = (normalization or {}).get("type")
    if kind == "rgb":
        return "dermoscopy", SUITES["dermoscopy"]
    if kind == "zscore":
        return "mri", SUITES["mri"]
    raise ValueError(
        f"no shift suite for normalisation {kind!r}: there are suites for RGB photographs (rgb) and MRI (zscore)"
    )
