"""Tests of the training package: schedule, crops and augmentation, short real runs, bit-identical resume."""

import json
import math

import numpy as np
import pytest
import torch

from AttentionMambaSegLib import dataset_validation, datasets, devices, training
from conftest import DATASETS, make_copy, needs_datasets  # noqa: E402

# ---------------------------------------------------------------------------------------- pure parts


def test_cosine_schedule_falls_rises_falls():
    base, epochs = 5e-4, 150
    lrs = [base * training.cosine_factor(e, epochs, base) for e in range(epochs + 1)]
    assert lrs[0] == pytest.approx(base)
    assert lrs[50] == pytest.approx(1e-5)  # T_max = 50
    assert lrs[100] == pytest.approx(base)
    assert lrs[150] == pytest.approx(1e-5)
    assert lrs[25] == pytest.approx(1e-5 + (base - 1e-5) / 2)


def test_plan_schedule_without_and_with_budget():
    plan = training.plan_schedule(epochs=150, num_train_slices=1700, num_val_slices=200, batch_size=24)
    assert (plan.epochs, plan.iterations_per_epoch, plan.val_slices) == (150, math.ceil(1700 / 24), 200)
    # A budget far below the recipe: fewer, shorter epochs; validation near 10 % of the time.
    plan = training.plan_schedule(
        epochs=150,
        num_train_slices=1700,
        num_val_slices=200,
        batch_size=24,
        budget_seconds=3600,
        seconds_per_iteration=8.0,
        seconds_per_val_slice=0.5,
        seconds_per_checkpoint=1.0,
    )
    assert 3 <= plan.epochs < 150 and plan.iterations_per_epoch >= 1
    epoch_time = plan.iterations_per_epoch * 8.0 + plan.val_slices * 0.5 + 1.0
    assert plan.epochs * epoch_time <= 3600
    assert plan.val_slices * 0.5 <= 0.2 * epoch_time
    # A generous budget keeps the 150 epochs and lengthens them to use it.
    plan = training.plan_schedule(
        epochs=150,
        num_train_slices=1700,
        num_val_slices=200,
        batch_size=24,
        budget_seconds=1e6,
        seconds_per_iteration=0.1,
        seconds_per_val_slice=0.01,
    )
    assert plan.epochs == 150 and plan.iterations_per_epoch >= math.ceil(1700 / 24)
    # A tiny budget still gives 3 epochs.
    plan = training.plan_schedule(
        epochs=150,
        num_train_slices=1700,
        num_val_slices=200,
        batch_size=24,
        budget_seconds=60,
        seconds_per_iteration=8.0,
        seconds_per_val_slice=0.5,
    )
    assert plan.epochs == 3 and plan.iterations_per_epoch >= 1
    with pytest.raises(ValueError, match="step time|seconds per iteration"):
        training.plan_schedule(epochs=3, num_train_slices=10, num_val_slices=2, batch_size=2, budget_seconds=10)


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("fpu sse2 avx avx2 fma", False),  # a 2-core AVX2 EPYC: bf16 autocast 34.3 s/step vs 4.7 s in float32
        ("fpu avx2 avx512f avx512_bf16", True),
        ("fpu avx2 amx_bf16 amx_tile", True),
        (None, None),  # no flags line: cannot tell
    ],
)
def test_cpu_has_native_bf16_reads_the_flags_line(flags, expected):
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\n" + (f"flags\t\t: {flags}\n" if flags else "")
    assert devices.cpu_has_native_bf16(text) is expected


def test_bf16_on_a_cpu_without_native_bf16_is_warned(monkeypatch, caplog):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda cpuinfo=None: False)
    with caplog.at_level("WARNING", logger=devices.logger.name):
        devices.warn_if_bf16_is_emulated(torch.device("cpu"), bf16=True)
        devices.warn_if_bf16_is_emulated(torch.device("cpu"), bf16=False)
    assert len(caplog.records) == 1 and "drop --bf16" in caplog.records[0].getMessage()
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    caplog.clear()
    devices.warn_if_bf16_is_emulated(torch.device("cpu"), bf16=True)
    assert not caplog.records


def test_sample_batch_crops_pads_and_is_reproducible():
    rng = np.random.default_rng(0)
    slices = datasets.SliceData(
        images=[rng.normal(size=(1, 40, 70)).astype(np.float32), rng.normal(size=(1, 100, 90)).astype(np.float32)],
        labels=[rng.integers(0, 4, (40, 70)).astype(np.uint8), rng.integers(0, 4, (100, 90)).astype(np.uint8)],
        case_ids=["a", "b"],
        slice_indices=[0, 0],
    )
    x1, y1 = training.sample_batch(slices, [0, 1, 0, 1], 64, torch.Generator().manual_seed(3))
    x2, y2 = training.sample_batch(slices, [0, 1, 0, 1], 64, torch.Generator().manual_seed(3))
    assert x1.shape == (4, 1, 64, 64) and x1.dtype == torch.float32
    assert y1.shape == (4, 64, 64) and y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert set(y1.unique().tolist()) <= {0, 1, 2, 3}
    # Without augmentation a crop of a slice smaller than the patch holds the whole slice, zero-padded.
    x, y = training.sample_batch(slices, [0], 64, torch.Generator().manual_seed(0), training.NO_AUGMENTATION)
    assert (x[0, 0] != 0).sum() <= 40 * 64
    rows = torch.nonzero(x[0, 0].abs().sum(1)).flatten()
    assert rows.tolist() == list(range(12, 52))  # (64 - 40) / 2 rows of padding above
    image = torch.from_numpy(slices.images[0][0])
    matches = [left for left in range(70 - 64 + 1) if torch.equal(x[0, 0, 12:52], image[:, left : left + 64])]
    assert len(matches) == 1
    assert torch.equal(y[0, 12:52], torch.from_numpy(slices.labels[0][:, matches[0] : matches[0] + 64]).long())


@needs_datasets
def test_class_terminology_comes_from_dataset_json_or_the_init_model_never_the_folder_name(tmp_path, caplog):
    from AttentionMambaSegLib.package import load_model_package

    root = make_copy(tmp_path, "Hippocampus", ["hippocampus_001"], ["hippocampus_003"])
    renamed = root.rename(tmp_path / "my-hippocampus-copy")
    meta = json.loads((renamed / "dataset.json").read_text())
    meta["name"] = "copy"
    (renamed / "dataset.json").write_text(json.dumps(meta))
    info = datasets.load_dataset_info(renamed)
    with caplog.at_level("WARNING"):
        plain = training.default_classes(info, "softmax")
    assert [c["name"] for c in plain] == ["anterior", "posterior"] and all("snomed" not in c for c in plain)
    assert "add a 'label_terminology' block" in caplog.text
    bundled = load_model_package("hippocampus-msd").card.class_dicts
    assert training.default_classes(info, "softmax", bundled) == bundled  # --init-from hippocampus-msd
    meta["label_terminology"] = {
        "posterior": {"name": "posterior hippocampus", "color": [144, 238, 144], "snomed": bundled[1]["snomed"]}
    }
    (renamed / "dataset.json").write_text(json.dumps(meta))
    classes = training.default_classes(datasets.load_dataset_info(renamed), "softmax")
    assert classes[1]["snomed"]["type_modifier"]["meaning"] == "Posterior" and "snomed" not in classes[0]
    meta["label_terminology"] = {"middle": {"name": "x", "color": [1, 2, 3]}}
    (renamed / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(datasets.DatasetError, match=r"label_terminology names labels \['middle'\]"):
        datasets.load_dataset_info(renamed)


def test_model_licence_of_acdc_says_non_commercial():
    info = datasets.load_dataset_info(DATASETS / "ACDC") if DATASETS.is_dir() else None
    if info is None:
        pytest.skip("shared datasets not available")
    assert "commercial" in training.card_writer.model_licence(info)


# ---------------------------------------------------------------------------------------- real runs

TRAIN_CASES = ["patient001_frame01", "patient004_frame01"]
VAL_CASES = ["patient019_frame01"]
#: median in-plane spacing of TRAIN_CASES (1.5625 and 1.3671875 mm: the median of two is their mean)
TRAIN_SPACING = (1.46484375, 1.46484375)
TINY = dict(
    epochs=2,
    patch_size=64,
    batch_size=2,
    iterations_per_epoch=2,
    val_slices=1,
    device="cpu",
    final_evaluation=False,
    seed=1290,
)


def run_training(dataset, output, **settings):
    return training.train(training.TrainingConfig(dataset, output, **settings))


@pytest.mark.slow
@needs_datasets
def test_short_run_lowers_validation_loss(tmp_path):
    root = make_copy(tmp_path, "ACDC", TRAIN_CASES, VAL_CASES)
    out = tmp_path / "run"
    package_dir = run_training(root, out, **{**TINY, "epochs": 3, "iterations_per_epoch": 3, "lr": 2e-3})
    assert (package_dir / "model.json").exists() and (package_dir / "model.safetensors").exists()
    for name in (
        "training_log.csv",
        "training_curves.png",
        "checkpoint_latest.pt",
        "checkpoint_best.pt",
        "training_config.json",
    ):
        assert (out / name).exists(), name
    config = json.loads((package_dir / "model.json").read_text())
    assert config["num_classes"] == 4 and config["activation"] == "softmax"
    assert config["target_spacing"] == pytest.approx(TRAIN_SPACING) and config["patch_size"] == [64, 64]
    assert "commercial" in config["training"]["licence"]
    # 3 epochs: T_max is the whole run; an unmeasured model segments without flips on a CPU by default
    assert config["training"]["schedule"].startswith("cosine annealing per epoch, T_max = epochs = 3.00 (one fall)")
    from AttentionMambaSegLib.package import load_model_package

    assert load_model_package(package_dir).card.speed_modes.default_mode("cpu") == "fast"
    # Validation loss of the trained network vs the untrained one (same seed) on the same slices.
    info = datasets.load_dataset_info(root)
    val = datasets.load_slices(info, VAL_CASES, tuple(TRAIN_SPACING), "LPS", {"type": "zscore"}).subset([4, 6])
    torch.manual_seed(1290)
    untrained = training.new_network(1, 4)
    trained = training.new_network(1, 4)
    trained.load_state_dict(torch.load(out / "checkpoint_latest.pt", weights_only=False)["model"])
    before = training.validate(untrained, val, 4, 64, torch.device("cpu"))["loss"]
    after = training.validate(trained, val, 4, 64, torch.device("cpu"))["loss"]
    assert after < before


@pytest.mark.slow
@needs_datasets
def test_resume_is_bit_identical(tmp_path):
    # Hippocampus: small slices, so validation is cheap.
    root = make_copy(tmp_path, "Hippocampus", ["hippocampus_001", "hippocampus_003"], ["hippocampus_004"])
    run_training(root, tmp_path / "whole", **TINY)
    assert run_training(root, tmp_path / "split", **TINY, stop_after_epoch=1) is None
    assert not (tmp_path / "split" / "model").exists()
    run_training(root, tmp_path / "split", **{**TINY, "resume": True})
    a = torch.load(tmp_path / "whole" / "checkpoint_latest.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoint_latest.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    with pytest.raises(FileExistsError, match="resume"):
        run_training(root, tmp_path / "whole", **TINY)


@pytest.mark.slow
@needs_datasets
def test_init_from_keeps_the_models_target_spacing(tmp_path):
    # hippocampus-msd is bundled at 0.5 mm; the data's median is 1 mm. A continuation without
    # --target-spacing must keep 0.5 mm (every structure keeps its size in pixels); an explicit one wins.
    root = make_copy(tmp_path, "Hippocampus", ["hippocampus_001", "hippocampus_003"], ["hippocampus_004"])
    info = dataset_validation.validate_dataset(root)
    assert datasets.target_inplane_spacing(info, ["hippocampus_001", "hippocampus_003"], "LPS") == (1.0, 1.0)
    tiny = {**TINY, "epochs": 1, "iterations_per_epoch": 1}
    package_dir = run_training(root, tmp_path / "kept", **tiny, init_from="hippocampus-msd")
    config = json.loads((package_dir / "model.json").read_text())
    assert config["target_spacing"] == [0.5, 0.5]
    # The lineage: the bundled package it started from, and that package's own training appended last.
    from AttentionMambaSegLib.package import load_model_package

    source = load_model_package("hippocampus-msd").card
    assert config["training"]["initialised_from"] == {
        "id": "hippocampus-msd",
        "version": source.version,
        "sha256": source.sha256,
    }
    last = config["training"]["earlier_training"][-1]
    assert last["version"] == source.version and last["command"] == source.training["command"]
    assert last["val_mean_dice"] == source.metrics["val"]["mean_dice"]
    assert len(config["training"]["earlier_training"]) == len(source.training.get("earlier_training", [])) + 1
    package_dir = run_training(
        root, tmp_path / "asked", **tiny, init_from="hippocampus-msd", target_spacing=(0.75, 0.75)
    )
    assert json.loads((package_dir / "model.json").read_text())["target_spacing"] == [0.75, 0.75]


def test_training_lineage_appends_the_sources_training():
    from types import SimpleNamespace

    first = {"version": "1.0.0", "command": "attention-mamba-seg train A", "val_mean_dice": 0.7}
    source = SimpleNamespace(
        card=SimpleNamespace(
            id="m",
            version="1.1.0",
            sha256="ab" * 32,
            patch_size=(96, 96),
            target_spacing=(0.5, 0.5),
            training={
                "command": "attention-mamba-seg train B",
                "epochs": 9,
                "epochs_completed": 6,
                "iterations_per_epoch": 10,
                "batch_size": 8,
                "time": "3.0 min",
                "selected_epoch": 5,
                "earlier_training": [first],
            },
            metrics={"val": {"mean_dice": 0.8, "cases": 39}},
        )
    )
    lineage = training.training_lineage(source)
    assert lineage["initialised_from"] == {"id": "m", "version": "1.1.0", "sha256": "ab" * 32}
    assert lineage["earlier_training"] == [
        first,
        {
            "version": "1.1.0",
            "sha256": "ab" * 32,
            "command": "attention-mamba-seg train B",
            "epochs": 6,
            "iterations_per_epoch": 10,
            "batch_size": 8,
            "patch_size": [96, 96],
            "target_spacing": [0.5, 0.5],
            "time": "3.0 min",
            "selected_epoch": 5,
            "val_mean_dice": 0.8,
            "val_cases": 39,
        },
    ]
    assert source.card.training["earlier_training"] == [first]  # the source is not modified


def test_init_from_copies_the_packages_weights_and_checks_channels():
    from AttentionMambaSegLib.package import load_model_package

    package = load_model_package("hippocampus-msd")
    expected = package.build_network("cpu").state_dict()
    network = training.new_network(1, 3, init_package=package)
    for name, tensor in network.state_dict().items():
        assert torch.equal(tensor, expected[name].float()), name
    with pytest.raises(
        ValueError, match=r"hippocampus-msd .*1 input channel\(s\) and 3 output\(s\); this dataset needs 3 and 3"
    ):
        training.new_network(3, 3, init_package=package)


# ------------------------------------------------------------------ regressions from the break report
def test_existing_run_without_resume_is_a_clear_error(tmp_path, capsys):
    from AttentionMambaSegLib import cli

    out = tmp_path / "run"
    out.mkdir()
    training.checkpoint.save_checkpoint({"model": {}}, out / training.CHECKPOINT_LATEST)
    with pytest.raises(FileExistsError, match=r"--resume.*--output"):
        run_training(tmp_path / "dataset", out)
    assert cli.main(["train", str(tmp_path / "dataset"), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--resume" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "content, message", [(b"", r"is empty \(0 bytes\)"), (b"garbage" * 10, "corrupt"), (None, "corrupt or truncated")]
)
def test_resume_from_a_bad_checkpoint_is_a_clear_error(tmp_path, content, message):
    out = tmp_path / "run"
    out.mkdir()
    path = out / training.CHECKPOINT_LATEST
    if content is None:  # a truncated real checkpoint
        training.checkpoint.save_checkpoint({"model": {"w": torch.zeros(1000)}, "epoch": 1}, path)
        content = path.read_bytes()[:600]
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        run_training(tmp_path / "dataset", out, resume=True)


def test_checkpoints_load_with_weights_only(tmp_path):
    path = tmp_path / "c.pt"
    state = {
        "model": torch.nn.Linear(2, 2).state_dict(),
        "epoch": np.int64(3),
        "best": {"mean_dice": np.float32(0.5)},
        "history": [{"val_dice_1": np.float64(0.25)}],
        "rng": {"torch": torch.get_rng_state()},
        "settings": {"augmentation": {"scale": (0.7, 1.4)}, "dataset": tmp_path},
    }
    training.checkpoint.save_checkpoint(state, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)  # would raise on numpy / Path objects
    assert loaded["epoch"] == 3 and loaded["best"]["mean_dice"] == 0.5
    assert loaded["settings"]["augmentation"]["scale"] == (0.7, 1.4)
    assert loaded["settings"]["dataset"] == str(tmp_path)
    assert training.load_checkpoint(path)["history"][0]["val_dice_1"] == 0.25


# ------------------------------------------------------------------------------ the one list of settings
def test_config_is_the_one_list_the_cli_builds_and_errors_name_the_flag_or_the_field(tmp_path):
    from dataclasses import fields

    from AttentionMambaSegLib.cli import build_parser

    args = build_parser().parse_args(
        ["train", str(tmp_path), "--output", str(tmp_path / "run"), "--patch", "96", "--augmentation", "site"]
    )
    names = {f.name for f in fields(training.TrainingConfig)}
    assert names - {"command"} <= set(vars(args)), "every setting has a train flag"
    config = training.TrainingConfig(**{n: getattr(args, n) for n in names if hasattr(args, n)})
    assert config.patch_size == 96 and config.augmentation == training.SITE
    assert training.TrainingConfig.from_dict(config.to_dict()) == config
    with pytest.raises(training.ConfigError) as e:
        training.TrainingConfig(tmp_path, tmp_path / "run", patch_size=100)
    assert str(e.value) == "patch_size must be a positive multiple of 32, got 100"
    assert e.value.for_cli() == "--patch must be a positive multiple of 32, got 100"
    changed = config.recipe_differences(
        training.TrainingConfig(tmp_path, tmp_path / "other", patch_size=96, augmentation="site", device="cuda")
    )
    assert changed == {}  # output and device are run controls, not the recipe


@needs_datasets
def test_a_budget_spent_before_training_fails_fast_and_leaves_no_run_folder(tmp_path):
    root = make_copy(tmp_path, "Hippocampus", ["hippocampus_001", "hippocampus_003"], ["hippocampus_004"])
    out = tmp_path / "run"
    with pytest.raises(training.ConfigError, match="was spent before training began"):
        run_training(root, out, **{**TINY, "time_budget_minutes": 1e-4})
    assert not out.exists()
