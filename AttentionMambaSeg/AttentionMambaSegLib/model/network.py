"""Attention-Mamba (Zhang et al., arXiv 2402.02286 v4): the whole network.

backbone (deep-stem ResNet-18) -> dual-path neck -> Recursive Alignment Module -> four parallel
Mamba branches with score heads -> Mamba-based attention fusion (paper Sec. 3; each part's module
describes its layers); parameter counts: 14,054,803 (K = 9),
14,049,483 (K = 4), 14,046,291 (K = 1), whatever ``in_channels`` is (grayscale is repeated to 3
channels, paper Sec. 4.2).

Deviation from the authors' code: the selective scan is our own (``AttentionMambaSegLib.ops``) and runs
on CPUs; the architecture is unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import DeepStemResNet18
from .fusion import MambaAttentionFusion, MambaBranch
from .neck import DualPathNeck
from .ram import RecursiveAlignment

#: H and W must be multiples of this (the backbone's total stride).
SIZE_MULTIPLE = 32


class AttentionMamba(nn.Module):
    """Attention-Mamba segmentation network.

    Args:
        in_channels: 1 (grey: CT, MRI; repeated to 3 channels) or 3 (RGB).
        num_classes: K, output channels (including background for softmax models; 1 for a sigmoid
            model).
        backbone_checkpoint: optional path to an ImageNet deep-stem ResNet-18 (``.safetensors`` or a
            state dict) loaded into the backbone.

    Forward:
        x: (B, in_channels, H, W) float32, H and W multiples of 32, finite values.
        Returns in eval mode the fused logits (B, K, H, W); in training mode the 9 maps of the
        paper, all (B, K, H, W): [fused, S1..S4, aux1..aux4] (loss weights 1, 1, 1, 1, 1, 0.25 x 4).

    Raises:
        ValueError: on a wrong channel count, a non-4-D input, H or W not a multiple of 32, or
            NaN/Inf values.

    Example:
        >>> net = AttentionMamba(1, 4).eval()
        >>> net(torch.zeros(1, 1, 192, 192)).shape
        torch.Size([1, 4, 192, 192])
    """

    def __init__(self, in_channels: int, num_classes: int, backbone_checkpoint: str | Path | None = None):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB); got {in_channels}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.backbone = DeepStemResNet18()
        self.neck = DualPathNeck()
        self.ram = RecursiveAlignment()
        self.aux_heads = nn.ModuleList(nn.Conv2d(128, num_classes, 1) for _ in range(4))
        self.branches = nn.ModuleList(MambaBranch() for _ in range(4))
        self.branch_heads = nn.ModuleList(nn.Conv2d(128, num_classes, 1) for _ in range(4))
        self.fusion = MambaAttentionFusion(num_classes)
        if backbone_checkpoint is not None:
            self.backbone.load_checkpoint(backbone_checkpoint)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is a finite (B, in_channels, H, W) tensor with H, W multiples of 32."""
        expected = f"(B, {self.in_channels}, H, W) with H and W multiples of {SIZE_MULTIPLE}"
        if x.dim() != 4:
            raise ValueError(f"expected a 4-D tensor {expected}; got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} input channel(s), {expected}; got {x.shape[1]} (shape {tuple(x.shape)})"
            )
        if x.shape[2] % SIZE_MULTIPLE or x.shape[3] % SIZE_MULTIPLE or x.shape[2] == 0 or x.shape[3] == 0:
            raise ValueError(f"expected {expected}; got H={x.shape[2]}, W={x.shape[3]}: pad or crop the image")
        if not torch.isfinite(x).all():
            raise ValueError("input contains NaN or Inf values; replace them (e.g. torch.nan_to_num) first")

    def forward(self, x: torch.Tensor):
        self.check_input(x)
        size = x.shape[-2:]
        if self.in_channels == 1:
            x = x.repeat(1, 3, 1, 1)
        feats = self.ram(self.neck(self.backbone(x)))
        branch_feats = [branch(a) for branch, a in zip(self.branches, feats)]
        scores = [head(f) for head, f in zip(self.branch_heads, branch_feats)]
        fused = self.fusion(branch_feats, scores)
        up = lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=True)  # noqa: E731
        if not self.training:
            return up(fused)
        aux = [head(a) for head, a in zip(self.aux_heads, feats)]
        return [up(fused)] + [up(s) for s in scores] + [up(a) for a in aux]
