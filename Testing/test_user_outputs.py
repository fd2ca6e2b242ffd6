"""What a user gets from `segment` and `evaluate` as the README shows them.

`evaluate --prediction` reads every format `segment` writes (.seg.nrrd, .nii.gz, .nrrd, .mha, .png) and
prints class names and the mean; a missing package names the extra that installs it; output folders are
created; a run with several inputs writes summary.csv and drops the channel suffix; PNG masks are 0/255
(one class) or palette PNGs (several); a photograph's areas are in pixels; `--overlay` draws the outline;
the montage has a legend and slice numbers. The CLI runs in-process (``cli.main``) except where the test
needs a fresh interpreter; photo tests use the bundled skin-lesion-ph2 model on PH2 photographs.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
import tomllib
from PIL import Image

from _inference_helpers import ACDC_IMAGE, ACDC_LABEL, PH2_IMAGE, PH2_LABEL, make_package
from AttentionMambaSegLib import cli, images, masks, package as pkg, writers
from AttentionMambaSegLib.cli.montage import write_overlay_montage
from AttentionMambaSegLib.inference.file_runner import output_path_for
from conftest import require

REPO = Path(__file__).resolve().parents[1]
PH2_MODEL = pkg.bundled_models_dir() / "skin-lesion-ph2"
LESION_COLOUR = (128, 174, 128)  # skin-lesion-ph2 model.json: the colour of "skin lesion"


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTENTION_MAMBA_SEG_MODELS_DIR", str(tmp_path / "user-cache"))


@pytest.fixture
def model_dir(tmp_path):
    return make_package(tmp_path / "models" / "tiny-cardiac", model_id="tiny-cardiac", target_spacing=(2.5, 2.5)).path


@pytest.fixture
def acdc_crop(tmp_path):
    """Slices 4..6 of the ACDC patient019 volume and of its manual labels (same grid), as case_0000.nii.gz."""
    require(ACDC_IMAGE, ACDC_LABEL)
    folder = tmp_path / "in"
    folder.mkdir()
    image, label = folder / "case_0000.nii.gz", folder / "case_label.nii.gz"
    sitk.WriteImage(images.read_image(ACDC_IMAGE)[:, :, 4:7], str(image))
    sitk.WriteImage(sitk.ReadImage(str(ACDC_LABEL))[:, :, 4:7], str(label))
    return image, label


def run_cli(*argv) -> int:
    return cli.main([str(a) for a in argv])


def table_rows(out: str) -> dict[str, list[str]]:
    """The printed table of `evaluate --prediction`: first column (class name) -> the numbers after it."""
    rows = {}
    for line in out.splitlines():
        parts = line.rsplit(None, 5)
        if len(parts) == 6 and parts[2].replace(".", "").isdigit():
            rows[parts[0].strip()] = parts[1:]
    for line in out.splitlines():
        if line.startswith("mean of classes"):
            rows["mean of classes"] = line.split()[3:]
    return rows


# ---------------------------------------------------------------------------------------- evaluate, item 2


def test_evaluate_reads_every_format_segment_writes(tmp_path, acdc_crop, model_dir, capsys):
    image, label = acdc_crop
    out = tmp_path / "out"
    for ext in (".seg.nrrd", ".nii.gz", ".nrrd", ".mha"):
        assert (
            run_cli(
                "segment",
                image,
                "-o",
                out / f"pred{ext}",
                "--model",
                model_dir,
                "--device",
                "cpu",
                "--no-tta",
                "--overwrite",
            )
            == 0
        )
    capsys.readouterr()
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(label)))
    predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "pred.nii.gz")))
    expected = {}
    for k in (1, 2, 3):
        p, r = predicted == k, reference == k
        expected[k] = 2.0 * np.logical_and(p, r).sum() / (p.sum() + r.sum()) if p.sum() + r.sum() else 1.0
    tables = {}
    for ext in (".seg.nrrd", ".nii.gz", ".nrrd", ".mha"):
        assert run_cli("evaluate", "--prediction", out / f"pred{ext}", "--label", label) == 0
        tables[ext] = table_rows(capsys.readouterr().out)
    # The .seg.nrrd gives its segment names; the other files have none ("label N"); the numbers are the same.
    assert list(tables[".seg.nrrd"]) == ["class 1", "class 2", "class 3", "mean of classes"]
    assert list(tables[".nii.gz"]) == ["label 1", "label 2", "label 3", "mean of classes"]
    for ext in (".nii.gz", ".nrrd", ".mha"):
        assert list(tables[ext].values()) == list(tables[".seg.nrrd"].values())
    for k in (1, 2, 3):
        assert float(tables[".seg.nrrd"][f"class {k}"][1]) == pytest.approx(expected[k], abs=1e-4)
    assert float(tables[".seg.nrrd"]["mean of classes"][0]) == pytest.approx(np.mean(list(expected.values())), abs=1e-4)
    # With --model the names come from the model card.
    assert (
        run_cli(
            "evaluate",
            "--prediction",
            out / "pred.nii.gz",
            "--label",
            label,
            "--model",
            model_dir,
            "--json",
            tmp_path / "scores.json",
        )
        == 0
    )
    assert "(classes of model tiny-cardiac)" in capsys.readouterr().out
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert [c["name"] for c in scores["classes"]] == ["class 1", "class 2", "class 3"]
    assert scores["mean_dice"] == pytest.approx(np.mean(list(expected.values())), abs=1e-6)
    assert scores["distance_unit"] == "mm"


def test_evaluate_seg_nrrd_of_the_reference_scores_one(tmp_path, acdc_crop, capsys):
    """The reference written as a Slicer segmentation (names of the bundled cardiac model) scores Dice 1."""
    _, label = acdc_crop
    classes = pkg.load_model_package("cardiac-acdc").card.class_dicts  # bundled: a missing model fails the test
    seg = writers.write_seg_nrrd(sitk.ReadImage(str(label)), tmp_path / "ref.seg.nrrd", classes)
    assert run_cli("evaluate", "--prediction", seg, "--label", label) == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == [
        "right ventricle cavity",
        "left ventricle myocardium",
        "left ventricle cavity",
        "mean of classes",
    ]
    assert all(float(v[1]) == 1.0 and float(v[2]) == 0.0 for k, v in rows.items() if k != "mean of classes")
    assert rows["mean of classes"][:2] == ["1.0000", "0.00"]
    # Cropped to the labels' extent (as 3D Slicer may store a segmentation): placed back on the label's grid.
    ref = sitk.ReadImage(str(label))
    ks, js, is_ = np.nonzero(sitk.GetArrayFromImage(ref))
    crop = ref[int(is_.min()) : int(is_.max()) + 1, int(js.min()) : int(js.max()) + 1, :]
    assert crop.GetSize() != ref.GetSize()
    small = writers.write_seg_nrrd(crop, tmp_path / "cropped.seg.nrrd", classes)
    assert run_cli("evaluate", "--prediction", small, "--label", label) == 0
    assert table_rows(capsys.readouterr().out)["mean of classes"][:2] == ["1.0000", "0.00"]


def test_seg_nrrd_segments_map_to_the_model_by_name(tmp_path, acdc_crop, capsys):
    """Segments whose label values differ from the model's are matched to its classes by name."""
    _, label = acdc_crop
    ref = sitk.ReadImage(str(label))
    swapped = sitk.GetArrayFromImage(ref).copy()
    swapped[swapped > 0] = 4 - swapped[swapped > 0]  # 1 <-> 3
    image = sitk.GetImageFromArray(swapped)
    image.CopyInformation(ref)
    bundled = pkg.load_model_package("cardiac-acdc").card.class_dicts
    classes = [dict(c, label_value=4 - c["label_value"]) if c["label_value"] else c for c in bundled]
    seg = writers.write_seg_nrrd(image, tmp_path / "swapped.seg.nrrd", classes)
    assert run_cli("evaluate", "--prediction", seg, "--label", label, "--model", "cardiac-acdc") == 0
    assert table_rows(capsys.readouterr().out)["mean of classes"][0] == "1.0000"
    # Without the model the stored label values are scored: RV and LV cavity are swapped.
    assert run_cli("evaluate", "--prediction", seg, "--label", label) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows["left ventricle cavity"][0] == "1" and float(rows["left ventricle cavity"][1]) == 0.0
    # A segment named as no class of the model: a clear error.
    renamed = [dict(c, name="tumour") if c["label_value"] == 1 else c for c in bundled]
    other = writers.write_seg_nrrd(ref, tmp_path / "other.seg.nrrd", renamed)
    assert run_cli("evaluate", "--prediction", other, "--label", label, "--model", "cardiac-acdc") == 1
    err = capsys.readouterr().err
    assert "Segment 'tumour'" in err and "none of the model's classes" in err and "Traceback" not in err


def test_overlapping_seg_nrrd_is_refused(tmp_path, acdc_crop, capsys):
    _, label = acdc_crop
    ref = sitk.ReadImage(str(label))
    voxels = np.transpose(sitk.GetArrayFromImage(ref), (2, 1, 0))
    layers = np.stack([(voxels == 1).astype(np.uint8), (voxels > 0).astype(np.uint8)])  # segment 2 overlaps 1
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(ref.GetDirection()).reshape(3, 3) * np.asarray(ref.GetSpacing())
    matrix[:3, 3] = ref.GetOrigin()
    slicerio.write_segmentation(
        str(tmp_path / "overlap.seg.nrrd"),
        {
            "voxels": layers,
            "ijkToLPS": matrix,
            "encoding": "gzip",
            "referenceImageExtentOffset": [0, 0, 0],
            "containedRepresentationNames": ["Binary labelmap"],
            "masterRepresentation": "Binary labelmap",
            "segments": [
                {"id": "a", "name": "a", "labelValue": 1, "layer": 0, "color": [1, 0, 0]},
                {"id": "b", "name": "b", "labelValue": 1, "layer": 1, "color": [0, 1, 0]},
            ],
        },
    )
    assert run_cli("evaluate", "--prediction", tmp_path / "overlap.seg.nrrd", "--label", label) == 1
    err = capsys.readouterr().err
    assert "overlapping segments (2 layers)" in err and "export the segments to a labelmap" in err


def test_a_missing_package_names_its_extra(tmp_path, acdc_crop):
    """scipy blocked in a fresh interpreter: evaluate ends with the extra to install, no traceback."""
    _, label = acdc_crop
    code = (
        "import sys; sys.modules['scipy'] = None\n"
        "from AttentionMambaSegLib.cli import main\n"
        f"sys.exit(main(['evaluate', '--prediction', {str(label)!r}, '--label', {str(label)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 1
    assert "error: evaluate needs scipy: pip install 'attention-mamba-seg[train]'" in result.stderr
    assert "Traceback" not in result.stderr and "ModuleNotFoundError" not in result.stderr


def test_missing_package_messages_follow_pyproject_extras():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, requirements in extras.items():
        if extra == "test":
            continue
        for requirement in requirements:
            if "platform_system" in requirement and f"'{platform.system()}'" not in requirement:
                continue  # a package of another platform
            name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
            module = {v: k for k, v in cli._DISTRIBUTIONS.items()}.get(name, name.replace("-", "_"))
            message = cli.missing_package_message(
                ModuleNotFoundError(f"No module named {module!r}", name=module), "segment"
            )
            assert message == (
                f"segment needs {name}: pip install 'attention-mamba-seg[{extra}]' (from a clone: "
                f"pip install -e '.[{extra}]')"
            )
    core = cli.missing_package_message(ModuleNotFoundError("No module named 'PIL'", name="PIL"), "demo")
    assert core.startswith("demo needs pillow, which attention-mamba-seg always installs")


# ---------------------------------------------------------------------------- output folders, summary, names


def test_output_folders_are_created(tmp_path, acdc_crop, model_dir):
    image, _ = acdc_crop
    common = ("--model", model_dir, "--device", "cpu", "--no-tta")
    assert run_cli("segment", image, "-o", tmp_path / "a" / "b" / "scan.nii.gz", *common) == 0
    assert (tmp_path / "a" / "b" / "scan.nii.gz").is_file() and (tmp_path / "a" / "b" / "scan.report.json").is_file()
    assert run_cli("segment", image, "-o", str(tmp_path / "one") + os.sep, *common) == 0
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["case.report.json", "case.seg.nrrd"]
    # A file where a folder is needed: refused up front, nothing created.
    (tmp_path / "taken").write_text("x")
    assert run_cli("segment", image, "-o", tmp_path / "taken" / "scan.nii.gz", *common) == 1
    assert (tmp_path / "taken").read_text() == "x"


def test_batch_run_writes_summary_and_drops_the_channel_suffix(tmp_path, acdc_crop, model_dir, capsys):
    image, _ = acdc_crop
    second = tmp_path / "in" / "other_0000.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(image))[:, :, 1:3], str(second))
    out = tmp_path / "results" / "run1"  # does not exist yet
    assert (
        run_cli(
            "segment",
            image,
            second,
            "-o",
            out,
            "--model",
            model_dir,
            "--device",
            "cpu",
            "--no-tta",
            "--output-format",
            "nii.gz",
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "case.nii.gz",
        "case.report.json",
        "other.nii.gz",
        "other.report.json",
        "summary.csv",
    ]
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "input",
        "output",
        "class 1 volume (mL)",
        "class 1 confidence",
        "class 1 needs review",
        "class 2 volume (mL)",
        "class 2 confidence",
        "class 2 needs review",
        "class 3 volume (mL)",
        "class 3 confidence",
        "class 3 needs review",
        "needs review",
        "reasons",
        "warnings",
    ]
    assert [r["input"] for r in rows] == [str(image), str(second)]
    assert [r["output"] for r in rows] == [str(out / "case.nii.gz"), str(out / "other.nii.gz")]
    for row, name in zip(rows, ("case", "other")):
        labels = sitk.ReadImage(str(out / f"{name}.nii.gz"))
        voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
        counts = np.bincount(sitk.GetArrayFromImage(labels).ravel(), minlength=4)
        report = json.loads((out / f"{name}.report.json").read_text())
        for k in (1, 2, 3):
            assert float(row[f"class {k} volume (mL)"]) == pytest.approx(counts[k] * voxel_ml, abs=1e-3)
            segment = report["segments"][k - 1]
            assert row[f"class {k} needs review"] == ("yes" if segment["needs_review"] else "no")
        assert row["needs review"] == ("yes" if any(s["needs_review"] for s in report["segments"]) else "no")
    # Again without --overwrite: refused before any work (the summary exists too).
    capsys.readouterr()
    assert run_cli("segment", image, second, "-o", out, "--model", model_dir, "--output-format", "nii.gz") == 1
    assert "already exists" in capsys.readouterr().err


def test_a_folder_of_images_is_a_batch(tmp_path, acdc_crop, model_dir):
    image, _ = acdc_crop
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / image.name).write_bytes(image.read_bytes())
    assert (
        run_cli("segment", folder, "-o", tmp_path / "results", "--model", model_dir, "--device", "cpu", "--no-tta") == 0
    )
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "case.report.json",
        "case.seg.nrrd",
        "summary.csv",
    ]
    with open(tmp_path / "results" / "summary.csv", newline="") as f:
        assert [r["output"] for r in csv.DictReader(f)] == [str(tmp_path / "results" / "case.seg.nrrd")]


def test_two_inputs_with_one_output_name_are_refused(tmp_path, acdc_crop, model_dir, capsys):
    image, _ = acdc_crop
    other = tmp_path / "elsewhere"
    other.mkdir()
    twin = other / "case.nii.gz"  # case_0000.nii.gz and case.nii.gz both name case.seg.nrrd
    sitk.WriteImage(sitk.ReadImage(str(image)), str(twin))
    assert output_path_for(image, tmp_path, "seg.nrrd").name == "case.seg.nrrd"
    dated = other / "scan_2019.nii.gz"  # only nnU-Net's first-channel suffix _0000 is dropped
    dated.write_bytes(twin.read_bytes())
    assert output_path_for(dated, tmp_path, "seg.nrrd").name == "scan_2019.seg.nrrd"
    assert run_cli("segment", image, twin, "-o", tmp_path / "out", "--model", model_dir) == 1
    err = capsys.readouterr().err
    assert f"Inputs {image} and {twin} would both be written to" in err and "_0000" in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- PNG, item 5


@pytest.mark.slow
def test_photo_png_mask_area_overlay_and_evaluate(tmp_path, capsys, caplog):
    """The bundled dermoscopy model on a PH2 photo: 0/255 mask, areas in px, outline overlay, evaluate 0/1."""
    require(PH2_IMAGE, PH2_LABEL)
    assert PH2_MODEL.is_dir(), f"bundled model {PH2_MODEL} is missing"
    photo = tmp_path / "IMD002_0000.png"
    photo.write_bytes(PH2_IMAGE.read_bytes())
    out = tmp_path / "out"
    caplog.set_level("INFO")
    assert (
        run_cli(
            "segment",
            photo,
            "-o",
            str(out) + os.sep,
            "--model",
            PH2_MODEL,
            "--device",
            "cpu",
            "--output-format",
            "png",
            "--overlay",
        )
        == 0
    )
    mask_path, overlay_path = out / "IMD002.png", out / "IMD002_overlay.png"
    assert sorted(p.name for p in out.iterdir()) == ["IMD002.png", "IMD002.report.json", "IMD002_overlay.png"]
    # 0/255, white on black.
    with Image.open(mask_path) as png:
        assert png.mode == "L"
        grey = np.asarray(png)
    assert set(np.unique(grey).tolist()) == {0, 255}
    labels = (grey == 255).astype(np.uint8)
    # Areas in pixels: a PNG has no physical pixel size (the decision is by file type, not spacing).
    report = json.loads((out / "IMD002.report.json").read_text())
    segment = report["segments"][0]
    assert segment["area_px"] == segment["voxels"] == int(labels.sum()) and "area_mm2" not in segment
    assert f"skin lesion: {int(labels.sum())} px" in caplog.text
    # evaluate reads 255 as label 1: Dice 1 against the same mask stored as 0/1.
    reference = tmp_path / "reference.png"
    Image.fromarray(labels).save(reference)
    capsys.readouterr()
    assert run_cli("evaluate", "--prediction", mask_path, "--label", reference, "--model", PH2_MODEL) == 0
    out_text = capsys.readouterr().out
    rows = table_rows(out_text)
    assert rows["skin lesion"][:3] == ["1", "1.0000", "0.00"] and "HD95 px" in out_text
    assert int(rows["skin lesion"][3]) == int(rows["skin lesion"][4]) == int(labels.sum())
    # Against the manual PH2 label (0/1 PNG): the Dice computed here.
    truth = np.asarray(Image.open(PH2_LABEL))
    expected = 2.0 * np.logical_and(labels == 1, truth == 1).sum() / ((labels == 1).sum() + (truth == 1).sum())
    assert run_cli("evaluate", "--prediction", mask_path, "--label", PH2_LABEL) == 0
    assert float(table_rows(capsys.readouterr().out)["label 1"][1]) == pytest.approx(expected, abs=1e-4)
    # The overlay: the photo, RGB, changed only on the outline inside the mask, in the class colour.
    with Image.open(overlay_path) as png:
        assert png.mode == "RGB"
        overlay = np.asarray(png)
    original = np.asarray(Image.open(photo).convert("RGB"))
    assert overlay.shape == original.shape
    changed = np.any(overlay != original, axis=2)
    thickness = masks.outline_thickness(labels.shape)
    inner = labels.astype(bool)
    for _ in range(thickness):
        inner = masks._erode(inner)
    near_edge = labels.astype(bool) & ~inner
    assert changed.any() and not (changed & ~near_edge).any()
    assert np.all(overlay[changed] == LESION_COLOUR)


def test_areas_in_mm2_for_a_2d_image_with_spacing(tmp_path, acdc_crop, model_dir):
    """A 2D NIfTI slice of spacing 1 mm is not a photo: its areas stay in mm2."""
    image, _ = acdc_crop
    slice2d = sitk.ReadImage(str(image))[:, :, 1]
    slice2d.SetSpacing((1.0, 1.0))
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(slice2d, str(path))
    assert (
        run_cli("segment", path, "-o", tmp_path / "slice.seg.nrrd", "--model", model_dir, "--device", "cpu", "--no-tta")
        == 0
    )
    segments = json.loads((tmp_path / "slice.report.json").read_text())["segments"]
    assert all("area_mm2" in s and "area_px" not in s for s in segments)
    assert images.has_physical_spacing(images.read_image(path))
    assert not images.has_physical_spacing(images.read_image(PH2_LABEL))


def test_palette_png_for_several_classes(tmp_path, capsys):
    classes = make_package(tmp_path / "m", num_classes=4).card.class_dicts
    labels = np.zeros((20, 30), dtype=np.uint8)
    labels[2:8, 3:9], labels[10:15, 5:25], labels[16:19, 1:4] = 1, 2, 3
    image = sitk.GetImageFromArray(labels)
    png_path = writers.write_labelmap(image, tmp_path / "mask.png", classes)
    with Image.open(png_path) as png:
        assert png.mode == "P"
        palette = np.asarray(png.getpalette()[:12]).reshape(4, 3)
        np.testing.assert_array_equal(np.asarray(png), labels)
    np.testing.assert_array_equal(palette, [[0, 0, 0], *[c["color"] for c in classes[1:]]])
    back, names = masks.read_labelmap(png_path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
    assert names == {}
    # evaluate: the palette PNG against the same labels in NIfTI: Dice 1 for each of the three values.
    sitk.WriteImage(image, str(tmp_path / "mask.nii.gz"))
    assert run_cli("evaluate", "--prediction", png_path, "--label", tmp_path / "mask.nii.gz") == 0
    rows = table_rows(capsys.readouterr().out)
    assert [rows[f"label {k}"][1] for k in (1, 2, 3)] == ["1.0000"] * 3
    # One class with label value 1: grey 0/255, read back as 0/1.
    one = writers.write_labelmap(
        sitk.GetImageFromArray((labels > 0).astype(np.uint8)), tmp_path / "one.png", [classes[0], classes[1]]
    )
    assert set(np.unique(np.asarray(Image.open(one))).tolist()) == {0, 255}
    np.testing.assert_array_equal(masks.read_png_labels(one), (labels > 0).astype(np.uint8))


def test_montage_has_a_legend_and_slice_numbers(tmp_path):
    classes = make_package(tmp_path / "m", num_classes=4).card.class_dicts
    rng = np.random.default_rng(0)
    volume = sitk.GetImageFromArray(rng.normal(100, 20, (5, 64, 80)).astype(np.float32))
    labels = np.zeros((5, 64, 80), dtype=np.uint8)
    labels[:, 10:20, 10:20], labels[:, 30:40, 30:40], labels[:, 45:55, 50:70] = 1, 2, 3
    labelmap = sitk.GetImageFromArray(labels)
    path = write_overlay_montage(volume, labelmap, classes, tmp_path / "montage.png", columns=5)
    montage = np.asarray(Image.open(path).convert("RGB"))
    assert montage.shape[1] == 5 * 80 and montage.shape[0] > 64  # one row of tiles, then the legend
    legend = montage[64:]
    for c in classes[1:]:
        assert np.all(legend == c["color"], axis=2).sum() > 20, c["name"]  # swatch and name in the class colour
    corner = montage[:14, :40]
    assert np.all(corner == 255, axis=2).any() and np.all(corner == 0, axis=2).any()  # "1/5" white on black
