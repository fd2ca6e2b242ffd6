"""Training augmentations: the paper's spatial ones and the appearance changes between sites and devices.

Two presets of :class:`AugmentationParams`:

- ``PAPER`` (the default): rotation, flips, zoom and gamma with the probabilities of arXiv 2402.02286
  v4, Sec. 4.
- ``SITE``: the paper's, a wider zoom (0.5-2x, for other magnifications), and what differs between
  scanners, dermoscopes and clinics: per-channel gain and white balance, contrast, hue and saturation,
  blur, noise, lower resolution, the dermoscope's circular vignette and black corners and hair-like dark
  strokes (RGB), and a smooth multiplicative bias field (MRI).

Every random number comes from one ``torch.Generator`` in a fixed order, so that a resumed run and a
run under ``torchrun`` draw exactly the augmentations of an uninterrupted single-process run (the
reason these are written on torch tensors here rather than taken from an augmentation library, which
draws from its own random state). The appearance changes act on the patch after the spatial ones; for
RGB models they act on the photograph's [0, 1] colours (the ImageNet normalisation is undone and
redone), for MRI on the z-scored intensities shifted so that the darkest pixel is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..datasets import SliceData
from ..normalization import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "AugmentationParams",
    "PAPER",
    "SITE",
    "NO_AUGMENTATION",
    "PRESETS",
    "appearance",
    "hair_mask",
    "vignette_mask",
    "sample_batch",
    "epoch_indices",
]


@dataclass(frozen=True)
class AugmentationParams:
    """Probabilities and ranges of the augmentations.

    Attributes:
        p_rotation: probability of a rotation by an angle uniform in [-pi, pi).
        p_flip: probability of a horizontal flip, and (independently) of a vertical flip.
        p_zoom: probability of a zoom; factor uniform in ``zoom_range`` (> 1 magnifies).
        zoom_range: (min, max) zoom factor.
        p_gamma: probability of a gamma change of the intensities, gamma uniform in ``gamma_range``;
            applied per channel on the intensities rescaled to [0, 1] and mapped back to their range.
        gamma_range: (min, max) gamma.
        p_gain: probability of per-channel gains (white balance, uniform in ``gain_range`` per channel)
            times one brightness factor (uniform in ``brightness_range``).
        p_contrast: probability of a contrast factor (uniform in ``contrast_range``) about the mean.
        p_hue_saturation: probability of a hue rotation (uniform in +-``hue_turns`` of a full turn about
            the grey axis) and a saturation factor (uniform in ``saturation_range``); RGB only.
        p_blur: probability of a Gaussian blur, sigma uniform in ``blur_sigma_range`` pixels.
        p_noise: probability of additive Gaussian noise, sigma uniform in [0, ``noise_sigma``] (RGB: of
            the [0, 1] colour range; MRI: z-score units).
        p_low_resolution: probability of a down- and up-sampling by a factor uniform in
            ``low_resolution_range`` (area down, bilinear up).
        p_vignette: probability of a circular vignette with black corners (RGB only); the radius is
            uniform in ``vignette_radius_range`` times half the patch diagonal.
        p_hair: probability of 1 to ``hair_max`` dark strokes 1-2 pixels wide (RGB only).
        p_bias_field: probability of a multiplicative field exp(p(x, y)), p a polynomial of degree 2
            with coefficients uniform in +-``bias_field_coefficient`` (MRI only).
    """

    p_rotation: float = 0.2
    p_flip: float = 0.5
    p_zoom: float = 0.2
    zoom_range: tuple[float, float] = (0.7, 1.4)
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    p_gain: float = 0.0
    gain_range: tuple[float, float] = (0.8, 1.2)
    brightness_range: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.0
    contrast_range: tuple[float, float] = (0.7, 1.3)
    p_hue_saturation: float = 0.0
    hue_turns: float = 0.05
    saturation_range: tuple[float, float] = (0.6, 1.4)
    p_blur: float = 0.0
    blur_sigma_range: tuple[float, float] = (0.5, 1.5)
    p_noise: float = 0.0
    noise_sigma: float = 0.05
    p_low_resolution: float = 0.0
    low_resolution_range: tuple[float, float] = (1.0, 2.0)
    p_vignette: float = 0.0
    vignette_radius_range: tuple[float, float] = (0.6, 1.0)
    p_hair: float = 0.0
    hair_max: int = 6
    p_bias_field: float = 0.0
    bias_field_coefficient: float = 0.3

    @property
    def has_appearance(self) -> bool:
        """True when any augmentation beyond the paper's is switched on."""
        return any(
            getattr(self, f.name) > 0
            for f in fields(self)
            if f.name.startswith("p_") and f.name not in ("p_rotation", "p_flip", "p_zoom", "p_gamma")
        )

    @classmethod
    def from_dict(cls, values: dict) -> AugmentationParams:
        """The inverse of ``dataclasses.asdict`` (lists back to tuples; unknown keys are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown augmentation setting(s) {unknown}; known: {sorted(known)}")
        settings: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**settings)


PAPER = AugmentationParams()
SITE = AugmentationParams(
    p_zoom=0.3,
    zoom_range=(0.5, 2.0),
    p_gain=0.5,
    p_contrast=0.3,
    p_hue_saturation=0.3,
    p_blur=0.2,
    p_noise=0.15,
    p_low_resolution=0.15,
    p_vignette=0.25,
    p_hair=0.2,
    p_bias_field=0.3,
)
NO_AUGMENTATION = AugmentationParams(0.0, 0.0, 0.0, (1.0, 1.0), 0.0, (1.0, 1.0))
#: Named presets (``train --augmentation NAME``).
PRESETS = {"paper": PAPER, "site": SITE}


def _uniform(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))


def vignette_mask(size: int, radius: float, softness: float = 0.05) -> torch.Tensor:
    """A (size, size) float32 mask: 1 inside a centred circle, 0 outside, a linear edge between.

    Args:
        size: side in pixels.
        radius: circle radius as a fraction of half the patch diagonal (1.0 touches the corners).
        softness: width of the edge, same unit.
    """
    c = (size - 1) / 2.0
    q = torch.arange(size, dtype=torch.float32) - c
    r = torch.sqrt(q[:, None] ** 2 + q[None, :] ** 2) / max(c * math.sqrt(2.0), 1e-6)
    return ((radius - r) / softness).clamp(0.0, 1.0)


def hair_mask(size: int, strokes: list[tuple[float, ...]]) -> torch.Tensor:
    """A (size, size) float32 mask of dark strokes: 1 within ``width / 2`` pixels of a stroke's curve,
    falling linearly to 0 over the next pixel.

    Args:
        size: side in pixels.
        strokes: each ``(y0, x0, y1, x1, cy, cx, width)``: a quadratic Bezier curve from (y0, x0) to
            (y1, x1) with control point (cy, cx), in pixels, ``width`` pixels wide.
    """
    q = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(q, q, indexing="ij")
    mask = torch.zeros(size, size)
    t = torch.linspace(0.0, 1.0, 3 * size)[:, None, None]
    for y0, x0, y1, x1, cy, cx, width in strokes:
        py = (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t**2 * y1
        px = (1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t**2 * x1
        d = torch.sqrt((yy - py) ** 2 + (xx - px) ** 2).amin(dim=0)
        mask = torch.maximum(mask, (width / 2.0 + 1.0 - d).clamp(0.0, 1.0))
    return mask


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[0]
    y = F.pad(x[None], (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y[0]


def _hue_saturation(rgb: torch.Tensor, turns: float, saturation: float) -> torch.Tensor:
    grey = rgb.mean(dim=0, keepdim=True)
    chroma = rgb - grey
    # rotation about the grey axis (1, 1, 1) / sqrt(3) (Rodrigues' formula); chroma is orthogonal to it
    a = 2.0 * math.pi * turns
    axis = torch.full((3, 1, 1), 1.0 / math.sqrt(3.0), dtype=rgb.dtype)
    cross = torch.cross(axis.expand_as(chroma), chroma, dim=0)
    rotated = chroma * math.cos(a) + cross * math.sin(a)
    return grey + saturation * rotated


def appearance(x: torch.Tensor, gen: torch.Generator, aug: AugmentationParams, rgb: bool) -> torch.Tensor:
    """The site and device changes of ``aug`` applied to one normalised patch.

    Every decision is drawn whether it is used or not (a fixed number of draws per call), so the random
    stream does not depend on the outcomes.

    Args:
        x: (C, P, P) float32 normalised patch (ImageNet-normalised RGB when ``rgb``, else z-scores).
        gen: the generator of the run.
        aug: probabilities and ranges.
        rgb: the patch is an RGB photograph (colour, vignette and hair changes apply).

    Returns:
        a new (C, P, P) float32 tensor.
    """
    c, p = x.shape[0], x.shape[-1]
    r = [_uniform(gen) for _ in range(10)]
    gains = [_uniform(gen, *aug.gain_range) for _ in range(c)]
    brightness = _uniform(gen, *aug.brightness_range)
    contrast = _uniform(gen, *aug.contrast_range)
    hue, saturation = _uniform(gen, -aug.hue_turns, aug.hue_turns), _uniform(gen, *aug.saturation_range)
    sigma = _uniform(gen, *aug.blur_sigma_range)
    noise_sigma = _uniform(gen, 0.0, aug.noise_sigma)
    noise = torch.randn(x.shape, generator=gen)
    factor = _uniform(gen, *aug.low_resolution_range)
    radius = _uniform(gen, *aug.vignette_radius_range)
    n_hair = 1 + int(_uniform(gen) * aug.hair_max * 0.999)
    strokes = [
        tuple(_uniform(gen, 0, p - 1) for _ in range(6)) + (_uniform(gen, 1.0, 2.0),)
        for _ in range(max(aug.hair_max, 1))
    ][:n_hair]
    hair_colour = _uniform(gen, 0.02, 0.25)
    coefficients = [_uniform(gen, -aug.bias_field_coefficient, aug.bias_field_coefficient) for _ in range(5)]

    if rgb:
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(3, 1, 1)
        y = x * std + mean  # the photograph's [0, 1] colours
        floor = 0.0
    else:
        floor = float(x.min())
        y = x - floor  # darkest pixel at 0, so that gains and fields scale the signal, not the offset
    if r[0] < aug.p_gain:
        y = y * brightness * torch.tensor(gains, dtype=x.dtype).view(c, 1, 1)
    if r[1] < aug.p_contrast:
        m = y.mean()
        y = (y - m) * contrast + m
    if rgb and r[2] < aug.p_hue_saturation:
        y = _hue_saturation(y, hue, saturation)
    if not rgb and r[3] < aug.p_bias_field:
        q = torch.linspace(-1.0, 1.0, p, dtype=x.dtype)
        yy, xx = torch.meshgrid(q, q, indexing="ij")
        a = coefficients
        y = y * torch.exp(a[0] * yy + a[1] * xx + a[2] * yy * xx + a[3] * yy**2 + a[4] * xx**2)
    if r[4] < aug.p_low_resolution and factor > 1.01:
        small = max(4, int(round(p / factor)))
        y = F.interpolate(
            F.interpolate(y[None], size=(small, small), mode="area"), size=(p, p), mode="bilinear", align_corners=False
        )[0]
    if r[5] < aug.p_blur:
        y = _gaussian_blur(y, sigma)
    if rgb and r[6] < aug.p_hair:
        h = hair_mask(p, strokes)
        y = y * (1 - h) + hair_colour * h
    if rgb and r[7] < aug.p_vignette:
        y = y * vignette_mask(p, radius)
    if r[8] < aug.p_noise:
        y = y + noise_sigma * noise
    if rgb:
        return ((y.clamp(0.0, 1.0) - mean) / std).to(torch.float32).contiguous()
    return (y + floor).to(torch.float32).contiguous()


# --------------------------------------------------------------------------------------------------
# crops and batches


def _crop_padded(array: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    """Crop (..., size, size) at (top, left) of the last two axes; outside the array reads 0."""
    h, w = array.shape[-2:]
    out = array.new_zeros((*array.shape[:-2], size, size))
    y0, y1 = max(top, 0), min(top + size, h)
    x0, x1 = max(left, 0), min(left + size, w)
    if y1 > y0 and x1 > x0:
        out[..., y0 - top : y1 - top, x0 - left : x1 - left] = array[..., y0:y1, x0:x1]
    return out


def _sample_patch(
    image: np.ndarray,
    label: np.ndarray,
    patch_size: int,
    gen: torch.Generator,
    aug: AugmentationParams,
    rgb: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented random crop: image (C, P, P) float32, label (P, P) int64."""
    img = torch.from_numpy(image)
    lab = torch.from_numpy(label)
    h, w = lab.shape
    # The crop of the zero-padded slice (pad first, to at least the patch size, centred).
    top = int(torch.randint(0, max(h, patch_size) - patch_size + 1, (), generator=gen)) - (max(h, patch_size) - h) // 2
    left = int(torch.randint(0, max(w, patch_size) - patch_size + 1, (), generator=gen)) - (max(w, patch_size) - w) // 2
    # Draw every decision, used or not, so that the random stream does not depend on the outcomes.
    r_rot, angle = _uniform(gen), _uniform(gen, -math.pi, math.pi)
    r_zoom, zoom = _uniform(gen), _uniform(gen, *aug.zoom_range)
    r_hflip, r_vflip = _uniform(gen), _uniform(gen)
    r_gamma, gammas = _uniform(gen), [_uniform(gen, *aug.gamma_range) for _ in range(img.shape[0])]
    rotate, scale = r_rot < aug.p_rotation, r_zoom < aug.p_zoom
    if rotate or scale:
        a = angle if rotate else 0.0
        z = zoom if scale else 1.0
        c = (patch_size - 1) / 2.0
        q = torch.arange(patch_size, dtype=torch.float64) - c
        qy, qx = torch.meshgrid(q, q, indexing="ij")
        cos, sin = math.cos(a) / z, math.sin(a) / z
        # Source pixel (row, col) of every output pixel: rotate and scale about the crop centre.
        src_y = top + c + cos * qy - sin * qx
        src_x = left + c + sin * qy + cos * qx
        grid = torch.stack([src_x * 2.0 / max(w - 1, 1) - 1.0, src_y * 2.0 / max(h - 1, 1) - 1.0], dim=-1).to(
            torch.float32
        )[None]
        img_out = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        lab_out = F.grid_sample(
            lab[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=True
        )[0, 0]
        lab_out = lab_out.round().long()
    else:
        img_out = _crop_padded(img, top, left, patch_size)
        lab_out = _crop_padded(lab, top, left, patch_size).long()
    if r_hflip < aug.p_flip:
        img_out, lab_out = img_out.flip(-1), lab_out.flip(-1)
    if r_vflip < aug.p_flip:
        img_out, lab_out = img_out.flip(-2), lab_out.flip(-2)
    if r_gamma < aug.p_gamma:
        img_out = img_out.clone()
        for ch, gamma in enumerate(gammas):
            x = img_out[ch]
            lo, hi = x.min(), x.max()
            span = hi - lo
            if float(span) > 1e-8:
                img_out[ch] = ((x - lo) / span).clamp_(0, 1).pow_(gamma) * span + lo
    if aug.has_appearance:
        img_out = appearance(img_out, gen, aug, rgb)
    return img_out.contiguous(), lab_out.contiguous()


def sample_batch(
    slices: SliceData,
    indices: Sequence[int],
    patch_size: int,
    gen: torch.Generator,
    augmentation: AugmentationParams = PAPER,
    rgb: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random augmented crops of the given slices.

    Args:
        slices: the cached training slices.
        indices: one slice index per batch element.
        patch_size: P, the crop size in pixels (slices smaller than P are zero-padded first).
        gen: the generator all random decisions are drawn from (in a fixed order).
        augmentation: probabilities and ranges (:mod:`augmentation`).
        rgb: the slices are ImageNet-normalised RGB photographs (for the colour augmentations).

    Returns:
        ``(images, labels)``: float32 (B, C, P, P) normalised intensities and int64 (B, P, P) labels.
    """
    pairs = [_sample_patch(slices.images[i], slices.labels[i], patch_size, gen, augmentation, rgb) for i in indices]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def epoch_indices(num_slices: int, count: int, gen: torch.Generator) -> list[int]:
    """``count`` slice indices: shuffled passes over all slices, a new permutation per pass."""
    out: list[int] = []
    while len(out) < count:
        out.extend(torch.randperm(num_slices, generator=gen).tolist())
    return out[:count]
