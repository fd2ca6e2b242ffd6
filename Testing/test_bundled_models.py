"""The bundled models: they load, their SHA-256 matches model.json, their model card is complete, and
each reproduces the per-case validation Dice recorded in model.json (by tools/ship_model.py) on two
real validation cases within 0.5 Dice point."""

from __future__ import annotations

import json

import pytest

from AttentionMambaSegLib.package import bundled_models_dir, list_models, load_model_package, sha256_of_file

EXPECTED = {
    "cardiac-acdc": "ACDC",
    "hippocampus-msd": "Hippocampus",
    "skin-lesion-ph2": "PH2",
    "skin-lesion-isic": "ISIC2017",
}
BUNDLED = (
    sorted(p.name for p in bundled_models_dir().iterdir() if (p / "model.json").is_file())
    if bundled_models_dir().is_dir()
    else []
)


def test_the_cardiac_model_is_bundled():
    assert "cardiac-acdc" in BUNDLED, "the demo and the Slicer module need the bundled cardiac-acdc model"


@pytest.mark.parametrize("model_id", BUNDLED)
def test_bundled_model_loads_and_its_hash_matches(model_id):
    package = load_model_package(model_id)
    assert package.id == model_id
    assert sha256_of_file(package.path / "model.safetensors") == package.card.sha256
    network = package.build_network("cpu")
    # 14,046,291 for K = 1, plus 8 x 129 + 32 = 1,064 per further class (docs/NETWORK.md)
    assert sum(p.numel() for p in network.parameters()) == 14_046_291 + 1_064 * (package.num_classes - 1)
    assert model_id in {m.id for m in list_models()}


@pytest.mark.parametrize("model_id", BUNDLED)
def test_model_card_is_complete(model_id):
    config = json.loads((bundled_models_dir() / model_id / "model.json").read_text())
    for key in (
        "id",
        "version",
        "task",
        "modality",
        "in_channels",
        "channel_names",
        "classes",
        "normalization",
        "target_spacing",
        "patch_size",
        "slice_axis_rule",
        "training",
        "metrics",
        "sha256",
    ):
        assert key in config, key
    for cls in config["classes"]:
        assert {"label_value", "name", "color", "snomed"} <= set(cls)
        assert cls["snomed"]["category"]["code"] and cls["snomed"]["type"]["code"]
    assert "val" in config["metrics"] and "reference_cases" in config["metrics"]
    assert abs(config["metrics"]["float16_vs_float32"]["difference_points"]) < 0.1
    if model_id == "cardiac-acdc":
        assert "NC" in json.dumps(config["training"]) or "non-commercial" in json.dumps(config).lower()


@pytest.mark.slow
@pytest.mark.parametrize("model_id", BUNDLED)
def test_bundled_model_reproduces_its_recorded_validation_dice(model_id, datasets_dir):
    from AttentionMambaSegLib.card import PassPlan
    from AttentionMambaSegLib.evaluation import evaluate
    from AttentionMambaSegLib.inference import InferenceSettings, Predictor

    package = load_model_package(model_id)
    recorded = package.card.metrics["reference_cases"]["dice"]
    dataset = datasets_dir / EXPECTED[model_id]
    # as recorded: sliding windows of inference_patch_size, no flips
    sliding = Predictor(package, InferenceSettings(device="cpu"), passes=PassPlan("sliding", 1))
    summary = evaluate(package, dataset, cases=sorted(recorded), predictor=sliding)
    for row in summary["per_case"]:
        assert abs(row["dice"] - recorded[row["case"]][row["class"]]) <= 0.005, (row["case"], row["class"])
    # the CPU default mode keeps the validation Dice it was chosen for: within 0.01 on these cases too
    default = evaluate(
        package, dataset, cases=sorted(recorded), predictor=Predictor(package, InferenceSettings(device="cpu"))
    )
    assert default["mean_dice"] >= summary["mean_dice"] - 0.01, (default["mode"], default["mean_dice"])
