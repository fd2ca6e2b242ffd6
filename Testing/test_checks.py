"""Warnings about an input far outside the images a model was trained on (model.json ``training_geometry``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from _inference_helpers import DICOM_DIR, HIPPO_IMAGE, TinyConvNet, make_config
from AttentionMambaSegLib import images, package as pkg
from AttentionMambaSegLib.card import ModelCard, TrainingGeometry
from AttentionMambaSegLib.inference import InferenceSettings, RegionOfInterest
from AttentionMambaSegLib.inference.checks import input_range_warnings
from AttentionMambaSegLib.inference.file_runner import report_path_for, segment_files
from conftest import require

GEOMETRY = {"in_plane_spacing_mm": 1.0, "slice_spacing_mm": 1.0, "field_of_view_mm": [43.0, 58.0, 47.0]}


def _card(**geometry) -> ModelCard:
    return ModelCard.from_dict({**make_config(num_classes=3), "training_geometry": {**GEOMETRY, **geometry}})


def _volume(size, spacing) -> sitk.Image:
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(100, 20, size[::-1]).astype(np.float32))
    image.SetSpacing(spacing)
    return image


def test_slices_far_coarser_than_training_are_named_with_both_spacings():
    said = input_range_warnings(_volume((40, 50, 6), (1.0, 1.0, 6.5)), _card())
    assert len(said) == 1
    assert "slices are 6.5 mm apart" in said[0] and "the 1.0 mm of the images model 'test-model'" in said[0]


def test_the_slice_axis_is_the_coarsest_whatever_its_position():
    sagittal = _volume((6, 50, 40), (6.5, 1.0, 1.0))
    assert "slices are 6.5 mm apart" in input_range_warnings(sagittal, _card())[0]


def test_inputs_like_the_training_images_get_no_warning():
    assert input_range_warnings(_volume((40, 50, 40), (1.0, 1.0, 1.5)), _card()) == []
    assert input_range_warnings(_volume((40, 50, 40), (1.0, 1.0, 2.0)), _card()) == []  # 2x: not more than 2x
    card = ModelCard.from_dict(make_config(num_classes=3))  # a card without training_geometry: no check
    assert input_range_warnings(_volume((200, 200, 20), (1.0, 1.0, 8.0)), card) == []


def test_coarse_pixels_and_a_field_of_view_many_times_larger_are_named():
    said = input_range_warnings(_volume((100, 120, 100), (2.5, 2.5, 1.0)), _card())
    assert any("pixels are 2.5 mm wide" in s and "1.0 mm" in s for s in said)
    # 250 x 300 x 100 mm = 7.5 L, 64 times the 43 x 58 x 47 mm box
    assert any("covers 250 x 300 x 100 mm, 64 times the volume" in s and "--roi" in s for s in said)


def test_a_region_of_interest_is_what_the_field_of_view_check_measures():
    image = _volume((200, 200, 150), (1.0, 1.0, 1.0))
    assert any("covers 200 x 200 x 150 mm" in s for s in input_range_warnings(image, _card()))
    centre = image.TransformContinuousIndexToPhysicalPoint([99.5, 99.5, 74.5])
    roi = RegionOfInterest(tuple(centre), (40.0, 50.0, 40.0))  # LPS centre, size in mm
    assert input_range_warnings(image, _card(), roi) == []


def test_training_geometry_is_validated_in_the_card():
    with pytest.raises(ValueError, match="training_geometry.slice_spacing_mm' must be a positive number"):
        _card(slice_spacing_mm=0)
    with pytest.raises(ValueError, match="field_of_view_mm' must be 2 or 3 positive numbers"):
        _card(field_of_view_mm=[10.0])
    with pytest.raises(ValueError, match="unknown keys"):
        _card(spacing=1.0)
    card = _card()
    assert card.training_geometry_range == TrainingGeometry(1.0, 1.0, (43.0, 58.0, 47.0))
    assert ModelCard.from_dict(card.to_dict()).training_geometry == card.training_geometry


def test_the_warning_reaches_the_log_and_the_report(tmp_path, caplog):
    config = {**make_config(num_classes=3), "training_geometry": GEOMETRY}
    pkg.save_model_package(TinyConvNet(1, 3), config, tmp_path / "m")
    package = pkg.load_model_package(tmp_path / "m")
    source = tmp_path / "thick.nii.gz"
    sitk.WriteImage(_volume((40, 50, 4), (1.0, 1.0, 6.5)), str(source))
    out = tmp_path / "thick.seg.nrrd"
    segment_files([source], out, package, InferenceSettings(device="cpu", tta=False))
    warnings = json.loads(report_path_for(out).read_text())["warnings"]
    assert len(warnings) == 1 and "6.5 mm" in warnings[0] and "1.0 mm" in warnings[0]
    logged = [r for r in caplog.records if r.levelname == "WARNING" and "6.5 mm" in r.getMessage()]
    assert len(logged) == 1


def test_the_hippocampus_card_records_its_training_images_and_what_it_needs():
    hippocampus = pkg.load_model_package("hippocampus-msd")  # bundled: fails when missing
    geometry = hippocampus.card.training_geometry_range
    assert geometry.slice_spacing_mm == geometry.in_plane_spacing_mm == 1.0
    assert geometry.field_of_view_mm == (43.0, 58.0, 47.0)
    needs = hippocampus.card.limits["needs"]
    assert "3D T1" in needs and "about 1 mm" in needs and "region of interest" in needs
    assert "Needs a 3D T1" in hippocampus.summary() and "needs" in hippocampus.describe()


def test_a_training_crop_gets_no_warning_and_the_whole_head_series_gets_both():
    require(DICOM_DIR, HIPPO_IMAGE)
    card = pkg.load_model_package("hippocampus-msd").card
    assert input_range_warnings(sitk.ReadImage(str(HIPPO_IMAGE)), card) == []
    head = images.read_image(DICOM_DIR, modality="MR")  # 280 x 320 x 22 voxels of 0.69 x 0.69 x 6.5 mm
    said = input_range_warnings(head, card)
    assert len(said) == 2
    assert "slices are 6.5 mm apart" in said[0] and "1.0 mm" in said[0]
    assert "covers 192 x 220 x 143 mm" in said[1] and "times the volume" in said[1]
    # with the box around the hippocampus the README uses, only the slice spacing is left
    boxed = input_range_warnings(head, card, RegionOfInterest.from_text("28,-20,-5,40,50,40"))
    assert len(boxed) == 1 and "6.5 mm" in boxed[0]
