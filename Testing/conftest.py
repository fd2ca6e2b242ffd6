"""Shared test set-up: where the read-only shared datasets are, skipping a test whose data is absent, small copies
of a dataset and a real sample.

Tests import the plain helpers from here (``from conftest import DATASETS, make_copy, needs_datasets, require``);
pytest finds the fixtures by name. Importing this file does not import torch: tests that check a path without
torch (Slicer's own process) import their test module, and so this file, with torch blocked.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

# Triton runs its kernels in its interpreter on CPU tensors; it reads this once, when first imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

import AttentionMambaSegLib  # noqa: F401  (before torch: it sets torch's OpenMP wait policy)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ATTENTION_MAMBA_SEG_SHARED", REPO.parent / "shared"))
DATASETS = SHARED / "datasets"


def pytest_configure(config):
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


#: Marks a test (or a module, as ``pytestmark``) that reads the shared datasets: skipped when they are absent.
needs_datasets = pytest.mark.skipif(
    not DATASETS.is_dir(), reason=f"shared datasets not found at {DATASETS} (set ATTENTION_MAMBA_SEG_SHARED)"
)


def require(*paths: Path) -> None:
    """Skip the calling test when one of these shared data files or folders is absent."""
    for path in paths:
        if not path.exists():
            pytest.skip(f"shared test data {path} is not available (set ATTENTION_MAMBA_SEG_SHARED)")


def make_copy(tmp_path: Path, name: str, train: list[str], val: list[str]) -> Path:
    """Copy a few cases of the shared dataset ``name`` into tmp_path with a one-fold splits_final.json."""
    src, dst = DATASETS / name, tmp_path / name
    (dst / "imagesTr").mkdir(parents=True)
    (dst / "labelsTr").mkdir()
    meta = json.loads((src / "dataset.json").read_text())
    meta["numTraining"] = len(train) + len(val)
    (dst / "dataset.json").write_text(json.dumps(meta))
    (dst / "splits_final.json").write_text(json.dumps([{"train": train, "val": val}]))
    ending = meta["file_ending"]
    image_ending = meta.get("image_file_ending", ending)
    for case in train + val:
        for f in (src / "imagesTr").glob(f"{case}_*{image_ending}"):
            shutil.copy(f, dst / "imagesTr" / f.name)
        shutil.copy(src / "labelsTr" / f"{case}{ending}", dst / "labelsTr" / f"{case}{ending}")
    return dst


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
    import torch

    image = sitk.GetArrayFromImage(sitk.ReadImage(str(datasets_dir / "ACDC/imagesTr/patient001_frame01_0000.nii.gz")))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(datasets_dir / "ACDC/labelsTr/patient001_frame01.nii.gz")))
    k = int(np.argmax((label > 0).sum(axis=(1, 2))))  # the slice with the most foreground
    img, lab = image[k].astype(np.float32), label[k].astype(np.int64)
    ys, xs = np.nonzero(lab)
    cy, cx = int(ys.mean()), int(xs.mean())
    img = np.pad(img, 48, mode="constant")[cy : cy + 96, cx : cx + 96]
    lab = np.pad(lab, 48, mode="constant")[cy : cy + 96, cx : cx + 96]
    img = (img - img.mean()) / (img.std() + 1e-8)
    return torch.from_numpy(img)[None, None].contiguous(), torch.from_numpy(lab)[None].contiguous()
