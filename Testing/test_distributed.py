"""Several processes with torchrun on the CPU (gloo, 2 ranks): training and segmenting an archive.

Every run here is a real ``torchrun`` (``python -m torch.distributed.run``) of the package's CLI on real
ACDC slices or hippocampus volumes, one thread per process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import DATASETS, make_copy, needs_datasets

pytestmark = [needs_datasets, pytest.mark.slow]

MODULE_DIR = Path(__file__).resolve().parents[1] / "AttentionMambaSeg"
FIXED_TIMING_CLI = Path(__file__).resolve().parent / "_fixed_timing_cli.py"
TRAIN_CASES = ["patient001_frame01", "patient004_frame01"]
VAL_CASES = ["patient019_frame01"]
# lr 1e-5: AdamW's first steps move every weight by about lr whatever the size of its gradient, so
# float32 rounding noise (which differs between any two runs that split work differently, e.g. one
# process with 1 vs 2 threads) shows in the weights in proportion to lr; at 5e-4 both differ by 7e-4.
TRAIN = [
    "--epochs",
    "1",
    "--iterations-per-epoch",
    "3",
    "--batch-size",
    "8",
    "--patch",
    "64",
    "--val-slices",
    "4",
    "--device",
    "cpu",
    "--no-final-evaluation",
    "--seed",
    "7",
    "--lr",
    "1e-5",
]


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(MODULE_DIR), OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _cli(*args: str, nproc: int = 1, check: bool = True, fixed_timing: bool = False) -> subprocess.CompletedProcess:
    """The CLI (under torchrun with ``nproc`` > 1); ``fixed_timing``: its time budget planned with fixed step
    times and a clock that stands still (``_fixed_timing_cli.py``), the same on a busy machine as on an idle one."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else []
    module = [str(FIXED_TIMING_CLI)] if fixed_timing else ["-m", "AttentionMambaSegLib.cli"]
    done = subprocess.run(
        [sys.executable, *launcher, *module, *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=_env(),
        timeout=900,
    )
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def acdc(tmp_path_factory):
    return make_copy(tmp_path_factory.mktemp("data"), "ACDC", TRAIN_CASES, VAL_CASES)


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoint_latest.pt", weights_only=False)


def _relative_difference(a: dict, b: dict) -> float:
    num = sum(float((a[k].double() - b[k].double()).norm()) ** 2 for k in a if a[k].is_floating_point())
    den = sum(float(a[k].double().norm()) ** 2 for k in a if a[k].is_floating_point())
    return (num / den) ** 0.5


def _files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*"))


def test_two_ranks_of_batch_4_train_as_one_process_of_batch_8(acdc, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _cli("train", str(acdc), "--output", str(one), *TRAIN)
    done = _cli("train", str(acdc), "--output", str(two), *TRAIN, nproc=2)
    a, b = _weights(one), _weights(two)
    assert _relative_difference(a["model"], b["model"]) <= 1e-4
    for key in ("num_batches_tracked",):  # BatchNorm saw the global batch: same counters
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"] if k.endswith(key))
    (ra,), (rb,) = a["history"], b["history"]
    assert ra["val_dice_mean"] == pytest.approx(rb["val_dice_mean"], abs=1e-9)
    assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-3)
    assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-4)
    # only rank 0 writes: the same files as one process, one log row per epoch
    assert _files(one) == _files(two)
    assert len((two / "training_log.csv").read_text().strip().splitlines()) == 2
    assert json.loads((two / "training_config.json").read_text())["processes"] == 2
    assert done.stdout.count("model package:") == 1


def test_a_stopped_and_resumed_two_rank_run_equals_an_uninterrupted_one(acdc, tmp_path):
    args = [
        "--epochs",
        "2",
        "--iterations-per-epoch",
        "2",
        "--batch-size",
        "4",
        "--patch",
        "64",
        "--val-slices",
        "2",
        "--device",
        "cpu",
        "--no-final-evaluation",
        "--seed",
        "11",
    ]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    _cli("train", str(acdc), "--output", str(whole), *args, nproc=2)
    _cli("train", str(acdc), "--output", str(parts), *args, "--stop-after-epoch", "1", nproc=2)
    assert _weights(parts)["epoch"] == 1
    _cli("train", str(acdc), "--output", str(parts), *args, "--resume", nproc=2)
    a, b = _weights(whole), _weights(parts)
    assert a["epoch"] == b["epoch"] == 2
    assert _relative_difference(a["model"], b["model"]) == 0.0
    assert [r["val_dice_mean"] for r in a["history"]] == [r["val_dice_mean"] for r in b["history"]]


def test_the_time_budget_stops_both_ranks_at_the_same_step(acdc, tmp_path):
    # Rank 0 plans the budget with fixed step times (5 s a step, whatever the machine's load) and both
    # ranks run that plan: 1.5 min = 87.3 s after the 3 % margin hold 5 of the 6 epochs, of 3 steps each
    # (3 x 5 s, validation on the 16-slice minimum and a 0.5 s checkpoint an epoch).
    done = _cli(
        "train",
        str(acdc),
        "--output",
        str(tmp_path / "budget"),
        "--time-budget",
        "1.5",
        "--epochs",
        "6",
        "--batch-size",
        "4",
        "--patch",
        "64",
        "--device",
        "cpu",
        "--no-final-evaluation",
        nproc=2,
        fixed_timing=True,
    )
    steps = re.findall(r"rank (\d) of 2: (\d+) steps done, stopped at epoch (\d+)", done.stderr)
    assert sorted(r for r, _, _ in steps) == ["0", "1"], done.stderr[-2000:]
    assert {(s, e) for _, s, e in steps} == {("15", "5")}
    history = _weights(tmp_path / "budget")["history"]
    assert len(history) == 5 and history[-1]["steps"] == 15


def test_two_rank_segment_of_a_folder_equals_one_process_and_reports_a_corrupt_input(tmp_path):
    source = DATASETS / "Hippocampus" / "imagesTr"
    names = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_007"]
    folder = tmp_path / "archive"
    folder.mkdir()
    for name in names:
        (folder / f"{name}.nii.gz").write_bytes((source / f"{name}_0000.nii.gz").read_bytes())
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    common = ["--model", "hippocampus-msd", "--no-tta", "--device", "cpu", "--output-format", "nii.gz"]
    _cli("segment", *sorted(str(p) for p in folder.iterdir()), "-o", str(one), *common)
    _cli("segment", str(folder), "-o", str(two), *common, nproc=2)
    assert sorted(p.name for p in two.iterdir()) == sorted(
        [f"{n}.nii.gz" for n in names] + [f"{n}.report.json" for n in names] + ["summary.csv"]
    )
    for name in names:
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(one / f"{name}.nii.gz")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(two / f"{name}.nii.gz")))
        np.testing.assert_array_equal(a, b)
    (folder / "broken.nii.gz").write_bytes((source / f"{names[0]}_0000.nii.gz").read_bytes()[:3000])
    three = tmp_path / "three"
    three.mkdir()
    done = _cli("segment", str(folder), "-o", str(three), *common, nproc=2, check=False)
    assert done.returncode != 0
    assert "segmented 4 of 5 inputs, 1 failed:" in done.stderr and "FAILED " in done.stderr
    assert re.search(r"FAILED \S*broken\.nii\.gz: ValueError: .*truncated", done.stderr), done.stderr[-2000:]
    assert sorted(p.name for p in three.iterdir()) == sorted(
        [f"{n}.nii.gz" for n in names] + [f"{n}.report.json" for n in names] + ["summary.csv"]
    )
    assert (three / "summary.csv").read_text().count("\n") == 1 + len(names)  # the 4 inputs written, not the broken one
