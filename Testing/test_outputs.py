"""Tests of the output rule (AttentionMambaSegLib.outputs) and of reading what an image file says.

Hostile and odd inputs, each made small inside the test: an output that names an input, a full disk
(a write that stops after half the bytes), two writers racing for one name, an EXIF-rotated photograph,
a NIfTI file whose qform and sform disagree or that holds NaN, a 16-bit colour photograph, labels that
are not whole numbers, a zip bomb, a photograph far larger than the training ones, a folder holding one
multi-frame DICOM file and a models-folder variable that names a file. Each test checks the exit code,
the message, and that the earlier file and the input are unchanged.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import multiprocessing
import struct
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from _inference_helpers import make_package
from AttentionMambaSegLib import cli, images, outputs, package as pkg, writers
from AttentionMambaSegLib.inference import photo_scale

PH2_MODEL = pkg.bundled_models_dir() / "skin-lesion-ph2"


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTENTION_MAMBA_SEG_MODELS_DIR", str(tmp_path / "user-cache"))
    return tmp_path / "user-cache"


@pytest.fixture
def tiny_model(tmp_path):
    return make_package(tmp_path / "models" / "tiny", model_id="tiny", target_spacing=(2.0, 2.0)).path


def run_cli(*argv) -> int:
    return cli.main([str(a) for a in argv])


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def volume(path, seed=0, size=(24, 20, 3), spacing=(2.0, 2.0, 5.0)):
    arr = np.random.default_rng(seed).normal(100, 20, size=size[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def lesion_photo(height=96, width=128, seed=0):
    """(H, W, 3) uint8: skin-coloured background with a dark ellipse, off-centre (not symmetric)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    photo = np.empty((height, width, 3), np.float32)
    photo[:] = (205, 150, 125)
    inside = ((y - 0.4 * height) / (0.22 * height)) ** 2 + ((x - 0.6 * width) / (0.2 * width)) ** 2 <= 1
    photo[inside] = (90, 55, 45)
    photo += rng.normal(0, 4, photo.shape)
    return np.clip(photo, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- 1: never over an input
def test_evaluate_json_never_overwrites_the_label(tmp_path, capsys):
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[:, 2:6, 2:6] = 1
    pred, label = tmp_path / "pred.nii.gz", tmp_path / "label.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(pred))
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(label))
    before = label.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert run_cli("evaluate", "--prediction", pred, "--label", label, "--json", label, *extra) == 1
        err = capsys.readouterr().err
        assert "would overwrite the input" in err and str(label) in err
        assert label.read_bytes() == before
    # an existing file that is not an input: only with --overwrite
    other = tmp_path / "scores.json"
    other.write_text("earlier")
    assert run_cli("evaluate", "--prediction", pred, "--label", label, "--json", other) == 1
    assert "already exists" in capsys.readouterr().err and other.read_text() == "earlier"
    assert run_cli("evaluate", "--prediction", pred, "--label", label, "--json", other, "--overwrite") == 0
    scores = json.loads(other.read_text())
    assert scores["classes"][0]["name"] == "label 1" and scores["classes"][0]["dice"] == 1.0
    assert scores["mean_dice"] == 1.0
    assert listing(tmp_path) == ["label.nii.gz", "pred.nii.gz", "scores.json"]


# --------------------------------------------------------------------------- 2: a full disk
def test_short_write_on_a_full_disk_keeps_the_earlier_output(tmp_path, tiny_model, capsys, caplog, monkeypatch):
    """ITK's NIfTI writer writes part of the file on a full disk and raises nothing."""
    image = volume(tmp_path / "in.nii.gz")
    out = tmp_path / "out.nii"
    assert run_cli("segment", image, "-o", out, "--model", tiny_model, "--device", "cpu", "--no-tta") == 0
    earlier, earlier_report, source = out.read_bytes(), (tmp_path / "out.report.json").read_bytes(), image.read_bytes()
    real = sitk.WriteImage

    def short_write(img, path, *args, **kwargs):
        real(img, path, *args, **kwargs)
        with open(path, "r+b") as f:  # what reached the disk: half the bytes
            f.truncate(len(f.read()) // 2)

    monkeypatch.setattr(sitk, "WriteImage", short_write)
    monkeypatch.setattr(outputs, "_free_bytes", lambda folder: 0)
    caplog.set_level(logging.INFO)
    capsys.readouterr()
    assert (
        run_cli("segment", image, "-o", out, "--model", tiny_model, "--device", "cpu", "--no-tta", "--overwrite") == 1
    )
    err = capsys.readouterr().err
    assert f"No space left on device while writing {out}" in err and "Traceback" not in err
    assert "Wrote" not in caplog.text
    assert out.read_bytes() == earlier and (tmp_path / "out.report.json").read_bytes() == earlier_report
    assert image.read_bytes() == source
    assert listing(tmp_path) == ["in.nii.gz", "models", "out.nii", "out.report.json"]


def test_enospc_after_half_the_bytes_names_the_path(tmp_path, capsys, caplog, monkeypatch):
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[:, 2:6, 2:6] = 1
    pred, label = tmp_path / "pred.nii.gz", tmp_path / "label.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(pred))
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(label))
    scores = tmp_path / "scores.json"
    scores.write_text("earlier scores")
    real = outputs._os_write
    state = {"left": None}

    def write_half_then_fail(fd, data):
        if state["left"] is None:
            state["left"] = len(data) // 2
        if state["left"] == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real(fd, bytes(data[: state["left"]]))
        state["left"] -= n
        return n

    monkeypatch.setattr(outputs, "_os_write", write_half_then_fail)
    caplog.set_level(logging.INFO)
    assert run_cli("evaluate", "--prediction", pred, "--label", label, "--json", scores, "--overwrite") == 1
    err = capsys.readouterr().err
    assert f"No space left on device while writing {scores}" in err and "Traceback" not in err
    assert "Wrote" not in caplog.text
    assert scores.read_text() == "earlier scores"
    assert listing(tmp_path) == ["label.nii.gz", "pred.nii.gz", "scores.json"]


# --------------------------------------------------------------------------- 3: two writers, one name
def _race_writer(path, value, barrier, results):
    barrier.wait()
    try:
        writers.write_labelmap(sitk.GetImageFromArray(np.full((4, 32, 32), value, np.uint8)), path)
        results.put((value, "ok"))
    except Exception as e:  # noqa: BLE001 - the loser's error travels back to the test
        results.put((value, f"{type(e).__name__}: {e}"))


def test_two_processes_writing_one_new_output(tmp_path):
    ctx = multiprocessing.get_context("fork")
    target = tmp_path / "out.nii.gz"
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_race_writer, args=(target, v, barrier, results)) for v in (1, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    outcome = dict(results.get(timeout=5) for _ in workers)
    winners = [v for v, said in outcome.items() if said == "ok"]
    assert len(winners) == 1, outcome
    loser = outcome[3 - winners[0]]
    assert loser.startswith("FileExistsError") and str(target) in loser and "--overwrite" in loser
    assert np.all(sitk.GetArrayFromImage(sitk.ReadImage(str(target))) == winners[0])  # one writer's file, whole
    assert listing(tmp_path) == ["out.nii.gz"]


def test_a_name_taken_while_writing_is_left_to_its_writer(tmp_path):
    """The final name is created exclusively: a file that appears during the write is never replaced."""
    target = tmp_path / "report.json"

    def other_program_writes_first(tmp):
        target.write_text("the other program's file")

    with pytest.raises(FileExistsError, match="created by another program"):
        with outputs.write_output(target, verify=other_program_writes_first) as tmp:
            tmp.write_text("mine")
    assert target.read_text() == "the other program's file" and listing(tmp_path) == ["report.json"]


# --------------------------------------------------------------------------- 4: EXIF orientation
def _save_with_orientation(array, path, orientation):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_read_as_viewers_show_it(tmp_path, orientation):
    from PIL import Image, ImageOps

    stored = lesion_photo(30, 50)
    path = tmp_path / f"o{orientation}.png"
    _save_with_orientation(stored, path, orientation)
    with Image.open(path) as photo:
        shown = np.asarray(ImageOps.exif_transpose(photo).convert("RGB"))
    image = images.read_image(path)
    assert np.array_equal(sitk.GetArrayFromImage(image), shown)
    assert image.GetSize() == (shown.shape[1], shown.shape[0])


@pytest.mark.slow
def test_exif_6_photo_gives_the_mask_of_the_upright_photo(tmp_path):
    assert (PH2_MODEL / "model.json").is_file(), "the bundled skin-lesion-ph2 model is missing"
    upright = lesion_photo()
    stored = np.rot90(upright, 1)  # orientation 6: viewers turn it 90 degrees clockwise
    _save_with_orientation(upright, tmp_path / "upright.png", 1)
    _save_with_orientation(np.ascontiguousarray(stored), tmp_path / "turned.png", 6)
    for name in ("upright", "turned"):
        assert (
            run_cli(
                "segment",
                tmp_path / f"{name}.png",
                "-o",
                tmp_path / f"{name}_mask.png",
                "--model",
                PH2_MODEL,
                "--device",
                "cpu",
                "--mode",
                "fast",
            )
            == 0
        )
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "upright_mask.png")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "turned_mask.png")))
    assert a.shape == b.shape == (96, 128)  # the displayed height x width
    assert a.any() and np.array_equal(a, b)


# --------------------------------------------------------------------------- 5: qform and sform
def _nifti_with_sform_turned(path, degrees=30.0, shift_mm=50.0):
    volume(path)
    raw = bytearray(path.read_bytes())
    srow = np.array(struct.unpack("<12f", raw[280:328])).reshape(3, 4)
    t = math.radians(degrees)
    turn = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    srow[:, :3] = turn @ srow[:, :3]
    srow[:, 3] += (shift_mm, 0, 0)
    raw[252:256] = struct.pack("<hh", 1, 1)
    raw[280:328] = struct.pack("<12f", *srow.ravel())
    path.write_bytes(bytes(raw))
    return srow


def test_nifti_qform_and_sform_that_disagree_are_refused_then_chosen(tmp_path, tiny_model, capsys):
    image = tmp_path / "in.nii"
    srow = _nifti_with_sform_turned(image)
    source = image.read_bytes()
    out = tmp_path / "out.nii.gz"
    assert run_cli("segment", image, "-o", out, "--model", tiny_model, "--device", "cpu", "--no-tta") == 1
    err = capsys.readouterr().err
    assert "qform" in err and "sform" in err and "30.0 degrees and 50.0 mm" in err and "--nifti-transform" in err
    assert not out.exists() and image.read_bytes() == source
    assert (
        run_cli(
            "segment",
            image,
            "-o",
            out,
            "--model",
            tiny_model,
            "--device",
            "cpu",
            "--no-tta",
            "--nifti-transform",
            "sform",
        )
        == 0
    )
    labels = sitk.ReadImage(str(out))
    assert np.allclose(labels.GetOrigin(), (-srow[0, 3], -srow[1, 3], srow[2, 3]), atol=1e-3)
    turned = np.asarray(labels.GetDirection()).reshape(3, 3)
    assert math.isclose(math.degrees(math.atan2(turned[1, 0], turned[0, 0])), 30.0, abs_tol=0.01)
    qform = images.read_image(image, nifti_transform="qform")  # the untouched transform: axis-aligned
    assert np.allclose(qform.GetDirection(), np.eye(3).ravel(), atol=1e-6)
    assert image.read_bytes() == source


# --------------------------------------------------------------------------- 6: NaN in NIfTI
@pytest.mark.parametrize("name", ["in.nii", "in.nii.gz"])
def test_nan_and_infinity_in_nifti_are_refused(tmp_path, tiny_model, capsys, name):
    arr = np.random.default_rng(0).normal(100, 20, size=(3, 20, 24)).astype(np.float32)
    arr[1, 5, 5], arr[2, 0, 0] = np.nan, np.inf
    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    assert not np.isnan(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).any()  # what ITK makes of it
    out = tmp_path / "out.seg.nrrd"
    assert run_cli("segment", path, "-o", out, "--model", tiny_model, "--device", "cpu") == 1
    err = capsys.readouterr().err
    assert "2 voxel(s) of 1440 are NaN or infinite" in err and str(path) in err
    assert not out.exists()


# --------------------------------------------------------------------------- 7: 16-bit photographs
def test_16_bit_colour_photo_is_scaled_to_8_bits(tmp_path, caplog):
    eight = lesion_photo(40, 60)
    path = tmp_path / "deep.png"
    sitk.WriteImage(sitk.GetImageFromArray(eight.astype(np.uint16) * 257, isVector=True), str(path))
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkVectorUInt16
    caplog.set_level(logging.INFO)
    image = images.read_image(path)
    assert image.GetPixelID() == sitk.sitkVectorUInt8
    assert np.array_equal(sitk.GetArrayFromImage(image), eight)
    assert "16-bit colour photograph; scaled to 8 bits" in caplog.text


@pytest.mark.slow
def test_16_bit_photo_gives_the_mask_of_the_8_bit_one(tmp_path):
    assert (PH2_MODEL / "model.json").is_file(), "the bundled skin-lesion-ph2 model is missing"
    eight = lesion_photo()
    sitk.WriteImage(sitk.GetImageFromArray(eight, isVector=True), str(tmp_path / "eight.png"))
    sitk.WriteImage(sitk.GetImageFromArray(eight.astype(np.uint16) * 257, isVector=True), str(tmp_path / "deep.png"))
    for name in ("eight", "deep"):
        assert (
            run_cli(
                "segment",
                tmp_path / f"{name}.png",
                "-o",
                tmp_path / f"{name}_mask.png",
                "--model",
                PH2_MODEL,
                "--device",
                "cpu",
                "--mode",
                "fast",
            )
            == 0
        )
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{n}_mask.png"))) for n in ("eight", "deep"))
    assert a.any() and np.array_equal(a, b)


def test_float_colour_photo_is_refused_naming_the_bit_depth(tmp_path):
    path = tmp_path / "float.tif"
    sitk.WriteImage(sitk.GetImageFromArray(lesion_photo(20, 30).astype(np.float32), isVector=True), str(path))
    with pytest.raises(ValueError, match="32-bit float pixels"):
        images.read_image(path)


# --------------------------------------------------------------------------- 8: evaluate that cannot lie
def test_non_integer_labels_are_refused(tmp_path, capsys):
    labels = np.zeros((2, 8, 8), np.float32)
    labels[:, 2:6, 2:6] = 0.5
    pred, label = tmp_path / "pred.nii.gz", tmp_path / "label.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray((labels > 0).astype(np.uint8)), str(pred))
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(label))
    assert run_cli("evaluate", "--prediction", pred, "--label", label) == 1
    err = capsys.readouterr().err
    assert "not whole numbers (e.g. 0.5" in err and str(label) in err


def _dataset(root):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "MR"},
                "labels": {"background": 0, "a": 1, "b": 2},
                "numTraining": 1,
                "file_ending": ".nii.gz",
            }
        )
    )
    volume(root / "imagesTr" / "case_000_0000.nii.gz")
    labels = np.zeros((3, 20, 24), np.uint8)
    labels[:, 2:8, 2:8], labels[:, 10:16, 10:16] = 1, 2
    label = sitk.GetImageFromArray(labels)
    label.SetSpacing((2.0, 2.0, 5.0))
    sitk.WriteImage(label, str(root / "labelsTr" / "case_000.nii.gz"))
    return root


def test_evaluate_names_the_label_values_the_model_lacks(tmp_path, capsys):
    from AttentionMambaSegLib.evaluation import evaluate, format_summary
    from AttentionMambaSegLib.inference import InferenceSettings

    root = _dataset(tmp_path / "Dataset")
    model = make_package(
        tmp_path / "one-class", model_id="one-class", num_classes=1, activation="sigmoid", target_spacing=(2.0, 2.0)
    )
    before = (root / "labelsTr" / "case_000.nii.gz").read_bytes()
    summary = evaluate(model, root, InferenceSettings(device="cpu", tta=False), cases=["case_000"])
    assert summary["label_values_found"] == [1, 2] and summary["label_values_not_scored"] == {2: 1}
    assert "not predicted by the model, so in no figure above: label value 2 (1 case(s))" in format_summary(summary)
    # an output over a file of the dataset is refused, even with --overwrite
    assert (
        run_cli(
            "evaluate", root, "--model", model.path, "--json", root / "dataset.json", "--overwrite", "--device", "cpu"
        )
        == 1
    )
    assert "would replace a file of the input folder" in capsys.readouterr().err
    assert (root / "labelsTr" / "case_000.nii.gz").read_bytes() == before
    assert json.loads((root / "dataset.json").read_text())["labels"]["b"] == 2


# --------------------------------------------------------------------------- 9: imports with limits
def _zip(path, members: dict):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _package_members(tmp_path):
    source = make_package(tmp_path / "src", model_id="zipped").path
    return {f"zipped/{n}": (source / n).read_bytes() for n in ("model.json", "model.safetensors")}


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"zipped/notes.txt": b"x" * (2 << 20)}, "'zipped/notes.txt' is 2.0 MiB, more than the 1.0 MiB"),
        ({"zipped/payload.bin": b"x"}, "'zipped/payload.bin', which a model package does not hold"),
    ],
)
def test_import_refuses_a_zip_bomb_before_extracting(tmp_path, user_cache, capsys, extra, message):
    archive = _zip(tmp_path / "bomb.zip", {**_package_members(tmp_path), **extra})
    assert archive.stat().st_size < 1 << 20  # compressed: small
    assert run_cli("models", "import", archive) == 1
    err = capsys.readouterr().err
    assert message in err and "Nothing was imported" in err
    assert listing(user_cache) == []


def test_import_refuses_a_member_larger_than_it_declares(tmp_path, user_cache, capsys):
    members = _package_members(tmp_path)
    archive = _zip(tmp_path / "lying.zip", {**members, "zipped/readme.md": b"y" * 100_000})
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo("zipped/readme.md")
    declared = struct.pack("<I", 1000)
    raw[info.header_offset + 22 : info.header_offset + 26] = declared  # local header: uncompressed size
    entry = raw.find(b"PK\x01\x02")
    while raw[entry + 46 : entry + 46 + len(b"zipped/readme.md")] != b"zipped/readme.md":
        entry = raw.find(b"PK\x01\x02", entry + 4)
    raw[entry + 24 : entry + 28] = declared  # central directory: uncompressed size
    archive.write_bytes(bytes(raw))
    assert run_cli("models", "import", archive) == 1
    err = capsys.readouterr().err
    assert "readme.md" in err and ("expands beyond the 1,000 bytes" in err or "damaged" in err)
    assert listing(user_cache) == []


# --------------------------------------------------------------------------- 10: photographs at the model's scale
@pytest.mark.slow
def test_a_large_photo_is_segmented_at_the_models_scale(tmp_path, monkeypatch, caplog):
    assert (PH2_MODEL / "model.json").is_file(), "the bundled skin-lesion-ph2 model is missing"
    card = pkg.load_model_package(PH2_MODEL).card
    assert card.photo_long_side == 382
    small = lesion_photo(286, 382)
    big = np.repeat(np.repeat(small, 5, axis=0), 5, axis=1)  # 1910 x 1430 px, the same photo
    sitk.WriteImage(sitk.GetImageFromArray(small, isVector=True), str(tmp_path / "small.png"))
    sitk.WriteImage(sitk.GetImageFromArray(big, isVector=True), str(tmp_path / "big.png"))
    scaled = photo_scale.to_model_scale(images.read_image(tmp_path / "big.png"), card)
    assert np.allclose(scaled.GetSpacing(), (0.2, 0.2))
    from AttentionMambaSegLib.inference import sliding_window

    seen = []
    real = sliding_window.BatchPredictor.__call__
    monkeypatch.setattr(
        sliding_window.BatchPredictor, "__call__", lambda self, batch: seen.append(batch.shape[2:]) or real(self, batch)
    )
    caplog.set_level(logging.INFO)
    for name in ("small", "big"):
        assert (
            run_cli(
                "segment",
                tmp_path / f"{name}.png",
                "-o",
                tmp_path / f"{name}_mask.png",
                "--model",
                PH2_MODEL,
                "--device",
                "cpu",
                "--mode",
                "fast",
            )
            == 0
        )
    assert set(seen) == {(143, 191)}  # the network saw both at the scale it learned
    assert "segmented at their scale" in caplog.text
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "small_mask.png"))) > 0
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "big_mask.png"))) > 0
    assert b.shape == (1430, 1910)  # back at full resolution
    b_small = b[2::5, 2::5]
    assert a.any() and 2 * np.logical_and(a, b_small).sum() / (a.sum() + b_small.sum()) > 0.97


# --------------------------------------------------------------------------- 11: unclear messages made clear
def test_folder_with_one_multiframe_dicom_file_is_read_as_that_file(tmp_path):
    folder = tmp_path / "dicom"
    folder.mkdir()
    frames = sitk.GetImageFromArray((np.random.default_rng(0).random((5, 16, 16)) * 100).astype(np.uint16))
    frames.SetSpacing((0.5, 0.5, 2.0))
    sitk.WriteImage(frames, str(folder / "enhanced.dcm"))
    image = images.read_image(folder)
    assert image.GetDimension() == 3 and image.GetSize() == (16, 16, 5)
    assert np.array_equal(
        sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(images.read_image(folder / "enhanced.dcm"))
    )


def test_models_folder_variable_naming_a_file(tmp_path, monkeypatch, capsys, tiny_model):
    not_a_folder = tmp_path / "models.txt"
    not_a_folder.write_text("notes")
    monkeypatch.setenv("ATTENTION_MAMBA_SEG_MODELS_DIR", str(not_a_folder))
    assert run_cli("models", "import", tiny_model) == 1
    err = capsys.readouterr().err
    assert "ATTENTION_MAMBA_SEG_MODELS_DIR" in err and "is a file, not a folder" in err and "File exists" not in err
    assert not_a_folder.read_text() == "notes"
    assert run_cli("models", "list") == 0  # the bundled models are still listed


def test_demo_outputs_follow_the_rule(tmp_path, tiny_model, capsys, monkeypatch):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "patient019_frame01_montage.png").write_bytes(b"earlier montage")
    monkeypatch.setattr(pkg.ModelPackage, "build_network", lambda *a, **k: pytest.fail("inference started"))
    assert run_cli("demo", "--output-dir", out, "--model", tiny_model, "--device", "cpu") == 1
    assert "--overwrite" in capsys.readouterr().err
    assert listing(out) == ["patient019_frame01_montage.png"]
    assert (out / "patient019_frame01_montage.png").read_bytes() == b"earlier montage"


def test_a_new_training_run_never_writes_over_another(tmp_path):
    from AttentionMambaSegLib.training import TrainingConfig
    from AttentionMambaSegLib.training.trainer import Trainer

    run = tmp_path / "run"
    run.mkdir()
    (run / "training_log.csv").write_text("earlier run")
    trainer = Trainer(TrainingConfig(dataset=str(tmp_path), output=str(run)))
    with pytest.raises(FileExistsError, match="training_log.csv of another run"):
        trainer.read_checkpoint()
    assert (run / "training_log.csv").read_text() == "earlier run"
