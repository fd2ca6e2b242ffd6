"""Sliding-window prediction of 2D slices: Gaussian-weighted windows, flip averaging, memory back-off.

Recipe of arXiv 2402.02286 v4, Sec. 4 (sliding window with overlap 0.5 and Gaussian weighting, as
nnU-Net); probabilities are accumulated on the CPU batch by batch. Out of memory: the slice batch is
halved and retried; at one slice the work moves to the CPU with one warning.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from ..devices import default_batch_size

__all__ = [
    "gaussian_importance_map",
    "sliding_window_starts",
    "predict_slices",
    "BatchPredictor",
    "iter_probabilities",
    "ProgressCallback",
]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """Gaussian weights for blending overlapping windows (nnU-Net style).

    Args:
        patch_size: (H, W) in pixels.
        sigma_scale: sigma as a fraction of the patch size.

    Returns:
        float32 (H, W), 1 at the centre, strictly positive (at least 1e-6).
    """
    axes = []
    for n in patch_size:
        c, s = (n - 1) / 2.0, max(n * sigma_scale, 1e-6)
        axes.append(np.exp(-0.5 * ((np.arange(n) - c) / s) ** 2))
    g = np.outer(axes[0], axes[1])
    g /= g.max()
    return np.maximum(g, 1e-6).astype(np.float32)


def sliding_window_starts(size: int, patch: int, overlap: float = 0.5) -> list[int]:
    """Start offsets of windows of length ``patch`` covering ``size`` (>= patch) with the given overlap.

    The windows are evenly spaced from 0 to ``size - patch``; their step is at most
    ``patch * (1 - overlap)``.
    """
    if size <= patch:
        return [0]
    target_step = max(1.0, patch * (1.0 - overlap))
    n = int(math.ceil((size - patch) / target_step)) + 1
    step = (size - patch) / (n - 1)
    return [int(round(i * step)) for i in range(n)]


def is_oom(error: BaseException) -> bool:
    """True for an out-of-memory error of the device (CUDA's OutOfMemoryError, or a RuntimeError saying so)."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


class BatchPredictor:
    """Predicts probabilities for batches of slices, with OOM back-off and CPU fallback.

    ``patch_size`` is the sliding window (H, W). With ``whole_slice``, a slice is instead padded to
    the next multiple of 32 (and at least ``smallest_window``, default ``patch_size``: the model's
    training patch, as the Predictor passes it) and predicted in one window, unless it is larger than ``largest_slice``
    (H, W), the largest the model was validated at (then the sliding window is used). ``flips`` is
    1, 2 or 4 (:data:`..card.modes.FLIPS`); ``tta`` True means 4, False 1. ``on_pass``, when set, is called
    as ``on_pass(done, total)`` after every network pass (one window, one flip) of a batch.
    """

    def __init__(
        self,
        network,
        patch_size,
        num_classes,
        tta,
        activation,
        device,
        overlap,
        whole_slice: bool = False,
        largest_slice=None,
        smallest_window=None,
    ):
        import torch

        from ..card.modes import FLIPS

        self.torch = torch
        self.network = network
        self.patch = (int(patch_size[0]), int(patch_size[1]))
        self.num_classes = int(num_classes)
        flips = tta if isinstance(tta, int) and not isinstance(tta, bool) else (4 if tta else 1)
        self.flips = FLIPS[flips]
        self.activation = activation
        self.device = torch.device(device)
        self.overlap = overlap
        self.whole_slice = bool(whole_slice)
        self.largest_slice = tuple(largest_slice) if largest_slice else None
        self.smallest_window = tuple(int(v) for v in (smallest_window or self.patch))
        self.gauss_cpu = torch.from_numpy(gaussian_importance_map(self.patch))
        self.gauss = self.gauss_cpu.to(self.device)
        self.on_pass: Callable[[int, int], None] | None = None
        self._passes = [0, 0]  # network passes done and planned in the current batch

    def one_window(self, h: int, w: int) -> tuple[int, int] | None:
        """The padded (H, W) of a slice predicted in one window, or None for sliding windows."""
        if not self.whole_slice:
            return None
        size = (max(-(-h // 32) * 32, self.smallest_window[0]), max(-(-w // 32) * 32, self.smallest_window[1]))
        if self.largest_slice and (size[0] > self.largest_slice[0] or size[1] > self.largest_slice[1]):
            return None
        return size

    def move_to_cpu(self):
        torch = self.torch
        self.device = torch.device("cpu")
        self.network.to(self.device)
        self.gauss = self.gauss_cpu
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """float32 (B, C, H, W) normalised slices -> float32 (B, K, H, W) probabilities."""
        torch = self.torch
        b, _, h, w = batch.shape
        whole = self.one_window(h, w)
        ph, pw = whole or self.patch
        pad_h, pad_w = max(0, ph - h), max(0, pw - w)
        top, left = pad_h // 2, pad_w // 2
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if pad_h or pad_w:
            x = torch.nn.functional.pad(x, (left, pad_w - left, top, pad_h - top))
        with torch.inference_mode():
            if whole is not None:
                self._passes = [0, len(self.flips)]
                acc = self._tta(x.to(self.device)).float().cpu()
                return acc[:, :, top : top + h, left : left + w].numpy()
            hp, wp = x.shape[2:]
            windows = len(sliding_window_starts(hp, ph, self.overlap)) * len(
                sliding_window_starts(wp, pw, self.overlap)
            )
            self._passes = [0, windows * len(self.flips)]
            acc = torch.zeros((b, self.num_classes, hp, wp), dtype=torch.float32)
            weight = torch.zeros((hp, wp), dtype=torch.float32)
            for y0 in sliding_window_starts(hp, ph, self.overlap):
                for x0 in sliding_window_starts(wp, pw, self.overlap):
                    crop = x[:, :, y0 : y0 + ph, x0 : x0 + pw].to(self.device)
                    prob = self._tta(crop) * self.gauss
                    acc[:, :, y0 : y0 + ph, x0 : x0 + pw] += prob.float().cpu()
                    weight[y0 : y0 + ph, x0 : x0 + pw] += self.gauss_cpu
            acc /= weight
        return acc[:, :, top : top + h, left : left + w].numpy()

    def _tta(self, crop):
        """Mean probabilities over the flips, one forward pass per flip (a quarter of the activation
        memory of one pass over all flips, and no slower on a CPU)."""
        torch = self.torch
        expected = (crop.shape[0], self.num_classes, *crop.shape[2:])
        total = None
        for f in self.flips:
            logits = self.network(crop.flip(f) if f else crop)
            if isinstance(logits, (list, tuple)):  # a network left in train mode returns all heads, fused first
                logits = logits[0]
            if tuple(logits.shape) != expected:
                raise ValueError(
                    f"The network returned logits of shape {tuple(logits.shape)}, expected {expected}: the "
                    "model package's num_classes or patch size does not match the network."
                )
            logits = logits.float()
            prob = torch.sigmoid(logits) if self.activation == "sigmoid" else torch.softmax(logits, dim=1)
            prob = prob.flip(f) if f else prob
            total = prob if total is None else total.add_(prob)
            if self.on_pass is not None:
                self._passes[0] += 1
                self.on_pass(self._passes[0], max(self._passes))
        return total.div_(len(self.flips))


def iter_probabilities(
    predictor: BatchPredictor,
    slices,
    batch_size: int,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
) -> Iterator[tuple[int, np.ndarray] | None]:
    """Yield ``(start, probabilities)`` per batch, or a single ``None`` when cancelled.

    ``slices`` is a float32 (S, C, H, W) array or a :class:`~..slicing.SliceSource` (anything with
    ``len`` and ``slices[start:stop]``)."""
    total = len(slices)
    batch_size = max(1, int(batch_size))
    start = 0
    if progress is not None:
        progress(0, total)
    while start < total:
        if cancel is not None and cancel.is_set():
            logger.info("Inference cancelled after %d of %d slices.", start, total)
            yield None
            return
        stop = min(total, start + batch_size)
        try:
            probabilities = predictor(slices[start:stop])
        except Exception as e:
            if not is_oom(e):
                raise
            if batch_size > 1:
                batch_size = max(1, batch_size // 2)
                logger.warning(
                    "Out of memory on %s; retrying with %d slice(s) per batch.", predictor.device, batch_size
                )
                _empty_cache(predictor)
                continue
            if predictor.device.type != "cpu":
                logger.warning(
                    "Out of memory on %s even with one slice per batch; continuing on the CPU (slower).",
                    predictor.device,
                )
                predictor.move_to_cpu()
                continue
            raise RuntimeError(
                "Out of memory on the CPU with one slice per batch: free memory or use a smaller model patch size."
            ) from e
        yield start, probabilities
        start = stop
        if progress is not None:
            progress(start, total)


def _empty_cache(predictor):
    torch = predictor.torch
    if predictor.device.type == "cuda":
        torch.cuda.empty_cache()


def predict_slices(
    network,
    slices: np.ndarray,
    patch_size: Sequence[int],
    num_classes: int,
    tta: bool = True,
    *,
    activation: str = "softmax",
    device="cpu",
    batch_size: int | None = None,
    overlap: float = 0.5,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> np.ndarray | None:
    """Sliding-window, flip-averaged probabilities for a stack of normalised slices.

    Args:
        network: ``torch.nn.Module`` mapping float32 (B, C, ph, pw) to logits (B, K, ph, pw); it is
            moved to ``device`` (and to the CPU on the out-of-memory fallback).
        slices: float32 (S, C, H, W) normalised slices, any H, W (smaller ones are zero-padded).
        patch_size: (ph, pw) window size, multiples of 32 for Attention-Mamba.
        num_classes: K, network output channels.
        tta: average over the 4 flips (none, horizontal, vertical, both).
        activation: ``"softmax"`` (over K) or ``"sigmoid"`` (per channel).
        device: torch device or string (no probing here; see :func:`select_device`).
        batch_size: slices per forward pass (one pass per flip); halved on out-of-memory; default
            :func:`default_batch_size` of ``device``.
        overlap: window overlap fraction (0.5 as in the paper).
        progress: ``progress(done_slices, total_slices)``, called at start and after every batch.
        cancel: checked between batches.

    Returns:
        float32 (S, K, H, W) probabilities (blended on the CPU), or None when cancelled.

    Raises:
        ValueError: wrong slice shape or network output shape.
        RuntimeError: out of memory even on the CPU with one slice.
    """
    import torch

    slices = np.asarray(slices)
    if slices.ndim != 4:
        raise ValueError(f"slices must be (S, C, H, W), got shape {slices.shape}.")
    device = torch.device(device)
    batch_size = default_batch_size(device) if batch_size is None else batch_size
    network.to(device)
    network.eval()
    predictor = BatchPredictor(network, patch_size, num_classes, tta, activation, device, overlap)
    out = np.empty((slices.shape[0], num_classes, *slices.shape[2:]), dtype=np.float32)
    for item in iter_probabilities(predictor, slices, batch_size, progress, cancel):
        if item is None:
            return None
        start, probabilities = item
        out[start : start + probabilities.shape[0]] = probabilities
    return out
