"""Tests of evaluation.py and the train/evaluate CLI: one case scored, CSV and PNG written."""

import csv
import json
import shutil

import pytest
import torch

from AttentionMambaSegLib import dataset_validation, training
from AttentionMambaSegLib.cli import main
from AttentionMambaSegLib.evaluation import EMPTY_MASK_CONVENTIONS, evaluate, format_summary
from AttentionMambaSegLib.inference import InferenceSettings
from AttentionMambaSegLib.package import load_model_package, save_model_package
from conftest import DATASETS, needs_datasets  # noqa: E402

pytestmark = needs_datasets

CASE = "hippocampus_001"


@pytest.fixture
def model_dir(tmp_path):
    """An untrained (seeded) Hippocampus model package in tmp_path."""
    torch.manual_seed(0)
    network = training.new_network(1, 3).eval()
    info = dataset_validation.validate_dataset(DATASETS / "Hippocampus", cases=[CASE], check_label_values=False)
    config = {
        "id": "hippocampus-test",
        "version": "0.0.1",
        "task": "test",
        "in_channels": 1,
        "num_classes": 3,
        "activation": "softmax",
        "classes": training.default_classes(info, "softmax", load_model_package("hippocampus-msd").card.class_dicts),
        "normalization": {"type": "zscore"},
        "axes_code": "LPS",
        "target_spacing": [1.0, 1.0],
        "patch_size": [64, 64],
    }
    return save_model_package(network, config, tmp_path / "model")


@pytest.mark.slow
def test_evaluate_one_case_writes_csv_and_png(tmp_path, model_dir):
    out = tmp_path / "metrics.csv"
    summary = evaluate(
        model_dir, DATASETS / "Hippocampus", InferenceSettings(device="cpu", tta=False), cases=[CASE], output=out
    )
    assert summary["cases"] == 1 and set(summary["per_class"]) == {"anterior hippocampus", "posterior hippocampus"}
    for row in summary["per_case"]:
        assert 0.0 <= row["dice"] <= 1.0 and row["hd95_mm"] >= 0.0 and row["ref_voxels"] > 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("#") and any(EMPTY_MASK_CONVENTIONS in line for line in lines if line.startswith("#"))
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    assert [r["case"] for r in rows] == [CASE, CASE] and rows[0]["label_value"] == "1"
    assert out.with_suffix(".png").stat().st_size > 1000
    text = format_summary(summary)
    assert "mean of classes" in text and "anterior hippocampus" in text


@pytest.mark.slow
def test_evaluate_cli(tmp_path, model_dir, capsys):
    root = tmp_path / "Hippocampus"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    shutil.copy(DATASETS / "Hippocampus" / "dataset.json", root / "dataset.json")
    (root / "splits_final.json").write_text(json.dumps([{"train": [], "val": [CASE]}]))
    shutil.copy(DATASETS / "Hippocampus" / "imagesTr" / f"{CASE}_0000.nii.gz", root / "imagesTr")
    shutil.copy(DATASETS / "Hippocampus" / "labelsTr" / f"{CASE}.nii.gz", root / "labelsTr")
    code = main(
        [
            "evaluate",
            "--model",
            str(model_dir),
            str(root),
            "--split",
            "val",
            "--output",
            str(tmp_path / "cli.csv"),
            "--no-tta",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert "mean of classes" in capsys.readouterr().out
    assert (tmp_path / "cli.csv").exists() and (tmp_path / "cli.png").exists()


def test_train_cli_help(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["train", "--help"])
    assert excinfo.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--output",
        "--fold",
        "--epochs",
        "--patch",
        "--batch-size",
        "--time-budget",
        "--resume",
        "--device",
        "--seed",
        "--model-id",
        "--bf16",
    ):
        assert flag in text
