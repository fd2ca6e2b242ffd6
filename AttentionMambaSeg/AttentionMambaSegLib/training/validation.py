"""Validation during training: loss and Dice of the fused output on whole validation slices."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..datasets import SliceData
from ..losses import segmentation_loss

__all__ = ["validate"]


def _pad_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    dh, dw = h - x.shape[-2], w - x.shape[-1]
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def _validation_groups(slices: SliceData, patch_size: int, batch_size: int) -> list[tuple[list[int], int, int]]:
    """Batches of validation slices with the same padded size (multiples of 32, at least the patch)."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, lab in enumerate(slices.labels):
        h, w = lab.shape
        hp = max(patch_size, 32 * math.ceil(h / 32))
        wp = max(patch_size, 32 * math.ceil(w / 32))
        by_shape.setdefault((hp, wp), []).append(i)
    groups = []
    for (hp, wp), idx in sorted(by_shape.items()):
        for start in range(0, len(idx), batch_size):
            groups.append((idx[start : start + batch_size], hp, wp))
    return groups


@torch.no_grad()
def validate(
    network: torch.nn.Module,
    slices: SliceData,
    num_classes: int,
    patch_size: int,
    device: torch.device,
    batch_size: int = 4,
    bf16: bool = False,
    reduce: Callable[[list[float]], list[float]] | None = None,
) -> dict:
    """Loss and Dice of the fused output on whole validation slices (no augmentation, no TTA).

    Each slice is zero-padded (centred) to a multiple of 32 and at least ``patch_size``, predicted
    whole, and cropped back. Dice per class is pooled over all slices (sum of intersections over sum of
    sizes), 1 for a class absent from both prediction and reference.

    Args:
        network: the network (switched to eval mode here, restored after).
        slices: validation slices.
        num_classes: K (1 = sigmoid).
        patch_size: minimum padded size.
        device: where to run.
        batch_size: slices per forward pass.
        bf16: run the forward under bf16 autocast.
        reduce: sums the pooled counts over ranks (each rank validating its share of the slices);
            :func:`~AttentionMambaSegLib.distributed.all_reduce_sum`.

    Returns:
        ``{"loss": float, "dice": {label_value: float}, "mean_dice": float}`` (mean over foreground).
    """
    was_training = network.training
    network.eval()
    labels_fg = [1] if num_classes == 1 else list(range(1, num_classes))
    inter = dict.fromkeys(labels_fg, 0)
    total = dict.fromkeys(labels_fg, 0)
    loss_sum, count = 0.0, 0
    try:
        for idx, hp, wp in _validation_groups(slices, patch_size, batch_size):
            shapes = [slices.labels[i].shape for i in idx]
            x = torch.stack([_pad_to(torch.from_numpy(slices.images[i]), hp, wp) for i in idx]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = network(x)
            if isinstance(logits, (list, tuple)):
                logits = logits[0]
            logits = logits.float().cpu()
            for b, (i, (h, w)) in enumerate(zip(idx, shapes)):
                top, left = (hp - h) // 2, (wp - w) // 2
                lg = logits[b : b + 1, :, top : top + h, left : left + w]
                ref = torch.from_numpy(slices.labels[i]).long()
                loss_sum += float(segmentation_loss(lg, ref[None]))
                count += 1
                pred = (lg[0, 0] > 0).long() if num_classes == 1 else lg[0].argmax(0)
                for v in labels_fg:
                    p, r = pred == v, ref == v
                    inter[v] += int((p & r).sum())
                    total[v] += int(p.sum()) + int(r.sum())
    finally:
        network.train(was_training)
    if reduce is not None:
        sums = reduce([loss_sum, count, *(inter[v] for v in labels_fg), *(total[v] for v in labels_fg)])
        loss_sum, count = sums[0], int(round(sums[1]))
        n = len(labels_fg)
        inter = {v: int(round(x)) for v, x in zip(labels_fg, sums[2 : 2 + n])}
        total = {v: int(round(x)) for v, x in zip(labels_fg, sums[2 + n :])}
    dice = {v: (2.0 * inter[v] / total[v] if total[v] else 1.0) for v in labels_fg}
    return {"loss": loss_sum / max(count, 1), "dice": dice, "mean_dice": float(np.mean(list(dice.values())))}
