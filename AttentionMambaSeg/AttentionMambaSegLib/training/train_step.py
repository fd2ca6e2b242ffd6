"""One optimiser step with deep supervision (arXiv 2402.02286 v4, Sec. 3.5: the 9 training outputs)."""

from __future__ import annotations

import torch

from ..losses import deep_supervision_loss, segmentation_loss

__all__ = ["train_step"]


def train_step(network, optimizer, x, y, device, bf16: bool, sum_across=None) -> tuple[float, float]:
    """One optimiser step; ``sum_across`` (several ranks) makes the Dice term that of the global batch."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        outputs = network(x)
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    if len(outputs) == 9:
        loss = deep_supervision_loss(outputs, y, sum_across=sum_across)
    else:
        loss = deep_supervision_loss(list(outputs), y, weights=[1.0] * len(outputs), sum_across=sum_across)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        fused = float(segmentation_loss(outputs[0].detach(), y))
    return float(loss.detach()), fused
