"""Shared pytest fixtures: paths to the read-only shared datasets and small real samples."""

from __future__ import annotations

import os
from pathlib import Path

# Triton runs its kernels in its interpreter on CPU tensors; it reads this once, when first imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import AttentionMambaSegLib  # noqa: F401  (before torch: it sets torch's OpenMP wait policy)
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ATTENTION_MAMBA_SEG_SHARED", REPO.parent / "shared"))
DATASETS = SHARED / "datasets"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"shared datasets not found at {DATASETS} (set ATTENTION_MAMBA_SEG_SHARED)")
    return DATASETS


@pytest.fixture(scope="session")
def acdc_slice(datasets_dir):
    """One real ACDC ED slice and its labels, z-scored, centre-cropped/padded to 96x96.

    Returns (image (1, 1, 96, 96) float32, labels (1, 96, 96) int64 with values 0..3).
    """
    import numpy as np
    import SimpleITK as sitk

    image = sitk.GetArrayFromImage(sitk.ReadImage(str(datasets_dir / "ACDC/imagesTr/patient001_frame01_0000.nii.gz")))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(datasets_dir / "ACDC/labelsTr/patient001_frame01.nii.gz")))
    k = int(np.argmax((label > 0).sum(axis=(1, 2))))  # the slice with the most foreground
    img, lab = image[k].astype(np.float32), label[k].astype(np.int64)
    ys, xs = np.nonzero(lab)
    cy, cx = int(ys.mean()), int(xs.mean())
    img = np.pad(img, 48, mode="constant")[cy:cy + 96, cx:cx + 96]
    lab = np.pad(lab, 48, mode="constant")[cy:cy + 96, cx:cx + 96]
    img = (img - img.mean()) / (img.std() + 1e-8)
    return torch.from_numpy(img)[None, None].contiguous(), torch.from_numpy(lab)[None].contiguous()
