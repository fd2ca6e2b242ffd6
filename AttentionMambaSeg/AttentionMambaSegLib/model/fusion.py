"""Branches and the Mamba-based attention for multi-scale prediction fusion.

Paper Sec. 3.3-3.4: four parallel branches of two VSS blocks each, one
per aligned scale, each with a 1x1 score head; channel attention (pooled descriptors of all four
branches as one 512-token sequence through bidirectional 1-D Mambas) and spatial attention (channel
mean/max maps of all branches as one sequence of 4 x h x w tokens of width 2) weight each branch's
scores; the weighted scores are summed (no softmax across scales).
"""

from __future__ import annotations

import torch
from torch import nn

from .mamba import BiMamba1D, VSSBlock


class MambaBranch(nn.Module):
    """Two residual VSS blocks on (B, 128, h, w) features; returns features of the same shape."""

    def __init__(self, channels: int = 128, depth: int = 2):
        super().__init__()
        self.blocks = nn.Sequential(*(VSSBlock(channels) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


class MambaAttentionFusion(nn.Module):
    """Fuse four score maps S_i (B, K, h, w) with channel and spatial attention from branch features.

    Args:
        num_classes: K.
        channels: branch feature channels (128).
        num_scales: number of branches (4).
    """

    def __init__(self, num_classes: int, channels: int = 128, num_scales: int = 4):
        super().__init__()
        self.num_classes = num_classes
        self.num_scales = num_scales
        self.channel_mamba = BiMamba1D(1)
        self.channel_mlp = nn.Sequential(
            nn.Conv2d(channels * num_scales, 8, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, num_scales * num_classes, 1, bias=False),
            nn.Sigmoid(),
        )
        self.spatial_mamba = BiMamba1D(2)
        self.spatial_proj = nn.Linear(2, 1)

    def forward(self, features: list[torch.Tensor], scores: list[torch.Tensor]) -> torch.Tensor:
        B_, _, h, w = features[0].shape
        S, K = self.num_scales, self.num_classes
        pooled = torch.cat([f.mean(dim=(2, 3)) + f.amax(dim=(2, 3)) for f in features], dim=1)  # (B, 4*128)
        seq = self.channel_mamba(pooled.unsqueeze(-1))  # (B, 512, 1)
        ca = self.channel_mlp(seq.view(B_, -1, 1, 1)).view(B_, S, K, 1, 1)
        maps = [torch.stack([f.mean(dim=1), f.amax(dim=1)], dim=-1).flatten(1, 2) for f in features]  # (B, hw, 2)
        seq = self.spatial_mamba(torch.cat(maps, dim=1))  # (B, 4hw, 2)
        sa = torch.sigmoid(self.spatial_proj(seq)).view(B_, S, 1, h, w)
        return sum(scores[i] * ca[:, i] * sa[:, i] for i in range(S))
