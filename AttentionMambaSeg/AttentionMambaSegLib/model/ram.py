"""Recursive Alignment Module (RAM): flow-guided warping of F2..F4 to stage-1 resolution.

arXiv 2402.02286 v4, Sec. 3.2 (docs/NETWORK.md). Three flow heads predict sampling grids for the pairs
(F1, F2), (F2, F3), (F3, F4) from the un-aligned features; coarser features are then warped step by
step with ``grid_sample`` (bilinear, zero padding, align_corners=True), each step also upsampling to
the grid's size. 56,064 parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .neck import resize


class FlowHead(nn.Module):
    """Predicts a sampling grid (B, h, w, 2) at the size of ``low`` that aligns ``high`` to ``low``.

    The grid is an identity grid in normalised (x, y) coordinates plus the predicted flow, flow
    channel 0 divided by w and channel 1 by h.
    """

    def __init__(self, channels: int = 128, hidden: int = 64):
        super().__init__()
        self.down_high = nn.Conv2d(channels, hidden, 1, bias=False)
        self.down_low = nn.Conv2d(channels, hidden, 1, bias=False)
        self.flow = nn.Conv2d(2 * hidden, 2, 3, 1, 1, bias=False)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        h, w = low.shape[-2:]
        high = resize(self.down_high(high), (h, w))
        flow = self.flow(torch.cat([self.down_low(low), high], dim=1))  # (B, 2, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=low.device, dtype=flow.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=low.device, dtype=flow.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        identity = torch.stack([grid_x, grid_y], dim=-1)  # (h, w, 2), last dim (x, y)
        scale = flow.new_tensor([w, h])
        return identity.unsqueeze(0) + flow.permute(0, 2, 3, 1) / scale


def warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """grid_sample (bilinear, zeros, align_corners=True); output takes the grid's (h, w)."""
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


class RecursiveAlignment(nn.Module):
    """RAM: [F1..F4] (128 channels, H/4..H/32) -> [A1..A4], all (B, 128, H/4, W/4)."""

    def __init__(self, channels: int = 128):
        super().__init__()
        self.heads = nn.ModuleList(FlowHead(channels) for _ in range(3))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        g1, g2, g3 = (head(feats[i], feats[i + 1]) for i, head in enumerate(self.heads))
        a2 = warp(feats[1], g1)
        a3 = warp(warp(feats[2], g2), g1)
        a4 = warp(warp(warp(feats[3], g3), g2), g1)
        return [feats[0], a2, a3, a4]
