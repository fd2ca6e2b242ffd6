"""Tests of AttentionMambaSegLib.package: save/load round trip (float16 safetensors, SHA-256), validation
of model.json, import from folders and zips into the user cache, removal, bundled models."""

from __future__ import annotations

import json
import os
import zipfile

import pytest
import torch
from safetensors import safe_open

from _inference_helpers import TinyConvNet, make_config, make_package
from AttentionMambaSegLib import model_store, package as pkg

BUNDLED_IDS = ("cardiac-acdc", "hippocampus-msd", "skin-lesion-isic", "skin-lesion-ph2")


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    cache = tmp_path / "user-cache" / "models"
    monkeypatch.setenv("ATTENTION_MAMBA_SEG_MODELS_DIR", str(cache))
    return cache


def test_save_load_roundtrip_float16(tmp_path):
    config = make_config("roundtrip")
    net = TinyConvNet(1, 4, seed=3)
    folder = pkg.save_model_package(net, config, tmp_path / "roundtrip")
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp folder renamed away
    saved = json.loads((folder / "model.json").read_text())
    assert saved["sha256"] == pkg.sha256_of_file(folder / "model.safetensors")
    assert saved["weights_dtype"] == "float16"
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    package = pkg.load_model_package(folder)
    assert (package.id, package.in_channels, package.num_classes) == ("roundtrip", 1, 4)
    assert [c["label_value"] for c in package.classes] == [1, 2, 3]  # background entry dropped
    built = package.build_network("cpu")
    assert not built.training
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = net.half().float()(x)  # the float16-rounded weights
    torch.testing.assert_close(built(x), expected, rtol=0, atol=0)


def test_save_replaces_existing_package(tmp_path):
    folder = tmp_path / "m"
    pkg.save_model_package(TinyConvNet(1, 4, seed=1), make_config("m"), folder)
    first = pkg.sha256_of_file(folder / "model.safetensors")
    pkg.save_model_package(TinyConvNet(1, 4, seed=2), {**make_config("m"), "version": "2"}, folder)
    assert pkg.sha256_of_file(folder / "model.safetensors") != first
    assert pkg.load_model_package(folder).version == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_corrupted_weights_fail_sha256(tmp_path):
    package = make_package(tmp_path / "m")
    data = bytearray(package.weights_path.read_bytes())
    data[-1] ^= 0xFF
    package.weights_path.write_bytes(bytes(data))
    with pytest.raises(pkg.ModelIntegrityError, match="SHA-256"):
        package.build_network("cpu")
    package.weights_path.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        package.verify()


def test_missing_sha256_is_refused(tmp_path):
    package = make_package(tmp_path / "m")
    config = json.loads((package.path / "model.json").read_text())
    del config["sha256"]
    (package.path / "model.json").write_text(json.dumps(config))
    with pytest.raises(pkg.ModelIntegrityError, match="no 'sha256'"):
        pkg.load_model_package(package.path).build_network()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"patch_size": [64, 60]}, "patch_size"),
        ({"inference_patch_size": [256, 250]}, "inference_patch_size"),
        ({"inference_patch_size": 256}, "inference_patch_size"),
        ({"postprocessing": {"largest_component": [0]}}, "postprocessing"),
        ({"postprocessing": {"fill_holes": True}}, "postprocessing"),
        ({"activation": "relu"}, "activation"),
        ({"activation": "sigmoid"}, "num_classes"),  # sigmoid needs K = 1
        ({"target_spacing": [1.0]}, "target_spacing"),
        ({"normalization": {"type": "minmax"}}, "normalization"),
        ({"axes_code": "LPR"}, "axes code"),
        ({"id": "../evil"}, "'id'"),
        ({"slice_axis_rule": "numpy-first"}, "slice_axis_rule"),
        ({"classes": [{"label_value": 7, "name": "x", "color": [1, 2, 3]}]}, "label_value"),
        ({"classes": [{"label_value": 1, "name": "x", "color": [1, 2, 300]}]}, "color"),
    ],
)
def test_validate_config_errors(change, message):
    with pytest.raises(ValueError, match=message):
        pkg.validate_config({**make_config(), **change})


def test_validate_config_missing_field_and_defaults():
    config = make_config()
    del config["patch_size"]
    with pytest.raises(ValueError, match="'patch_size' is missing"):
        pkg.validate_config(config)
    minimal = make_config()
    for key in ("axes_code", "slice_axis_rule", "target_spacing", "architecture"):
        minimal.pop(key)
    filled = pkg.validate_config(minimal)
    assert (filled["axes_code"], filled["slice_axis_rule"], filled["target_spacing"], filled["architecture"]) == (
        "LPS",
        "largest-spacing-else-z",
        None,
        "AttentionMamba",
    )
    assert filled["inference_patch_size"] == filled["patch_size"] == [64, 64]


def test_invalid_json_is_a_clear_error(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        pkg.load_model_package(tmp_path / "m")


def test_import_folder_then_load_by_id(tmp_path, user_cache):
    source = make_package(tmp_path / "src", model_id="imported-one")
    imported = model_store.import_model_package(source.path)
    assert imported.path == user_cache / "imported-one"
    assert pkg.load_model_package("imported-one").path == imported.path
    assert "imported-one" in [m.id for m in pkg.list_models()]
    with pytest.raises(FileNotFoundError, match="imported-one"):  # the message lists available ids
        pkg.load_model_package("no-such-model")
    assert model_store.remove_imported_models() == ["imported-one"]
    assert not (user_cache / "imported-one").exists()


def test_import_zip_and_reimport_new_version(tmp_path, user_cache):
    source = make_package(tmp_path / "src", model_id="zipped")
    archive = tmp_path / "zipped.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("model.json", "model.safetensors"):
            z.write(source.path / name, f"zipped/{name}")
    imported = model_store.import_model_package(archive)
    assert imported.id == "zipped" and imported.version == "0.0.1"
    imported.verify()
    newer = pkg.save_model_package(
        TinyConvNet(1, 4, seed=9), {**make_config("zipped"), "version": "0.0.2"}, tmp_path / "src2"
    )
    assert model_store.import_model_package(newer).version == "0.0.2"
    assert sorted(p.name for p in user_cache.iterdir()) == ["zipped"]  # no leftovers
    with pytest.raises(ValueError, match="zip archive: import it first"):
        pkg.load_model_package(archive)


def test_import_corrupted_package_copies_nothing(tmp_path, user_cache):
    source = make_package(tmp_path / "src", model_id="bad")
    with open(source.weights_path, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(pkg.ModelIntegrityError, match="SHA-256"):
        model_store.import_model_package(source.path)
    assert not (user_cache / "bad").exists()
    assert [p.name for p in user_cache.iterdir()] == []


def test_import_refuses_unsafe_zip(tmp_path, user_cache):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../outside.txt", "x")
    with pytest.raises(ValueError, match="unsafe member"):
        model_store.import_model_package(archive)
    assert not (tmp_path / "user-cache" / "outside.txt").exists()


def test_unknown_architecture(tmp_path):
    with pytest.raises(ValueError, match="unknown architecture"):
        make_package(tmp_path / "m", architecture="NoSuchNet").build_network()


def _attention_mamba():
    from AttentionMambaSegLib.model import AttentionMamba

    return AttentionMamba


def test_attention_mamba_package_roundtrip(tmp_path):
    AttentionMamba = _attention_mamba()
    torch.manual_seed(0)
    net = AttentionMamba(1, 4).eval()
    config = make_config("am-test", architecture="AttentionMamba")
    package = pkg.load_model_package(pkg.save_model_package(net, config, tmp_path / "am"))
    built = package.build_network("cpu")
    x = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out = built(x)
        ref = net.half().float()(x)
    assert out.shape == (1, 4, 64, 64)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model_id", BUNDLED_IDS)
def test_bundled_models_are_valid(model_id):
    folder = pkg.bundled_models_dir() / model_id
    assert (folder / "model.json").is_file(), f"bundled model {model_id} is missing from {folder}"
    package = pkg.load_model_package(model_id)
    package.verify()
    assert package.id == model_id
    assert package.card.weights_dtype == "float16"
    expected = {
        "cardiac-acdc": (1, 4),
        "hippocampus-msd": (1, 3),
        "skin-lesion-isic": (3, 1),
        "skin-lesion-ph2": (3, 1),
    }[model_id]
    assert (package.in_channels, package.num_classes) == expected
    for c in package.classes:
        assert c["name"] and len(c["color"]) == 3 and "snomed" in c
    assert "licence" in package.card.training


def test_describe_lists_the_lineage_one_line_per_step(tmp_path):
    config = make_config()
    net = TinyConvNet(config["in_channels"], config["num_classes"], **config["architecture_kwargs"])
    config["training"] = {
        "command": "attention-mamba-seg train B",
        "earlier_training": [
            {
                "version": "1.0.0",
                "sha256": "22b8dadb" + "0" * 56,
                "time": "55.0 min",
                "epochs": 9,
                "iterations_per_epoch": 17,
                "batch_size": 8,
                "patch_size": [128, 128],
                "target_spacing": [1.5625, 1.5625],
                "val_mean_dice": 0.68531,
                "val_cases": 4,
            },
            {"version": "1.1.0", "command": "attention-mamba-seg train A"},  # a step with little recorded
        ],
    }
    pkg.save_model_package(net, config, tmp_path / "m")
    text = pkg.load_model_package(tmp_path / "m").describe()
    assert (
        "  training      oldest first; each step's weights started the next\n"
        "    1.0.0    22b8dadb 55.0 min: 9 epochs x 17 steps x 8 crops 128x128 at 1.5625x1.5625 mm; "
        "val mean Dice 0.6853 (4 cases)\n"
        "    1.1.0    -        ?: ? epochs x ? steps x ? crops ? at ? mm; val mean Dice ? (? cases)\n"
    ) in text
    assert "  command       attention-mamba-seg train B" in text and "earlier_training" not in text


# ------------------------------------------------------------------ regressions from the break report
def test_save_refuses_to_replace_a_folder_that_is_not_a_package(tmp_path):
    folder = tmp_path / "my results"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a model package"):
        make_package(folder)
    assert (folder / "notes.txt").read_text() == "keep me"
    make_package(tmp_path / "empty-ok")  # a new folder is fine, and so is replacing a package
    make_package(tmp_path / "empty-ok")


def test_saved_weights_are_world_readable(tmp_path):
    package = make_package(tmp_path / "m")
    umask = os.umask(0)
    os.umask(umask)
    assert package.weights_path.stat().st_mode & 0o777 == 0o644 & ~umask


def test_corrupt_weights_with_matching_sha256_are_a_clear_error(tmp_path):
    package = make_package(tmp_path / "m")
    package.weights_path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    config = json.loads((package.path / "model.json").read_text())
    config["sha256"] = pkg.sha256_of_file(package.weights_path)
    (package.path / "model.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model.safetensors could not be read as safetensors"):
        pkg.load_model_package(package.path).build_network("cpu")


@pytest.mark.parametrize(
    "kwargs, message", [([1, 2], "architecture_kwargs"), ({"nope": 1}, "cannot build the 'TinyConvNet' network")]
)
def test_bad_architecture_kwargs_are_a_clear_error(tmp_path, kwargs, message):
    package = make_package(tmp_path / "m")
    config = json.loads((package.path / "model.json").read_text())
    config["architecture_kwargs"] = kwargs
    (package.path / "model.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        pkg.load_model_package(package.path).build_network("cpu")


def test_non_utf8_model_json_names_the_file(tmp_path):
    package = make_package(tmp_path / "m")
    (package.path / "model.json").write_bytes('{"id": "caf\u00e9"}'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"model\.json is not UTF-8"):
        pkg.load_model_package(package.path)


def test_model_json_or_weights_path_means_its_folder(tmp_path):
    package = make_package(tmp_path / "m")
    assert pkg.load_model_package(package.path / "model.json").path == package.path
    assert pkg.load_model_package(package.path / "model.safetensors").path == package.path


@pytest.mark.parametrize(
    "change, message",
    [
        ({"classes": [{"label_value": 1, "name": "a", "color": [1, 2, 3]}]}, r"missing \[2, 3\]"),
        ({"normalization": {"type": "ct"}}, "'clip'"),
        ({"normalization": {"type": "ct", "clip": [100, -100], "mean": 0, "std": 1}}, "lo < hi"),
        ({"normalization": {"type": "ct", "clip": [-100, 100], "mean": 0, "std": 0}}, "std"),
        ({"target_spacing": [True, 1.0]}, "target_spacing"),
        ({"target_spacing": [float("nan"), 1.0]}, "target_spacing"),
        ({"target_spacing": [float("inf"), 1.0]}, "target_spacing"),
        ({"target_spacing": [-1.0, 1.0]}, "target_spacing"),
    ],
)
def test_validate_config_rejects_more_bad_values(change, message):
    with pytest.raises(ValueError, match=message):
        pkg.validate_config({**make_config(), **change})


def test_remove_imported_models_deletes_only_packages(tmp_path, user_cache):
    model_store.import_model_package(make_package(tmp_path / "m", model_id="to-remove").path)
    (user_cache / "other").mkdir()
    (user_cache / "other" / "data.bin").write_bytes(b"x")
    assert model_store.remove_imported_models() == ["to-remove"]
    assert (user_cache / "other" / "data.bin").exists()


def test_load_model_package_takes_an_id_a_folder_a_model_json_or_a_package_and_refuses_anything_else():
    by_id = pkg.load_model_package("cardiac-acdc")  # bundled: a missing model fails the test
    assert pkg.load_model_package(by_id) is by_id
    assert pkg.load_model_package(by_id.path).card == by_id.card
    assert pkg.load_model_package(by_id.path / pkg.CONFIG_NAME).card == by_id.card
    with pytest.raises(TypeError, match="model id, a model folder or a ModelPackage; got int"):
        pkg.load_model_package(3)
