"""Shared helpers for the inference-side tests (slicing, images, package, inference, CLI).

``TinyConvNet`` is a fixed-seed two-layer convolutional network: it stands in for Attention-Mamba in
the geometry tests (the geometry does not depend on the architecture, and it is ~100x faster on CPU).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from AttentionMambaSegLib import package as pkg
from conftest import DATASETS

DATA = DATASETS
ACDC_IMAGE = DATA / "ACDC/imagesTr/patient019_frame01_0000.nii.gz"
ACDC_LABEL = DATA / "ACDC/labelsTr/patient019_frame01.nii.gz"
HIPPO_IMAGE = DATA / "Hippocampus/imagesTr/hippocampus_001_0000.nii.gz"
HIPPO_LABEL = DATA / "Hippocampus/labelsTr/hippocampus_001.nii.gz"
PH2_IMAGE = DATA / "PH2/imagesTr/IMD002_0000.png"
PH2_LABEL = DATA / "PH2/labelsTr/IMD002.png"
DICOM_DIR = DATA / "dicom/brain_mr_t1post"

SNOMED_TISSUE = {
    "category": {"code": "85756007", "scheme": "SCT", "meaning": "Tissue"},
    "type": {"code": "85756007", "scheme": "SCT", "meaning": "Tissue"},
}
#: Distinct SNOMED CT types for the classes of test models (two classes may not share their codes).
TEST_TYPES = [
    ("85756007", "Tissue"),
    ("71616004", "Muscle"),
    ("39937001", "Skin"),
    ("80891009", "Heart"),
    ("5366008", "Hippocampus"),
]


def snomed_for_class(i: int) -> dict:
    """Terminology of the i-th class of a test model (category Tissue, a type of its own)."""
    code, meaning = TEST_TYPES[i % len(TEST_TYPES)]
    return {"category": SNOMED_TISSUE["category"], "type": {"code": code, "scheme": "SCT", "meaning": meaning}}


class TinyConvNet(torch.nn.Module):
    """Deterministic stand-in network: float32 (B, C, H, W) -> logits (B, K, H, W)."""

    def __init__(self, in_channels: int, num_classes: int, seed: int = 0, width: int = 4):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv1 = torch.nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(width, num_classes, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def forward(self, x):
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"H, W must be multiples of 32, got {tuple(x.shape[-2:])}")
        return self.conv2(torch.tanh(self.conv1(x)))


pkg.register_architecture("TinyConvNet", TinyConvNet)


def make_config(
    model_id="test-model",
    *,
    in_channels=1,
    num_classes=4,
    activation="softmax",
    target_spacing=(1.5625, 1.5625),
    patch_size=(64, 64),
    normalization=None,
    architecture="TinyConvNet",
    architecture_kwargs=None,
    axes_code="LPS",
) -> dict:
    k_fg = 1 if activation == "sigmoid" else num_classes - 1
    palette = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    return {
        "id": model_id,
        "version": "0.0.1",
        "task": "test",
        "modality": "MR",
        "in_channels": in_channels,
        "channel_names": ["R", "G", "B"] if in_channels == 3 else ["MR"],
        "num_classes": num_classes,
        "activation": activation,
        "classes": [
            {"label_value": 0, "name": "background", "color": [0, 0, 0]},
            *[
                {
                    "label_value": i + 1,
                    "name": f"class {i + 1}",
                    "color": list(palette[i % 5]),
                    "snomed": snomed_for_class(i),
                }
                for i in range(k_fg)
            ],
        ],
        "normalization": normalization or ({"type": "rgb"} if in_channels == 3 else {"type": "zscore"}),
        "axes_code": axes_code,
        "slice_axis_rule": "largest-spacing-else-z",
        "target_spacing": None if target_spacing is None else list(target_spacing),
        "patch_size": list(patch_size),
        "training": {"data": "random weights", "licence": "none"},
        "metrics": {},
        "architecture": architecture,
        "architecture_kwargs": architecture_kwargs or {},
    }


def make_package(folder: Path, **kwargs) -> pkg.ModelPackage:
    """Save a TinyConvNet package (fixed seed) in ``folder`` and load it."""
    config = make_config(**kwargs)
    net = TinyConvNet(config["in_channels"], config["num_classes"], **config["architecture_kwargs"])
    pkg.save_model_package(net, config, folder)
    return pkg.load_model_package(folder)


def crop_slices(image: sitk.Image, k0: int, k1: int) -> sitk.Image:
    """Slices k0..k1-1 along k of a 3D image (keeps geometry)."""
    return image[:, :, k0:k1]


def permute_flip(image: sitk.Image, order=(2, 0, 1), flip=(True, False, True)) -> sitk.Image:
    """The same physical image stored with permuted and flipped axes (new array + matching direction)."""
    out = sitk.Flip(sitk.PermuteAxes(image, list(order)), list(flip))
    return out


def copy_input(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    denom = x.sum() + y.sum()
    return 1.0 if denom == 0 else 2.0 * np.logical_and(x, y).sum() / denom
