"""Foreground crop: segment every slice of a stack inside the box a first pass found, not the whole slice.

A cine short-axis slice at 1 mm is about 340 x 400 pixels; the heart fills a fifth of it. The first
pass segments the central slice whole, at half the resolution and without flips (a quarter of the
work; on the ACDC validation slices its box lies within a few millimetres of the full-resolution
one); the box around its foreground, widened by the model's margin (millimetres) and at least the
training patch, is then the window of every slice.
A slice whose labels reach an edge of the box that is not an edge of the slice is segmented again
whole, so the crop never cuts a structure off. Used where model.json ``inference`` says
``"foreground_crop": true`` (:mod:`AttentionMambaSegLib.card.modes`).
"""

from __future__ import annotations

import logging

import numpy as np

from ..card.modes import FLIPS

__all__ = ["ForegroundCrop"]

logger = logging.getLogger(__name__)

#: A central slice with fewer foreground pixels than this gives no box.
MIN_FOREGROUND_PIXELS = 16
#: The first pass sees the central slice this many times coarser than the model's spacing.
FIRST_PASS_DOWNSAMPLE = 2.0


def _coarser(batch: np.ndarray, factor: float) -> np.ndarray:
    """float32 (B, C, H, W) slices ``factor`` times coarser (antialiased bilinear); as given for factor 1."""
    if factor == 1:
        return batch
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    return torch.nn.functional.interpolate(x, scale_factor=1.0 / factor, mode="bilinear", antialias=True).numpy()


class ForegroundCrop:
    """A box (row0, row1, col0, col1) on the model's slice grid, and the slices seen through it."""

    def __init__(self, box: tuple[int, int, int, int], slice_shape: tuple[int, int], sigmoid: bool):
        self.box = box
        self.slice_shape = slice_shape
        self.sigmoid = sigmoid
        self.redone = 0

    @classmethod
    def locate(
        cls,
        batches,
        slices,
        margin_mm: float,
        target_spacing,
        min_size=(32, 32),
        downsample: float = FIRST_PASS_DOWNSAMPLE,
    ) -> ForegroundCrop | None:
        """The box from a first pass on the central slice, or None (no foreground, or no gain).

        Args:
            batches: the run's :class:`~.sliding_window.BatchPredictor` (its flips are not used here).
            slices: a :class:`~AttentionMambaSegLib.slicing.SliceSource`.
            margin_mm: added on each side of the foreground, in millimetres.
            target_spacing: (row_mm, col_mm) of the slice grid, or None (1 mm a pixel).
            min_size: the smallest box (H, W) in pixels, e.g. the training patch.
            downsample: the first pass sees the slice this many times coarser (1: full resolution).
        """
        from .sliding_window import is_oom

        middle = len(slices) // 2
        flips, batches.flips = batches.flips, FLIPS[1]
        central = slices[middle : middle + 1]
        shape = central.shape[2:]
        try:
            probabilities = batches(_coarser(central, downsample))[0]
        except Exception as e:
            if not is_oom(e):
                raise
            logger.warning("Out of memory in the first pass of the foreground crop: every slice is segmented whole.")
            return None
        finally:
            batches.flips = flips
        sigmoid = probabilities.shape[0] == 1
        foreground = probabilities[0] > 0.5 if sigmoid else probabilities.argmax(axis=0) > 0
        scale = [n / m for n, m in zip(shape, foreground.shape)]
        if np.count_nonzero(foreground) * scale[0] * scale[1] < MIN_FOREGROUND_PIXELS:
            logger.info("No foreground on the central slice: every slice is segmented whole.")
            return None
        spacing = target_spacing or (1.0, 1.0)
        box = []
        for axis, (n, mm) in enumerate(zip(shape, spacing)):
            hits = np.flatnonzero(foreground.any(axis=1 - axis))
            margin = int(np.ceil(margin_mm / mm))
            first, last = int(np.floor(hits[0] * scale[axis])), int(np.ceil((hits[-1] + 1) * scale[axis]))
            lo, hi = max(0, first - margin), min(n, last + margin)
            size = min(n, max(-(-(hi - lo) // 32) * 32, min_size[axis]))  # a multiple of 32 where the slice allows
            lo = min(max(0, (lo + hi - size) // 2), n - size)
            box += [lo, lo + size]
        if (box[1] - box[0]) * (box[3] - box[2]) >= 0.8 * shape[0] * shape[1]:
            return None
        logger.info("Foreground crop: %d x %d of %d x %d pixels per slice", box[1] - box[0], box[3] - box[2], *shape)
        row0, row1, col0, col1 = (int(v) for v in box)
        return cls((row0, row1, col0, col1), shape, sigmoid)

    def view(self, slices) -> _CroppedSlices:
        """``slices`` seen through the box (``len`` and ``[start:stop]`` as a SliceSource)."""
        return _CroppedSlices(slices, self.box)

    def uncrop(self, probabilities: np.ndarray, start: int, batches, slices) -> np.ndarray:
        """Probabilities (B, K, h, w) of the box on the whole slice (B, K, H, W): background outside;
        slices whose labels reach an inner edge of the box are predicted again whole."""
        r0, r1, c0, c1 = self.box
        b, k = probabilities.shape[:2]
        full = np.zeros((b, k, *self.slice_shape), dtype=np.float32)
        if not self.sigmoid:
            full[:, 0] = 1.0
        full[:, :, r0:r1, c0:c1] = probabilities
        foreground = probabilities[:, 0] > 0.5 if self.sigmoid else probabilities.argmax(axis=1) > 0
        inner = [
            (r0 > 0, foreground[:, 0, :]),
            (r1 < self.slice_shape[0], foreground[:, -1, :]),
            (c0 > 0, foreground[:, :, 0]),
            (c1 < self.slice_shape[1], foreground[:, :, -1]),
        ]
        touches = np.zeros(b, dtype=bool)
        for is_inner, edge in inner:
            if is_inner:
                touches |= edge.any(axis=1)
        for i in np.flatnonzero(touches):
            logger.info("Slice %d: the labels reach the edge of the foreground crop; segmenting it whole.", start + i)
            full[i] = batches(slices[start + i : start + i + 1])[0]
            self.redone += 1
        return full


class _CroppedSlices:
    def __init__(self, slices, box):
        self.slices, self.box = slices, box

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, index: slice) -> np.ndarray:
        r0, r1, c0, c1 = self.box
        return self.slices[index][:, :, r0:r1, c0:c1]
