"""Backbone: ResNet-18 with a deep stem (He et al. 2019, "Bag of Tricks", ResNet-C).

Attention-Mamba (arXiv 2402.02286, Sec. 3.1) uses the deep-stem ResNet-18:
three 3x3 convolutions (3->64 stride 2, 64->64, 64->128) and a 3x3 max-pool, then four stages of two
BasicBlocks (64/128/256/512 channels, strides 1/2/2/2). The first block of stage 1 maps 128->64 and
so has a 1x1 projection shortcut. 11,324,992 parameters.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (no bias), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet BasicBlock: two 3x3 conv + BN, identity or 1x1 conv + BN shortcut, ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class DeepStemResNet18(nn.Module):
    """Deep-stem ResNet-18 feature extractor.

    Input (B, 3, H, W) float32; returns [C1, C2, C3, C4] with 64, 128, 256, 512 channels at H/4, H/8,
    H/16, H/32 (for H, W multiples of 32).
    """

    widths = (64, 128, 256, 512)

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            conv_bn_relu(3, 64, 2), conv_bn_relu(64, 64), conv_bn_relu(64, 128), nn.MaxPool2d(3, 2, 1)
        )
        stages = []
        in_channels = 128
        for i, width in enumerate(self.widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(in_channels, width, stride), BasicBlock(width, width)))
            in_channels = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def load_checkpoint(self, path: str | Path) -> None:
        """Load a user-supplied ImageNet deep-stem ResNet-18 (``.safetensors`` or a torch state dict).

        Keys may carry a ``module.``/``backbone.`` prefix; timm-style names (``conv1.0``, ``layer1``)
        are mapped to this module's names. ``fc`` weights are ignored.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if a tensor's shape does not match, or keys are missing, naming them.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"backbone checkpoint not found: {path}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded = load_file(str(path))
        else:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
            loaded = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
        mapped = {_map_resnet_key(k): v for k, v in loaded.items()}
        state = {k: v for k, v in mapped.items() if k is not None}
        own = self.state_dict()
        mismatched = [
            f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in state.items()
            if k in own and v.shape != own[k].shape
        ]
        if mismatched:
            raise ValueError("backbone checkpoint does not fit a deep-stem ResNet-18: " + "; ".join(mismatched[:5]))
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        if missing:
            raise ValueError(
                f"backbone checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}; "
                "expected a deep-stem ResNet-18 (stem 3->64->64->128)"
            )
        self.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def _map_resnet_key(key: str) -> str | None:
    for prefix in ("module.", "backbone.", "encoder."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    if key.startswith("fc."):
        return None
    # timm / mmcv deep stem: conv1.0/1/3/4/6/7 (conv, bn, relu interleaved), bn1 = final stem BN
    stem_map = {
        "conv1.0": "stem.0.0",
        "conv1.1": "stem.0.1",
        "conv1.3": "stem.1.0",
        "conv1.4": "stem.1.1",
        "conv1.6": "stem.2.0",
        "bn1": "stem.2.1",
    }
    for old, new in stem_map.items():
        if key.startswith(old + "."):
            return new + key[len(old) :]
    if key.startswith("layer"):
        stage = int(key[5]) - 1
        return f"stages.{stage}{key[6:]}"
    return key
