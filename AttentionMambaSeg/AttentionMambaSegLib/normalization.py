"""Intensity normalisation shared by training and inference: the schemes of model.json ``normalization``.

nnU-Net's schemes: ``zscore`` (per case and channel), ``ct`` (clip to a Hounsfield window, then a fixed
mean and standard deviation), ``rgb`` (ImageNet statistics, for photographs) and ``none``. Slices come from
:mod:`.slicing` as float ``(S, C, H, W)``; :class:`.slicing.SliceSource` normalises batch by batch with the
statistics of the whole case.
"""

from __future__ import annotations

import numpy as np

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalize"]

#: ImageNet channel statistics used by the ``{"type": "rgb"}`` scheme (after division by 255).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(slices: np.ndarray, scheme: dict, statistics=None) -> np.ndarray:
    """Normalise intensities as the model was trained.

    Args:
        slices: float32 (or float64, computed exactly) ``(S, C, H, W)`` raw intensities of one case (all
            its slices, unless ``statistics`` are given).
        scheme: the ``normalization`` entry of model.json, one of:
            ``{"type": "zscore"}``: per case and channel, mean/std over the whole volume;
            ``{"type": "ct", "clip": [lo, hi], "mean": m, "std": s}``: clip (HU), then (x - m) / s;
            ``{"type": "rgb"}``: divide by 255, then subtract the ImageNet mean and divide by its std
            (C must be 3);
            ``{"type": "none"}``: unchanged (float32 copy).
        statistics: ``zscore`` only: per-channel (mean, std) of the whole case when ``slices`` is a
            part of it (see :class:`.slicing.SliceSource`); default: computed from ``slices``.

    Returns:
        float32 ``(S, C, H, W)``, a new array.

    Raises:
        ValueError: for an unknown scheme, missing fields, a constant image under ``zscore`` (its
            standard deviation is 0), or ``rgb`` with C != 3.
    """
    x = np.asarray(slices)
    x = x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)  # float64 stays exact
    if x.ndim != 4:
        raise ValueError(f"normalize expects (S, C, H, W) slices, got shape {x.shape}.")
    kind = (scheme or {}).get("type")
    if kind == "zscore":
        out = np.empty(x.shape, dtype=np.float32)
        for c in range(x.shape[1]):
            channel = x[:, c]
            if statistics is not None:
                mean, std = (float(v) for v in statistics[c])
            else:
                mean = float(channel.mean(dtype=np.float64))
                std = float(channel.std(dtype=np.float64))
            if not np.isfinite(std) or std < 1e-8:
                raise ValueError(
                    f"Cannot z-score normalise channel {c}: the image is constant (every voxel = {mean:g}). "
                    "Check that the right image was loaded."
                )
            out[:, c] = (channel - mean) / std
        return out
    if kind == "ct":
        try:
            lo, hi = (float(v) for v in scheme["clip"])
            mean, std = float(scheme["mean"]), float(scheme["std"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"CT normalisation needs 'clip': [lo, hi], 'mean' and 'std' numbers, got {scheme!r}."
            ) from e
        if std <= 0:
            raise ValueError(f"CT normalisation 'std' must be positive, got {std}.")
        return ((np.clip(x, lo, hi) - mean) / std).astype(np.float32)
    if kind == "rgb":
        if x.shape[1] != 3:
            raise ValueError(f"RGB normalisation needs 3 channels, got {x.shape[1]}.")
        rgb_mean = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
        rgb_std = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(1, 3, 1, 1)
        return ((x / 255.0 - rgb_mean) / rgb_std).astype(np.float32)
    if kind == "none":
        return x.astype(np.float32)  # a copy
    raise ValueError(
        f"Unknown normalisation scheme {scheme!r}: expected 'type' to be one of 'zscore', 'ct', 'rgb', 'none'."
    )
