"""Tests of datasets.py and dataset_validation.py on tiny copies (in tmp_path) of real cases: reading, slicing,
validation errors."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from AttentionMambaSegLib import dataset_validation, datasets
from conftest import make_copy, needs_datasets  # noqa: E402

pytestmark = needs_datasets


ACDC_CASES = (["patient001_frame01"], ["patient019_frame01"])


def test_valid_copy_reads_and_slices(tmp_path):
    root = make_copy(tmp_path, "ACDC", *ACDC_CASES)
    info = dataset_validation.validate_dataset(root)
    assert info.channel_names == ("cineMRI",) and info.foreground_labels == {"RV": 1, "MYO": 2, "LV": 3}
    assert datasets.split_cases(info, "train") == ["patient001_frame01"]
    assert datasets.split_cases(info, "all") == sorted(ACDC_CASES[0] + ACDC_CASES[1])
    spacing = datasets.target_inplane_spacing(info, datasets.split_cases(info, "train"), "LPS")
    assert spacing == pytest.approx((1.5625, 1.5625))
    slices = datasets.load_slices(info, ["patient001_frame01"], spacing, "LPS", datasets.default_normalization(info))
    assert len(slices) == 10  # 10 short-axis slices, sliced along the 10 mm axis
    assert slices.images[0].shape == (1, 256, 216) and slices.images[0].dtype == np.float32
    assert slices.labels[0].shape == (256, 216) and slices.labels[0].dtype == np.uint8
    volume = np.stack(slices.images)
    assert abs(volume.mean()) < 1e-3 and abs(volume.std() - 1) < 1e-3  # z-score over the case
    assert set(np.unique(np.stack(slices.labels)).tolist()) <= {0, 1, 2, 3}


def test_rgb_png_holds_all_channels_in_one_file(tmp_path):
    root = make_copy(tmp_path, "PH2", ["IMD002"], ["IMD003"])
    info = dataset_validation.validate_dataset(root)
    image, label = datasets.read_case(info, "IMD002")
    assert image.GetNumberOfComponentsPerPixel() == 3 and image.GetDimension() == 2
    assert datasets.default_normalization(info) == {"type": "rgb"}
    slices = datasets.load_slices(info, ["IMD002"], (1.0, 1.0), "LPS", {"type": "rgb"})
    assert len(slices) == 1 and slices.images[0].shape[0] == 3
    assert set(np.unique(slices.labels[0]).tolist()) == {0, 1}


def _expect_problem(root, *fragments):
    with pytest.raises(datasets.DatasetError) as excinfo:
        dataset_validation.validate_dataset(root)
    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment in message, message
    return excinfo.value


def test_missing_channel_file_is_named(tmp_path):
    root = make_copy(tmp_path, "Hippocampus", ["hippocampus_001"], ["hippocampus_003"])
    meta = json.loads((root / "dataset.json").read_text())
    meta["channel_names"] = {"0": "T1", "1": "T2"}
    (root / "dataset.json").write_text(json.dumps(meta))
    err = _expect_problem(root, "hippocampus_001", "channel file missing", "hippocampus_001_0001.nii.gz")
    assert {case for case, _ in err.problems} == {"hippocampus_001", "hippocampus_003"}


def test_label_value_not_in_dataset_json(tmp_path):
    root = make_copy(tmp_path, "Hippocampus", ["hippocampus_001"], ["hippocampus_003"])
    path = root / "labelsTr" / "hippocampus_003.nii.gz"
    label = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(label)
    array[0, 0, 0] = 7
    broken = sitk.GetImageFromArray(array)
    broken.CopyInformation(label)
    sitk.WriteImage(broken, str(path))
    err = _expect_problem(root, "hippocampus_003", "label value(s) [7]")
    assert [case for case, _ in err.problems] == ["hippocampus_003"]


def test_size_and_geometry_mismatch(tmp_path):
    root = make_copy(tmp_path, "ACDC", *ACDC_CASES)
    path = root / "labelsTr" / "patient001_frame01.nii.gz"
    label = sitk.ReadImage(str(path))
    sitk.WriteImage(label[:, :-1, :], str(path))  # one row fewer
    _expect_problem(root, "patient001_frame01", "label size")
    label.SetSpacing((1.5625, 1.5625, 5.0))
    sitk.WriteImage(label, str(path))
    _expect_problem(root, "patient001_frame01", "label spacing")
    label.SetSpacing((1.5625, 1.5625, 10.0))
    label.SetOrigin((0.0, 0.0, 3.0))
    sitk.WriteImage(label, str(path))
    _expect_problem(root, "patient001_frame01", "label origin")


def test_missing_files_and_splits(tmp_path):
    root = make_copy(tmp_path, "ACDC", *ACDC_CASES)
    (root / "labelsTr" / "patient019_frame01.nii.gz").unlink()
    _expect_problem(root, "patient019_frame01", "splits_final.json", "has no label file")
    root2 = make_copy(tmp_path / "b", "ACDC", *ACDC_CASES)
    (root2 / "imagesTr" / "patient001_frame01_0000.nii.gz").unlink()
    _expect_problem(root2, "patient001_frame01", "image file missing")


def test_dataset_json_errors(tmp_path):
    root = make_copy(tmp_path, "ACDC", *ACDC_CASES)
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "RV": 1, "LV": 3}
    (root / "dataset.json").write_text(json.dumps(meta))
    _expect_problem(root, "without gaps")
    (root / "dataset.json").unlink()
    _expect_problem(root, "dataset.json not found")
    info = datasets.DatasetInfo(
        root=root, name="x", channel_names=("a",), labels={"background": 0, "a": 1}, file_ending=".nii.gz"
    )
    with pytest.raises(datasets.DatasetError, match="splits_final.json not found"):
        datasets.split_cases(info, "val")
    with pytest.raises(ValueError, match="split must be"):
        datasets.split_cases(info, "test")


def test_jpeg_images_with_png_labels(tmp_path):
    root = make_copy(tmp_path, "ISIC2017", ["ISIC_0000000"], ["ISIC_0000001"])
    info = dataset_validation.validate_dataset(root)
    assert info.image_ending == ".jpg" and info.file_ending == ".png"
    assert info.channel_path("ISIC_0000000", 0).name == "ISIC_0000000_0000.jpg"
    image, label = datasets.read_case(info, "ISIC_0000000")
    assert image.GetNumberOfComponentsPerPixel() == 3 and tuple(image.GetSize()) == (256, 256)
    from AttentionMambaSegLib.images import has_physical_spacing

    assert not has_physical_spacing(image)  # a photograph: areas are reported in pixels
    assert set(np.unique(sitk.GetArrayFromImage(label)).tolist()) == {0, 1}
    (root / "imagesTr" / "ISIC_0000001_0000.jpg").unlink()
    _expect_problem(root, "ISIC_0000001", "image file missing", "ISIC_0000001_0000.jpg")


def test_image_file_ending_is_checked(tmp_path):
    root = make_copy(tmp_path, "ISIC2017", ["ISIC_0000000"], ["ISIC_0000001"])
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "image_file_ending": "jpg"}))
    _expect_problem(root, "image_file_ending must be a file ending", "'jpg'")
    (root / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".jpg"}))
    _expect_problem(root, "labels must be stored losslessly", "image_file_ending")
    meta.pop("image_file_ending")
    (root / "dataset.json").write_text(json.dumps(meta))  # images looked for as .png: none found
    _expect_problem(root, "ISIC_0000000", "image file missing", "ISIC_0000000_0000.png")
