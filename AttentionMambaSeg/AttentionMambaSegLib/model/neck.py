"""Neck: lateral 1x1 connections and the dual top-down / bottom-up path (arXiv 2402.02286, Sec. 3.2).

Every resize is bilinear with align_corners=True to the exact target size. 1,305,600 parameters
(lateral 123,904, top-down 443,136, bottom-up 443,136, merge 295,424).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize with align_corners=True to ``size`` (H, W)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def conv1x1_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)
    )


def fuse_block(channels: int = 128) -> nn.Sequential:
    """3x3 conv (no bias), BN, ReLU: the neck's "fuse" block."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
    )


class DualPathNeck(nn.Module):
    """Lateral connections, a top-down and a bottom-up path, merged into F1..F4.

    Input: [C1, C2, C3, C4] (B, 64/128/256/512, H/4..H/32). Output: [F1, F2, F3, F4], each 128
    channels at the resolution of its Ci.
    """

    def __init__(self, in_channels=(64, 128, 256, 512), channels: int = 128):
        super().__init__()
        self.lateral = nn.ModuleList(conv1x1_bn_relu(c, channels) for c in in_channels)
        self.top_down = nn.ModuleList(fuse_block(channels) for _ in range(3))  # for P3, P2, P1
        self.bottom_up = nn.ModuleList(fuse_block(channels) for _ in range(3))  # for P2, P3, P4
        self.merge = nn.ModuleList(fuse_block(channels) for _ in range(2))  # for F2, F3

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        p = [lat(c) for lat, c in zip(self.lateral, features)]
        up = [None, None, None, p[3]]
        for k, block in zip((2, 1, 0), self.top_down):
            up[k] = block(resize(up[k + 1], p[k].shape[-2:]) + p[k])
        down = [p[0], None, None, None]
        for k, block in zip((1, 2, 3), self.bottom_up):
            down[k] = block(resize(down[k - 1], p[k].shape[-2:]) + p[k])
        return [up[0], self.merge[0](up[1] + down[1]), self.merge[1](up[2] + down[2]), down[3]]
