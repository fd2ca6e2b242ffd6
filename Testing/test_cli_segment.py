"""Tests of the ``attention-mamba-seg`` subcommands owned by inference: segment, models, doctor, demo.

The CLI runs in-process (``cli.main``) with small fixed-seed packages (TinyConvNet), so every test is
a real end-to-end run: read -> predict -> write, checked by reading the outputs back."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from _inference_helpers import ACDC_IMAGE, DICOM_DIR, PH2_IMAGE, make_package
from AttentionMambaSegLib import cli, images, inference, model_store, package as pkg
from AttentionMambaSegLib.inference import InferenceSettings
from conftest import require


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTENTION_MAMBA_SEG_MODELS_DIR", str(tmp_path / "user-cache"))


@pytest.fixture
def small_acdc(tmp_path):
    """A 3-slice crop of the ACDC validation volume, written to a path with spaces and accents."""
    require(ACDC_IMAGE)
    folder = tmp_path / "données patient"
    folder.mkdir()
    path = folder / "cœur 019.nii.gz"
    sitk.WriteImage(images.read_image(ACDC_IMAGE)[:, :, 4:7], str(path))
    return path


@pytest.fixture
def model_dir(tmp_path):
    return make_package(tmp_path / "models" / "tiny-cardiac", model_id="tiny-cardiac", target_spacing=(2.5, 2.5)).path


def run_cli(*argv) -> int:
    return cli.main([str(a) for a in argv])


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        run_cli("--help")
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("segment", "models", "doctor", "demo"):
        assert name in out


def test_console_module_runs():
    result = subprocess.run(
        [sys.executable, "-m", "AttentionMambaSegLib.cli", "segment", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "--no-tta" in result.stdout and "--batch-size" in result.stdout


def test_segment_to_seg_nrrd_non_ascii_paths(tmp_path, small_acdc, model_dir, capsys):
    out = small_acdc.parent / "résultat final.seg.nrrd"
    assert run_cli("segment", small_acdc, "-o", out, "--model", model_dir, "--device", "cpu", "--no-tta") == 0
    assert str(out) in capsys.readouterr().out
    seg = slicerio.read_segmentation(str(out))
    assert [s["name"] for s in seg["segments"]] == ["class 1", "class 2", "class 3"]
    assert [s["labelValue"] for s in seg["segments"]] == [1, 2, 3]
    image = images.read_image(small_acdc)
    assert seg["voxels"].shape == image.GetSize()
    back = sitk.ReadImage(str(out))
    assert back.GetSpacing() == pytest.approx(image.GetSpacing())
    assert back.GetOrigin() == pytest.approx(image.GetOrigin())
    # Same labels as the library call.
    expected = inference.predict_volume(
        image, pkg.load_model_package(model_dir), InferenceSettings(device="cpu", tta=False)
    )
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(expected))
    assert sorted(p.name for p in small_acdc.parent.iterdir()) == [
        "cœur 019.nii.gz",
        "résultat final.report.json",
        "résultat final.seg.nrrd",
    ]
    report = json.loads((small_acdc.parent / "résultat final.report.json").read_text(encoding="utf-8"))
    assert report["output"] == str(out) and report["input"] == str(small_acdc)
    counts = np.bincount(sitk.GetArrayFromImage(back).ravel(), minlength=4)
    assert [s["voxels"] for s in report["segments"]] == counts[1:4].tolist()
    assert [s["label_value"] for s in report["segments"]] == [1, 2, 3]


def test_segment_many_inputs_into_folder(tmp_path, small_acdc, model_dir):
    require(DICOM_DIR)
    dicom = tmp_path / "brain series"
    shutil.copytree(DICOM_DIR, dicom)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code = run_cli(
        "segment",
        small_acdc,
        dicom,
        "-o",
        out_dir,
        "--model",
        model_dir,
        "--device",
        "cpu",
        "--no-tta",
        "--batch-size",
        "8",
        "--output-format",
        "nii.gz",
    )
    assert code == 0
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "brain series.nii.gz",
        "brain series.report.json",
        "cœur 019.nii.gz",
        "cœur 019.report.json",
        "summary.csv",
    ]
    brain = sitk.ReadImage(str(out_dir / "brain series.nii.gz"))
    ref = images.read_image(DICOM_DIR)
    assert brain.GetSize() == ref.GetSize()
    np.testing.assert_allclose(brain.GetDirection(), ref.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(brain.GetOrigin(), ref.GetOrigin(), atol=1e-3)


def test_segment_png_2d(tmp_path):
    require(PH2_IMAGE)
    model = make_package(
        tmp_path / "rgb", model_id="tiny-skin", in_channels=3, num_classes=1, activation="sigmoid", target_spacing=None
    )
    out = tmp_path / "lesion.png"
    assert run_cli("segment", PH2_IMAGE, "-o", out, "--model", model.path, "--device", "cpu", "--no-tta") == 0
    mask = sitk.ReadImage(str(out))
    assert mask.GetSize() == images.read_image(PH2_IMAGE).GetSize()
    assert set(np.unique(sitk.GetArrayFromImage(mask))) <= {0, 255}  # one class: white on black


def test_many_inputs_need_a_folder(tmp_path, small_acdc, model_dir, capsys):
    code = run_cli("segment", small_acdc, small_acdc, "-o", tmp_path / "x.seg.nrrd", "--model", model_dir)
    assert code == 1
    assert "must be a folder" in capsys.readouterr().err
    assert not (tmp_path / "x.seg.nrrd").exists()


def test_unwritable_output_folder_fails_before_inference(tmp_path, small_acdc, model_dir, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    calls = []
    monkeypatch.setattr(inference.Predictor, "segment", lambda *a, **k: calls.append(1))
    real_access = images.os.access
    monkeypatch.setattr(images.os, "access", lambda p, m: False if str(p) == str(locked) else real_access(p, m))
    assert run_cli("segment", small_acdc, "-o", locked / "a.seg.nrrd", "--model", model_dir) == 1
    assert "not writable" in capsys.readouterr().err
    assert calls == [] and list(locked.iterdir()) == []
    assert run_cli("segment", small_acdc, "-o", locked / "missing" / "a.nii.gz", "--model", model_dir) == 1
    assert "cannot be created" in capsys.readouterr().err
    assert calls == [] and list(locked.iterdir()) == []


def test_ctrl_c_leaves_no_partial_file(tmp_path, small_acdc, model_dir, capsys, monkeypatch):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    real = inference.Predictor.segment

    def interrupted(self, image, progress=None, cancel=None, roi=None):
        def progress_then_interrupt(done, total):
            if done > 0:
                raise KeyboardInterrupt

        return real(self, image, progress=progress_then_interrupt, cancel=cancel, roi=roi)

    monkeypatch.setattr(inference.Predictor, "segment", interrupted)
    assert (
        run_cli(
            "segment",
            small_acdc,
            "-o",
            out_dir / "a.seg.nrrd",
            "--model",
            model_dir,
            "--device",
            "cpu",
            "--batch-size",
            "1",
            "--no-tta",
        )
        == 130
    )
    assert "Interrupted" in capsys.readouterr().err
    assert list(out_dir.iterdir()) == []
    # Interrupted while writing: the temporary file is removed too.
    monkeypatch.setattr(inference.Predictor, "segment", real)

    def write_then_interrupt(file, segmentation, **kwargs):
        open(file, "wb").write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(slicerio, "write_segmentation", write_then_interrupt)
    assert (
        run_cli(
            "segment", small_acdc, "-o", out_dir / "a.seg.nrrd", "--model", model_dir, "--device", "cpu", "--no-tta"
        )
        == 130
    )
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("kind", ["constant", "nan", "4d", "missing", "corrupt-model", "rgb"])
def test_bad_inputs_give_clear_errors_and_no_file(tmp_path, model_dir, capsys, kind):
    out = tmp_path / "out.seg.nrrd"
    model = model_dir
    image = tmp_path / "in.mha"  # (ITK's NIfTI I/O turns NaN into 0)
    expected = {
        "constant": "constant",
        "nan": "NaN or infinite",
        "4d": "4D",
        "missing": "does not exist",
        "corrupt-model": "SHA-256",
        "rgb": "expects greyscale",
    }[kind]
    arr = np.random.default_rng(0).normal(size=(2, 32, 32)).astype(np.float32)
    if kind == "constant":
        arr[:] = 0
    if kind == "nan":
        arr[0, 0, 0] = np.nan
    if kind == "4d":
        sitk.WriteImage(sitk.Image([8, 8, 2, 2], sitk.sitkFloat32), str(image))
    elif kind == "rgb":
        require(PH2_IMAGE)
        image = PH2_IMAGE
        out = tmp_path / "out.png"
    elif kind != "missing":
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(image))
    if kind == "corrupt-model":
        model = tmp_path / "corrupt"
        shutil.copytree(model_dir, model)
        (model / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes()[:-8] + b"\0" * 8)
    assert run_cli("segment", image, "-o", out, "--model", model, "--device", "cpu") == 1
    assert expected in capsys.readouterr().err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]


def test_models_list_info_import(tmp_path, model_dir, capsys):
    assert run_cli("models", "import", model_dir) == 0
    assert "Imported model 'tiny-cardiac'" in capsys.readouterr().out
    assert run_cli("models", "list") == 0
    listing = capsys.readouterr().out
    assert "tiny-cardiac" in listing and "imported" in listing
    assert run_cli("models", "info", "tiny-cardiac", "--verify") == 0
    info = capsys.readouterr().out
    assert "class 3" in info and "SHA-256 verified" in info and "2D slices at 2.5 x 2.5 mm" in info
    assert run_cli("models", "info", "tiny-cardiac", "--json") == 0
    assert json.loads(capsys.readouterr().out)["target_spacing"] == [2.5, 2.5]
    assert run_cli("models", "info", "nope") == 1
    assert "No model with id 'nope'" in capsys.readouterr().err
    assert run_cli("models", "remove-imported") == 0
    assert "tiny-cardiac" in capsys.readouterr().out
    assert "tiny-cardiac" not in [m.id for m in pkg.list_models()]


def test_doctor_reports_device(capsys):
    assert run_cli("doctor", "--device", "cpu") == 0
    out = capsys.readouterr().out
    for key in ("python", "torch", "numba", "mamba-ssm", "device"):
        assert key in out
    assert "cpu" in out


def test_demo_pipeline_with_a_stand_in_model(tmp_path, model_dir, capsys):
    # The demo normally uses the bundled cardiac-acdc model; the pipeline is checked with a tiny one.
    out = tmp_path / "demo out"
    assert run_cli("demo", "--output-dir", out, "--model", model_dir, "--device", "cpu", "--no-tta") == 0
    text = capsys.readouterr().out
    assert "Dice class 1" in text
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "patient019_frame01.report.json",
        "patient019_frame01.seg.nrrd",
        "patient019_frame01_labels.nii.gz",
        "patient019_frame01_montage.png",
    ]
    report = json.loads((out / "patient019_frame01.report.json").read_text(encoding="utf-8"))
    assert [s["label_value"] for s in report["segments"]] == [1, 2, 3] and "confidence" in text
    seg = slicerio.read_segmentation(str(out / "patient019_frame01.seg.nrrd"))
    assert seg["voxels"].shape == (216, 256, 11)


@pytest.mark.slow
def test_demo_with_bundled_model(tmp_path, capsys):
    pkg.load_model_package("cardiac-acdc")  # a missing bundled model fails here
    assert run_cli("demo", "--output-dir", tmp_path / "demo", "--device", "cpu", "--no-tta") == 0
    text = capsys.readouterr().out
    scores = [
        float(re.search(r" (\d\.\d{3}) ", line).group(1))
        for line in text.splitlines()
        if line.strip().startswith("Dice")
    ]
    # RV, MYO, LV on a validation case; measured with the shipped model 1.5.0 in its CPU default mode
    # without flips (one window per slice, foreground crop): 0.958, 0.916, 0.982; sliding windows without
    # flips: 0.956, 0.920, 0.987
    assert len(scores) == 3 and min(scores) > 0.88 and scores[2] > 0.95, text


# ------------------------------------------------------------------ regressions from the break report
def _tiny_volume(path, size=(24, 24, 3), spacing=(2.5, 2.5, 8.0)):
    arr = np.random.default_rng(1).normal(size=size[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def test_segment_refuses_to_overwrite_an_output_unless_asked(tmp_path, model_dir, capsys, monkeypatch):
    image = _tiny_volume(tmp_path / "in.nii.gz")
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"precious")
    calls = []
    monkeypatch.setattr(
        pkg.ModelPackage,
        "build_network",
        lambda self, device="cpu": calls.append(1) or pytest.fail("inference started"),
    )
    assert run_cli("segment", image, "-o", out, "--model", model_dir, "--device", "cpu") == 1
    err = capsys.readouterr().err
    assert "error:" in err and str(out) in err and "--overwrite" in err and "Traceback" not in err
    assert out.read_bytes() == b"precious" and not calls
    # Folder mode: the same refusal for the file inside the folder.
    folder = tmp_path / "outs"
    folder.mkdir()
    (folder / "in.seg.nrrd").write_bytes(b"precious")
    assert run_cli("segment", image, "-o", folder, "--model", model_dir, "--device", "cpu") == 1
    assert "in.seg.nrrd" in capsys.readouterr().err and (folder / "in.seg.nrrd").read_bytes() == b"precious"
    monkeypatch.undo()
    monkeypatch.setenv("ATTENTION_MAMBA_SEG_MODELS_DIR", str(tmp_path / "user-cache"))
    assert run_cli("segment", image, "-o", out, "--model", model_dir, "--device", "cpu", "--no-tta", "--overwrite") == 0
    assert sitk.ReadImage(str(out)).GetSize() == (24, 24, 3)


def test_segment_never_overwrites_an_input_through_a_link(tmp_path, model_dir, capsys):
    image = _tiny_volume(tmp_path / "in.nii.gz")
    link = tmp_path / "link.nii.gz"
    os.link(image, link)  # hard link: a different path, the same file
    before = image.read_bytes()
    assert run_cli("segment", image, "-o", link, "--model", model_dir, "--device", "cpu", "--overwrite") == 1
    assert "overwrite the input" in capsys.readouterr().err
    assert image.read_bytes() == before


@pytest.mark.parametrize(
    "case",
    [
        "output-is-folder",
        "parent-is-file",
        "3d-to-png",
        "model-json-path",
        "model-other-file",
        "batch-size",
        "second-input-bad",
    ],
)
def test_user_errors_are_clear_and_up_front(tmp_path, model_dir, capsys, monkeypatch, case):
    image = _tiny_volume(tmp_path / "in.nii.gz")
    out, model, extra, inputs = tmp_path / "out.seg.nrrd", model_dir, [], [image]
    built = []
    original = pkg.ModelPackage.build_network
    monkeypatch.setattr(
        pkg.ModelPackage, "build_network", lambda self, device="cpu": built.append(1) or original(self, device)
    )
    expected = {
        "output-is-folder": "is an existing folder",
        "parent-is-file": "afile is a file, not a folder",
        "3d-to-png": "PNG (2D only)",
        "model-json-path": None,
        "model-other-file": "give the folder that holds model.json",
        "batch-size": "expected a positive integer, got '0'",
        "second-input-bad": "bad.mha",
    }[case]
    if case == "output-is-folder":  # the output file named in a folder is itself a folder
        out = tmp_path / "outs"
        (out / "in.seg.nrrd").mkdir(parents=True)
    elif case == "parent-is-file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out.nii.gz"
    elif case == "3d-to-png":
        out = tmp_path / "out.png"
    elif case == "model-json-path":
        model = model_dir / "model.json"
    elif case == "model-other-file":
        model = image
    elif case == "batch-size":
        extra = ["--batch-size", "0"]
    elif case == "second-input-bad":
        bad = tmp_path / "bad.mha"
        sitk.WriteImage(sitk.Image([8, 8, 2, 2], sitk.sitkFloat32), str(bad))
        out = tmp_path / "outs"
        out.mkdir()
        inputs = [image, bad]
    if case == "batch-size":
        with pytest.raises(SystemExit) as e:
            run_cli("segment", image, "-o", out, "--model", model, *extra)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert expected in err and "_positive_int" not in err
        return
    code = run_cli("segment", *inputs, "-o", out, "--model", model, "--device", "cpu", "--no-tta", *extra)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if expected is None:  # accepted: the folder holding model.json
        assert code == 0 and out.is_file()
        return
    assert code == 1 and expected in err, err
    assert not built, "the error must come before inference"
    if case == "second-input-bad":
        assert list(out.iterdir()) == []


def test_output_name_for_current_folder_is_not_hidden(tmp_path, monkeypatch):
    (tmp_path / "case7").mkdir()
    monkeypatch.chdir(tmp_path / "case7")
    out = tmp_path / "outs"
    out.mkdir()
    assert inference.output_path_for(".", out, "nii.gz") == out / "case7.nii.gz"


def test_demo_output_dir_that_is_a_file(tmp_path, model_dir, capsys):
    target = tmp_path / "afile"
    target.write_text("x")
    assert run_cli("demo", "--output-dir", target, "--model", model_dir, "--device", "cpu") == 1
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err


def test_oserror_is_reported_without_traceback(monkeypatch, capsys):
    from AttentionMambaSegLib.cli import models as models_cli

    def boom(args):
        raise IsADirectoryError(21, "Is a directory", "/some/where")

    monkeypatch.setattr(models_cli, "run_list", boom)
    assert run_cli("models", "list") == 1
    assert "error: Is a directory: /some/where" in capsys.readouterr().err


def test_remove_imported_keeps_folders_that_are_not_packages(tmp_path, model_dir, capsys):
    assert run_cli("models", "import", model_dir) == 0
    cache = model_store.imported_models_dir()
    (cache / "my notes").mkdir()
    (cache / "my notes" / "todo.txt").write_text("keep me")
    (cache / "readme.txt").write_text("keep me too")
    capsys.readouterr()
    assert run_cli("models", "remove-imported") == 0
    assert not (cache / "tiny-cardiac").exists()
    assert (cache / "my notes" / "todo.txt").read_text() == "keep me"
    assert (cache / "readme.txt").exists()


def test_reports_are_never_overwritten_silently_nor_left_without_their_output(tmp_path, small_acdc, model_dir, capsys):
    out = tmp_path / "r"
    out.mkdir()
    assert run_cli("segment", small_acdc, "-o", out / "a.nii", "--model", model_dir, "--device", "cpu", "--no-tta") == 0
    before = (out / "a.report.json").read_text(encoding="utf-8")
    # another extension, same report name: refused before any work, nothing changed
    assert run_cli("segment", small_acdc, "-o", out / "a.nii.gz", "--model", model_dir, "--device", "cpu") == 1
    assert "a.report.json already exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a.nii", "a.report.json"]
    assert (out / "a.report.json").read_text(encoding="utf-8") == before
    # a report that cannot be written: the new output is removed with it
    (out / "b.report.json").mkdir()
    assert (
        run_cli("segment", small_acdc, "-o", out / "b.nii.gz", "--model", model_dir, "--device", "cpu", "--overwrite")
        == 1
    )
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["a.nii", "a.report.json", "b.report.json"]
