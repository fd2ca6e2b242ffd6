"""Tests of AttentionMambaSegLib.images, .dicom, .writers and .cli.montage: reading (NIfTI, PNG, DICOM series),
atomic writing of labelmaps and Slicer .seg.nrrd files (read back with slicerio), clear errors, no partial files."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from _inference_helpers import ACDC_IMAGE, DICOM_DIR, HIPPO_LABEL, PH2_IMAGE, SNOMED_TISSUE
from AttentionMambaSegLib import images, masks, writers
from AttentionMambaSegLib.cli.montage import write_overlay_montage
from conftest import require

CLASSES = [
    {"label_value": 0, "name": "background", "color": [0, 0, 0]},
    {
        "label_value": 1,
        "name": "anterior hippocampus",
        "color": [230, 25, 75],
        "snomed": {
            "category": {"code": "123037004", "scheme": "SCT", "meaning": "Anatomical Structure"},
            "type": {"code": "5300000", "scheme": "SCT", "meaning": "Hippocampus"},
        },
    },
    {"label_value": 2, "name": "posterior", "color": [0, 130, 200], "snomed": SNOMED_TISSUE},
]


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------- reading
def test_read_nifti_geometry():
    require(ACDC_IMAGE)
    img = images.read_image(ACDC_IMAGE)
    assert img.GetSize() == (216, 256, 11)
    assert img.GetSpacing() == pytest.approx((1.4453, 1.4453, 10.0), abs=1e-4)  # the original ACDC pixdim


def test_truncated_nifti_is_refused(tmp_path):
    """ITK reads a cut .nii.gz without an error (the missing voxels become 0); read_image must not."""
    require(ACDC_IMAGE)
    data = ACDC_IMAGE.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        images.read_image(cut)
    plain = tmp_path / "plain.nii"
    sitk.WriteImage(sitk.ReadImage(str(ACDC_IMAGE)), str(plain))
    assert images.read_image(plain).GetSize() == (216, 256, 11)  # the whole file passes
    short = tmp_path / "short.nii"
    short.write_bytes(plain.read_bytes()[:-1000])
    with pytest.raises(ValueError, match=r"truncated \(2,432,\d{3} of the 2,433,\d{3} bytes"):
        images.read_image(short)


def test_read_dicom_series_folder():
    require(DICOM_DIR)
    img = images.read_image(DICOM_DIR)
    assert img.GetSize() == (280, 320, 22)
    assert img.GetSpacing()[:2] == pytest.approx((0.6875, 0.6875))
    assert img.GetSpacing()[2] == pytest.approx(6.5, abs=1e-3)
    d = np.array(img.GetDirection()).reshape(3, 3)
    assert abs(np.degrees(np.arccos(d[1, 1]))) == pytest.approx(10.8, abs=0.5)  # oblique acquisition


def _write_dicom_series(folder, n_slices, series_uid):
    folder.mkdir(parents=True)
    arr = (np.arange(n_slices * 16 * 16).reshape(n_slices, 16, 16) % 1000).astype(np.int16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(n_slices):
        sl = sitk.GetImageFromArray(arr[k])
        for tag, value in {
            "0008|0060": "MR",
            "0010|0010": "Test^Series",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": f"0\\0\\{k * 3.0}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "1\\1",
            "0018|0050": "3",
            "0008|0018": f"{series_uid}.{k + 1}",
        }.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)


def test_several_series_reads_the_largest(tmp_path, caplog):
    require(DICOM_DIR)
    shutil.copytree(DICOM_DIR, tmp_path / "study" / "big")
    _write_dicom_series(tmp_path / "study" / "small", 3, "1.2.826.0.1.3680043.2.1125.2")
    with caplog.at_level("INFO", logger="AttentionMambaSegLib.dicom"):
        img = images.read_image(tmp_path / "study")
    assert img.GetSize() == (280, 320, 22)
    assert "2 DICOM series" in caplog.text
    small = images.read_image(tmp_path / "study" / "small")
    assert small.GetSize() == (16, 16, 3)


def test_folder_without_dicom_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="No DICOM series found"):
        images.read_image(tmp_path)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        images.read_image(tmp_path / "nope.nii.gz")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="Unsupported image file"):
        images.read_image(tmp_path / "a.txt")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match="Could not read"):
        images.read_image(tmp_path / "broken.nii.gz")


def test_read_png_rgb_and_rgba(tmp_path):
    require(PH2_IMAGE)
    from PIL import Image

    img = images.read_image(PH2_IMAGE)
    assert img.GetDimension() == 2 and img.GetNumberOfComponentsPerPixel() == 3
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = images.read_image(tmp_path / "a.png")
    assert out.GetNumberOfComponentsPerPixel() == 3
    assert sitk.GetArrayFromImage(out)[2, 3].tolist() == [200, 0, 0]


# ---------------------------------------------------------------------------------------- writing
def _labelmap_like(reference):
    arr = np.zeros(sitk.GetArrayViewFromImage(reference).shape[:3], np.uint8)
    arr[..., 2:6, 3:9] = 1
    arr[..., 7:9, 1:3] = 2
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(reference)
    return out


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_write_labelmap_keeps_geometry(tmp_path, ext):
    require(DICOM_DIR)
    ref = images.read_image(DICOM_DIR)
    lab = _labelmap_like(ref)
    path = writers.write_labelmap(lab, tmp_path / f"out{ext}")
    assert files_in(tmp_path) == [f"out{ext}"]  # no temporary file left
    back = sitk.ReadImage(str(path))
    assert back.GetSize() == ref.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), ref.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), ref.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(lab))


def test_write_png_labelmap(tmp_path):
    lab = sitk.GetImageFromArray(np.array([[0, 1], [2, 1]], np.uint8))
    writers.write_labelmap(lab, tmp_path / "m.png")  # several values: a palette PNG, index = label value
    np.testing.assert_array_equal(masks.read_png_labels(tmp_path / "m.png"), [[0, 1], [2, 1]])
    one_slice = sitk.GetImageFromArray(np.ones((1, 3, 4), np.uint8))
    writers.write_labelmap(one_slice, tmp_path / "s.png")  # one class: 0/255
    assert sitk.ReadImage(str(tmp_path / "s.png")).GetSize() == (4, 3)
    assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "s.png")))).tolist()) == {255}
    with pytest.raises(ValueError, match="PNG output needs a 2D"):
        writers.write_labelmap(sitk.GetImageFromArray(np.ones((2, 3, 4), np.uint8)), tmp_path / "v.png")


def test_seg_nrrd_reads_back_with_slicerio(tmp_path):
    require(DICOM_DIR)
    ref = images.read_image(DICOM_DIR)  # oblique geometry
    lab = _labelmap_like(ref)
    path = writers.write_labelmap(lab, tmp_path / "seg.seg.nrrd", CLASSES)
    assert files_in(tmp_path) == ["seg.seg.nrrd"]
    seg = slicerio.read_segmentation(str(path))
    segments = seg["segments"]
    assert [s["name"] for s in segments] == ["anterior hippocampus", "posterior"]
    assert [s["labelValue"] for s in segments] == [1, 2]
    assert segments[0]["color"] == pytest.approx([230 / 255, 25 / 255, 75 / 255], abs=1e-5)
    assert segments[1]["color"] == pytest.approx([0, 130 / 255, 200 / 255], abs=1e-5)
    assert segments[0]["terminology"]["type"] == ["SCT", "5300000", "Hippocampus"]
    assert segments[0]["terminology"]["category"] == ["SCT", "123037004", "Anatomical Structure"]
    assert all(s["status"] == "inprogress" for s in segments)
    # Voxels in (i, j, k) order and IJK-to-LPS from the reference geometry.
    np.testing.assert_array_equal(seg["voxels"], np.transpose(sitk.GetArrayFromImage(lab), (2, 1, 0)))
    d = np.array(ref.GetDirection()).reshape(3, 3) * np.array(ref.GetSpacing())
    np.testing.assert_allclose(seg["ijkToLPS"][:3, :3], d, atol=1e-6)
    np.testing.assert_allclose(seg["ijkToLPS"][:3, 3], ref.GetOrigin(), atol=1e-6)
    # ITK reads the same labelmap back.
    back = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(lab))


def test_seg_nrrd_2d_and_label_checks(tmp_path):
    lab2d = sitk.GetImageFromArray(np.array([[0, 1, 1], [0, 0, 1]], np.uint8))
    lab2d.SetSpacing((0.5, 0.25))
    writers.write_seg_nrrd(lab2d, tmp_path / "two_d.seg.nrrd", CLASSES)
    seg = slicerio.read_segmentation(str(tmp_path / "two_d.seg.nrrd"))
    assert seg["voxels"].shape == (3, 2, 1)
    np.testing.assert_allclose(np.diag(seg["ijkToLPS"])[:3], [0.5, 0.25, 1.0])
    bad = sitk.GetImageFromArray(np.array([[0, 5]], np.uint8))
    with pytest.raises(ValueError, match=r"Label values \[5\]"):
        writers.write_seg_nrrd(bad, tmp_path / "bad.seg.nrrd", CLASSES)
    with pytest.raises(ValueError, match="needs the class list"):
        writers.write_labelmap(lab2d, tmp_path / "x.seg.nrrd")
    assert sorted(files_in(tmp_path)) == ["two_d.seg.nrrd"]


def test_non_ascii_path_with_spaces(tmp_path):
    require(HIPPO_LABEL)
    folder = tmp_path / "résultats ü ö"
    folder.mkdir()
    lab = sitk.ReadImage(str(HIPPO_LABEL))
    writers.write_labelmap(lab, folder / "seg é 1.seg.nrrd", CLASSES)
    writers.write_labelmap(lab, folder / "lab é 1.nii.gz")
    assert files_in(folder) == ["lab é 1.nii.gz", "seg é 1.seg.nrrd"]
    back = images.read_image(folder / "lab é 1.nii.gz")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(lab))
    seg = slicerio.read_segmentation(str(folder / "seg é 1.seg.nrrd"))
    assert [s["name"] for s in seg["segments"]] == ["anterior hippocampus", "posterior"]


def test_unwritable_or_missing_output_folder(tmp_path, monkeypatch):
    lab = sitk.GetImageFromArray(np.zeros((2, 2), np.uint8))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        writers.write_labelmap(lab, tmp_path / "missing" / "a.nii.gz")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="file is a file, not a folder"):
        writers.write_labelmap(lab, tmp_path / "file" / "a.nii.gz")
    with pytest.raises(ValueError, match="unsupported output extension"):
        writers.write_labelmap(lab, tmp_path / "a.jpg")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(images.os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    with pytest.raises(PermissionError, match="not writable"):
        writers.write_labelmap(lab, locked / "a.nii.gz")
    assert files_in(locked) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder_real_permissions(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            writers.write_labelmap(sitk.GetImageFromArray(np.zeros((2, 2), np.uint8)), locked / "a.nii.gz")
    finally:
        locked.chmod(0o700)


def test_interrupted_write_leaves_nothing_and_keeps_old_file(tmp_path, monkeypatch):
    lab = sitk.GetImageFromArray(np.ones((2, 3, 4), np.uint8))
    target = tmp_path / "out.seg.nrrd"
    target.write_bytes(b"previous result")

    def partial_then_interrupt(file, segmentation, **kwargs):
        with open(file, "wb") as f:
            f.write(b"NRRD0004 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(slicerio, "write_segmentation", partial_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        writers.write_seg_nrrd(lab, target, CLASSES, overwrite=True)
    assert files_in(tmp_path) == ["out.seg.nrrd"]
    assert target.read_bytes() == b"previous result"


def test_overlay_montage(tmp_path):
    require(ACDC_IMAGE)
    from PIL import Image

    img = images.read_image(ACDC_IMAGE)
    arr = np.zeros((11, 256, 216), np.uint8)
    arr[2:5, 100:120, 100:120] = 3
    lab = sitk.GetImageFromArray(arr)
    lab.CopyInformation(img)
    classes = [{"label_value": 3, "name": "LV", "color": [255, 0, 0]}]
    path = write_overlay_montage(img, lab, classes, tmp_path / "m.png", columns=4)
    png = np.asarray(Image.open(path))
    assert png.shape[1:] == (3 * 216, 3) and png.shape[0] > 256  # the 3 labelled slices in one row, the legend below
    assert np.all(png[256:] == (255, 0, 0), axis=2).any()  # the legend names LV in its colour
    tile = png[:, :216]
    assert tile[110, 110, 0] > tile[110, 110, 1] + 50  # red overlay on the label
    assert tile[10, 10, 0] == tile[10, 10, 1] == tile[10, 10, 2]  # grey elsewhere


# ------------------------------------------------------------------ regressions from the break report
def test_empty_file_says_so(tmp_path):
    path = tmp_path / "empty.nii.gz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.nii\.gz: the file is empty \(0 bytes\)"):
        images.read_image(path)


def test_zero_spacing_names_the_axis(tmp_path):
    path = tmp_path / "zero.nrrd"
    header = (
        "NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 2\nkinds: domain domain domain\n"
        "endian: little\nencoding: raw\nspacings: 0 1 2\n\n"
    )
    path.write_bytes(header.encode() + bytes(4 * 4 * 2 * 2))
    with pytest.raises(ValueError) as e:
        images.read_image(path)
    message = str(e.value)
    assert "zero.nrrd" in message and "spacing" in message and "axis 0" in message
    assert ".cxx" not in message and "[nrrd]" not in message


def test_unknown_content_is_short(tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="could not be read as an image|as an image") as e:
        images.read_image(path)
    assert ".cxx" not in str(e.value)


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    require(DICOM_DIR)
    folder = tmp_path / "series"
    shutil.copytree(DICOM_DIR, folder)
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    assert len(files) >= 5
    images.read_image(folder)  # complete: accepted
    os.remove(files[len(files) // 2])
    with pytest.raises(ValueError, match=r"not evenly spaced: gap of .* mm between files .*slice\(s\) are missing"):
        images.read_image(folder)


def test_original_acdc_files_read_without_itk_warnings(capfd):
    """ITK's 'unexpected scales in sform' warning (every original ACDC file) never reaches the output."""
    require(ACDC_IMAGE)
    from AttentionMambaSegLib import datasets

    image = images.read_image(ACDC_IMAGE)
    info = datasets.load_dataset_info(ACDC_IMAGE.parents[1])
    datasets.read_case(info, "patient019_frame01")
    captured = capfd.readouterr()
    assert "sform" not in captured.err + captured.out and "WARNING" not in captured.err
    assert image.GetSpacing() == pytest.approx((1.4453, 1.4453, 10.0), abs=1e-4)
    # the warnings of other ITK readers are shown again afterwards
    assert sitk.ProcessObject.GetGlobalWarningDisplay()
