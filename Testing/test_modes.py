"""Speed modes, the foreground crop, the confidence per segment and the photo plausibility warning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from _inference_helpers import PH2_IMAGE, TinyConvNet, make_package
from AttentionMambaSegLib import images, inference
from AttentionMambaSegLib.card import Appearance, ConfidenceRule, PassPlan, SpeedModes
from AttentionMambaSegLib.inference import InferenceSettings
from AttentionMambaSegLib.inference.foreground import ForegroundCrop
from AttentionMambaSegLib.inference.result import ConfidenceTally
from AttentionMambaSegLib.inference.sliding_window import BatchPredictor
from AttentionMambaSegLib.package import load_model_package
from conftest import require


def test_speed_modes_read_resolve_and_refuse():
    default = SpeedModes.from_dict(None)
    assert default.default_mode("cpu") == "accurate" and default.resolve(None, "cpu")[1] == PassPlan("sliding", 4)
    modes = SpeedModes.from_dict(
        {
            "modes": {
                "fast": {"window": "slice", "flips": 1, "foreground_crop": True},
                "accurate": {"window": "slice", "flips": 4},
            },
            "cpu_mode": "fast",
            "largest_slice": [512, 512],
        }
    )
    assert modes.resolve(None, "cpu") == ("fast", PassPlan("slice", 1, True))
    assert modes.resolve(None, "cuda") == ("accurate", PassPlan("slice", 4, False))
    assert modes.resolve("fast", "cpu", tta=True)[1].flips == 4  # --no-tta / tta override the mode's flips
    assert modes.resolve("accurate", "cpu", window=(128, 128))[1].window == "sliding"
    with pytest.raises(ValueError, match="inference.modes.fast.flips"):
        SpeedModes.from_dict({"modes": {"fast": {"flips": 3}}})
    with pytest.raises(ValueError, match="cpu_mode"):
        SpeedModes.from_dict({"cpu_mode": "quick"})
    with pytest.raises(ValueError, match="Unknown speed mode"):
        modes.plan("quick")


def _batches(network, whole, flips=1, largest=None, patch=(64, 64)):
    return BatchPredictor(network, patch, 3, flips, "softmax", "cpu", 0.5, whole_slice=whole, largest_slice=largest)


def test_one_padded_window_equals_a_single_sliding_window_of_the_padded_size():
    net = TinyConvNet(1, 3).eval()
    x = np.random.default_rng(0).normal(size=(2, 1, 150, 97)).astype(np.float32)
    whole = _batches(net, True, flips=2)(x)
    single = _batches(net, False, flips=2, patch=(160, 128))(x)  # one window: the Gaussian weights cancel
    np.testing.assert_allclose(whole, single, atol=1e-6)
    assert _batches(net, True).one_window(150, 97) == (160, 128)
    assert _batches(net, True, largest=[128, 128]).one_window(150, 97) is None  # larger than validated: sliding


class _Threshold(torch.nn.Module):
    """Class 1 where the input exceeds 0.5, else background: a local rule, so a crop changes nothing inside it."""

    def forward(self, x):
        fg = (x[:, :1] > 0.5).float() * 20 - 10
        return torch.cat([-fg, fg, torch.full_like(fg, -10)], dim=1)


class _Stack:
    def __init__(self, array):
        self.array = array

    def __len__(self):
        return len(self.array)

    def __getitem__(self, index):
        return self.array[index]


def test_the_foreground_crop_finds_the_box_and_segments_again_whole_what_reaches_its_edge():
    slices = np.zeros((5, 1, 200, 240), dtype=np.float32)
    slices[:, :, 90:110, 100:130] = 1.0  # a structure in the middle of every slice
    slices[4, :, 5:15, 5:15] = 1.0  # and, on the last slice, one far away
    slices[3, :, 60:140, 100:130] = 1.0  # taller on slice 3: it reaches beyond the box
    stack = _Stack(slices)
    batches = _batches(_Threshold(), True)
    crop = ForegroundCrop.locate(batches, stack, margin_mm=10.0, target_spacing=(1.0, 1.0), min_size=(32, 32))
    r0, r1, c0, c1 = crop.box
    assert (r1 - r0) % 32 == 0 and (c1 - c0) % 32 == 0
    assert r0 <= 80 and r1 >= 120 and c0 <= 90 and c1 >= 140  # the foreground with 10 mm on each side
    whole = batches(slices)
    full = crop.uncrop(batches(crop.view(stack)[0:5]), 0, batches, stack)
    assert crop.redone == 1  # slice 3 reached the edge of the box; the far structure of slice 4 is outside it
    np.testing.assert_array_equal(full[:4].argmax(1), whole[:4].argmax(1))
    assert full[4].argmax(0)[5:15, 5:15].max() == 0 and whole[4].argmax(0)[5:15, 5:15].min() == 1


def test_confidence_tally_and_review_rule_known_answers():
    tally = ConfidenceTally(3, "softmax")
    p = np.zeros((1, 3, 2, 2), dtype=np.float32)
    p[0, :, 0, 0] = [0.1, 0.9, 0.0]
    p[0, :, 0, 1] = [0.3, 0.7, 0.0]
    p[0, :, 1, :] = [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    tally.add(p)
    assert tally.confidence() == {1: pytest.approx(0.8), 2: None}
    sigmoid = ConfidenceTally(1, "sigmoid")
    sigmoid.add(np.array([[[[0.9, 0.7, 0.2]]]], dtype=np.float32))
    assert sigmoid.confidence() == {1: pytest.approx(0.8)}
    rule = ConfidenceRule.from_dict({"threshold": 0.85, "by_mode": {"accurate": 0.9}})
    assert rule.review_reason(0.8) == "low confidence (0.8000 < 0.8500)"
    assert rule.review_reason(0.9) is None and rule.review_reason(None, voxels=0) == "not found"
    assert rule.for_mode("accurate").review_reason(0.88) == "low confidence (0.8800 < 0.9000)"
    assert rule.for_mode("fast").threshold == 0.85
    with pytest.raises(ValueError, match="confidence.threshold"):
        ConfidenceRule.from_dict({"threshold": 1.5})
    with pytest.raises(ValueError, match="field 'confidence' must be an object"):
        ConfidenceRule.from_dict(0.9)


def test_segment_reports_confidence_and_flags_per_segment(tmp_path):
    package = make_package(tmp_path / "m")
    card = json.loads((package.path / "model.json").read_text(encoding="utf-8"))
    card["confidence"] = {"threshold": 0.999}
    (package.path / "model.json").write_text(json.dumps(card), encoding="utf-8")
    image = sitk.GetImageFromArray(np.random.default_rng(1).normal(size=(3, 64, 64)).astype(np.float32))
    image.SetSpacing((1.0, 1.0, 2.0))
    predictor = inference.Predictor(load_model_package(package.path), InferenceSettings(device="cpu", tta=False))
    result = predictor.segment(image)
    labels = sitk.GetArrayFromImage(result.labels)
    report = result.report()
    assert [s["label_value"] for s in report["segments"]] == [1, 2, 3]
    for s in report["segments"]:
        assert s["voxels"] == int(np.count_nonzero(labels == s["label_value"]))
        assert s["volume_ml"] == pytest.approx(s["voxels"] * 2.0 / 1000, abs=1e-3)
        assert s["needs_review"] == (s["confidence"] is None or s["confidence"] < 0.999)
    assert report["confidence_threshold"] == 0.999 and report["mode"] in ("fast", "accurate")


def test_a_photo_unlike_the_training_images_gets_a_warning(caplog):
    require(PH2_IMAGE)
    appearance = load_model_package("skin-lesion-ph2").card.training_appearance
    photo = sitk.GetArrayFromImage(images.read_image(PH2_IMAGE)).astype(np.float64)
    assert appearance.input_warning(photo) is None
    reddened = np.clip(photo * [1.0, 0.55, 0.55], 0, 255)  # mucosa-red, as an endoscopy photo
    said = appearance.input_warning(reddened)
    assert said is not None and "green share" in said
    assert Appearance.from_dict(None).input_warning(reddened) is None
    with pytest.raises(ValueError, match="appearance.features.mean_red"):
        Appearance.from_dict({"features": {"mean_red": {"mean": 1.0, "sd": 0}}})
