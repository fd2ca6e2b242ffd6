"""DICOM study folders: series listed by description, modality and size; localizers left out; the choice."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from AttentionMambaSegLib import dicom, images


def _write_series(
    folder,
    uid,
    description,
    modality,
    slices,
    image_type="ORIGINAL\\PRIMARY\\AXIAL",
    orientation=(1, 0, 0, 0, 1, 0),
    start=0,
    name="s",
):
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    rng = np.random.default_rng(len(description))
    for k in range(slices):
        image = sitk.GetImageFromArray(rng.integers(0, 400, (1, 12, 10)).astype(np.int16))
        tags = {
            "0020|000e": uid,
            "0008|103e": description,
            "0008|0060": modality,
            "0008|0008": image_type,
            "0020|0037": "\\".join(str(v) for v in orientation),
            "0020|0032": f"0\\0\\{2.0 * (start + k)}",
            "0020|0013": str(k + 1),
            "0010|0010": "TEST^PATIENT",
            "0020|000d": "1.2.3.4",
            "0008|0018": f"{uid}.{start + k + 1}",
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{name}{start + k:03d}.dcm"))
        writer.Execute(image)


@pytest.fixture
def study(tmp_path):
    _write_series(tmp_path / "a", "1.2.3.4.1", "T1 axial", "MR", 5)
    _write_series(
        tmp_path / "a", "1.2.3.4.1", "T1 axial", "MR", 1, orientation=(0, 1, 0, 0, 0, -1), start=20, name="loc"
    )  # a localizer sharing the series UID
    _write_series(tmp_path / "b", "1.2.3.4.2", "T1 crop", "MR", 8, image_type="DERIVED\\SECONDARY")
    _write_series(tmp_path / "c", "1.2.3.4.3", "CT head", "CT", 6)
    return tmp_path


def test_listing_names_each_series_and_leaves_the_localizer_out(study):
    listed = dicom.list_dicom_series(study)
    assert [(s.index, s.description, s.modality, len(s.files)) for s in listed] == [
        (1, "T1 crop", "MR", 8),
        (2, "CT head", "CT", 6),
        (3, "T1 axial", "MR", 5),
    ]
    axial = listed[2]
    assert axial.left_out == 1 and not axial.derived and listed[0].derived
    assert axial.describe() == "3: T1 axial [MR] 10x12x5, 5 files (UID 1.2.3.4.1)"


def test_default_choice_fits_the_model_then_prefers_original_series(study):
    listed = dicom.list_dicom_series(study)
    assert dicom.choose_dicom_series(listed, modality="MR").description == "T1 axial"  # not the larger derived crop
    assert dicom.choose_dicom_series(listed, modality="CT").description == "CT head"
    assert dicom.choose_dicom_series(listed).description == "CT head"  # no model modality: original, most files


@pytest.mark.parametrize("choice, expected", [("1", "T1 crop"), ("1.2.3.4.3", "CT head"), ("AXIAL", "T1 axial")])
def test_the_user_chooses_by_number_uid_or_description(study, choice, expected):
    assert dicom.choose_dicom_series(dicom.list_dicom_series(study), choice).description == expected


def test_an_ambiguous_or_unknown_choice_lists_the_series(study):
    with pytest.raises(ValueError, match=r"names 2 series.*1: T1 crop"):
        dicom.choose_dicom_series(dicom.list_dicom_series(study), "T1")
    with pytest.raises(ValueError, match="names no series"):
        dicom.choose_dicom_series(dicom.list_dicom_series(study), "9")


def test_read_image_reads_the_chosen_series_with_its_modality(study):
    image = images.read_image(study, modality="MR")
    assert image.GetSize() == (10, 12, 5) and image.GetMetaData("0008|0060") == "MR"
    assert image.GetSpacing()[2] == pytest.approx(2.0)
    assert images.read_image(study, series="CT").GetMetaData("0008|0060") == "CT"


# ------------------------------------------------------------------------------ another modality
from _inference_helpers import make_package  # noqa: E402
from AttentionMambaSegLib.cli import main  # noqa: E402
from AttentionMambaSegLib.inference.checks import check_modality  # noqa: E402


def _mr_package(tmp_path):
    package = make_package(tmp_path / "mr-model", model_id="mr-model", target_spacing=(2.0, 2.0))
    package.card = replace(package.card, modality="MR")
    return package


def test_a_ct_series_is_refused_by_an_mr_model_unless_forced(study, tmp_path, caplog):
    package = _mr_package(tmp_path)
    ct = images.read_image(study, series="CT")
    with pytest.raises(ValueError, match=r"looks like CT \(its DICOM Modality is CT\).*trained on MR.*--force"):
        check_modality(ct, package)
    check_modality(ct, package, force=True)
    assert "Segmenting it anyway (forced)" in caplog.text
    check_modality(images.read_image(study, series="axial"), package)  # MR: accepted


def test_hounsfield_intensities_without_a_dicom_tag_look_like_ct(tmp_path):
    package = _mr_package(tmp_path)
    arr = np.full((4, 20, 20), -1000, np.int16)
    arr[:, 5:15, 5:15] = 40  # soft tissue in air
    with pytest.raises(ValueError, match=r"looks like CT \(75% of its voxels are at or below -500"):
        check_modality(sitk.GetImageFromArray(arr), package)
    check_modality(sitk.GetImageFromArray(np.abs(arr)), package)  # the same values as magnitudes: fine
    package.card = replace(package.card, modality="dermoscopy (RGB)")  # no DICOM modality code: nothing to compare
    check_modality(sitk.GetImageFromArray(arr), package)


def test_segment_cli_refuses_then_forces(study, tmp_path, capsys):
    package = _mr_package(tmp_path)
    import json

    config_path = package.path / "model.json"
    config = json.loads(config_path.read_text())
    config["modality"] = "MR"
    config_path.write_text(json.dumps(config))
    out = tmp_path / "ct.nii.gz"
    assert (
        main(
            [
                "segment",
                str(study),
                "--series",
                "CT head",
                "-o",
                str(out),
                "--model",
                str(package.path),
                "--device",
                "cpu",
                "--no-tta",
            ]
        )
        == 1
    )
    assert "looks like CT" in capsys.readouterr().err and not out.exists()
    assert (
        main(
            [
                "segment",
                str(study),
                "--series",
                "CT head",
                "-o",
                str(out),
                "--model",
                str(package.path),
                "--device",
                "cpu",
                "--no-tta",
                "--force",
            ]
        )
        == 0
    )
    assert sitk.ReadImage(str(out)).GetSize() == (10, 12, 6)
