"""tools/ship_model.py: keeps a better bundled model and records TTA scores.

The scores are stand-ins (``evaluate`` is replaced by a table of known Dice values): what is tested is the
decision and what lands in the bundled model.json, not the evaluation (tested in test_evaluation.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from _inference_helpers import TinyConvNet, make_config
from AttentionMambaSegLib import package as pkg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import ship_model  # noqa: E402

CASES = ["case_a", "case_b", "case_c", "case_d"]


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A bundled 'test-model' 0.0.1 (val Dice 0.80 on 4 cases) and a run continued from it (0.0.2)."""
    bundled = tmp_path / "bundled"
    monkeypatch.setattr(pkg, "bundled_models_dir", lambda: bundled)
    monkeypatch.setattr(ship_model, "bundled_models_dir", lambda: bundled)
    monkeypatch.setenv("ATTENTION_MAMBA_SEG_MODELS_DIR", str(tmp_path / "user-cache"))
    old = make_config()
    old["metrics"] = {"val": {"split": "val", "cases": 4, "tta": False, "mean_dice": 0.8}}
    old["training"]["command"] = "attention-mamba-seg train first"
    pkg.save_model_package(TinyConvNet(1, 4, seed=1), old, bundled / "test-model")

    run = tmp_path / "run"
    new = make_config()
    new["version"] = "0.0.2"
    net = TinyConvNet(1, 4, seed=2)
    pkg.save_model_package(net, new, run / "model")
    torch.save({"model": net.state_dict()}, run / "checkpoint_best.pt")
    (run / "training_config.json").write_text(json.dumps({"init_from": "test-model"}))

    scores = {False: 0.7, True: 0.9}  # mean Dice the stand-in evaluation gives without / with TTA

    def evaluate(package, dataset, settings, cases, output=None):
        d = scores[settings.tta]
        return {
            "cases": len(cases),
            "mean_dice": d,
            "mean_hd95": 2.0,
            "per_class": {"class 1": {"dice_mean": d, "dice_sd": 0.0, "hd95_mean": 2.0, "hd95_sd": 0.0}},
            "per_case": [{"case": c, "class": "class 1", "dice": d} for c in cases],
        }

    monkeypatch.setattr(ship_model, "evaluate", evaluate)
    monkeypatch.setattr(ship_model, "format_summary", lambda s: f"mean Dice {s['mean_dice']}")
    monkeypatch.setattr(ship_model, "load_dataset_info", lambda path: SimpleNamespace())
    monkeypatch.setattr(ship_model, "split_cases", lambda info, split, fold: list(CASES))
    return SimpleNamespace(bundled=bundled, run=run, scores=scores)


def bundled_config(world) -> dict:
    return json.loads((world.bundled / "test-model" / "model.json").read_text())


def test_a_worse_run_is_not_shipped(world, capsys):
    assert ship_model.main([str(world.run), "dataset"]) == 1
    assert (
        "not shipped: the bundled test-model scored 0.8000 on the same 4 cases, this run 0.7000"
        in capsys.readouterr().out
    )
    assert bundled_config(world)["version"] == "0.0.1"
    assert json.loads((world.run / "model_scored.json").read_text())["metrics"]["val"]["mean_dice"] == 0.7


def test_force_ships_a_worse_run(world):
    assert ship_model.main([str(world.run), "dataset", "--force"]) == 0
    assert bundled_config(world)["version"] == "0.0.2"


def test_a_better_run_is_shipped_with_tta_scores(world):
    world.scores[False] = 0.85
    assert (
        ship_model.main([str(world.run), "dataset", "--also-tta", "--window", "96", "--largest-component", "2", "1"])
        == 0
    )
    config = bundled_config(world)
    assert config["version"] == "0.0.2" and config["inference_patch_size"] == [96, 96]
    assert config["postprocessing"] == {"largest_component": [1, 2]}
    val, val_tta = config["metrics"]["val"], config["metrics"]["val_tta"]
    assert (val["tta"], val["mean_dice"], val["cases"]) == (False, 0.85, 4)
    assert (val_tta["tta"], val_tta["mean_dice"]) == (True, 0.9)
    assert config["metrics"]["reference_cases"]["dice"] == {"case_a": {"class 1": 0.85}, "case_b": {"class 1": 0.85}}
    pkg.load_model_package("test-model").verify()
