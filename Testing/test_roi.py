"""Segmenting inside a region of interest (bundled ACDC example, a small stand-in network)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from _inference_helpers import make_package
from AttentionMambaSegLib import images, inference
from AttentionMambaSegLib.cli import main
from AttentionMambaSegLib.inference import InferenceSettings
from AttentionMambaSegLib.inference.roi import RegionOfInterest, crop_to_roi, paste_labels

EXAMPLE = Path(__file__).resolve().parents[1] / "AttentionMambaSeg/Resources/Examples/patient019_frame01_0000.nii.gz"


@pytest.fixture(scope="module")
def image():
    return images.read_image(EXAMPLE)


def _centre(image):
    size = image.GetSize()
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in size]))


def test_labels_inside_the_roi_are_those_of_the_crop_segmented_alone(tmp_path, image):
    package = make_package(tmp_path / "m")
    roi = RegionOfInterest(tuple(_centre(image)), (100.0, 80.0, 30.0))
    predictor = inference.Predictor(package, InferenceSettings(device="cpu", tta=False))
    full = predictor.predict(image, roi=roi)
    assert full.GetSize() == image.GetSize() and full.GetOrigin() == image.GetOrigin()
    assert full.GetSpacing() == image.GetSpacing() and full.GetDirection() == image.GetDirection()
    crop, start = crop_to_roi(image, roi)
    # voxels whose centres the box covers (1.4453 mm pixels, the centre between two voxels in-plane):
    # 100 / 1.4453 = 69.2, so 70; 80 / 1.4453 = 55.4, so 56; 30 / 10 = 3
    assert crop.GetSize() == (70, 56, 3)
    alone = sitk.GetArrayFromImage(predictor.predict(crop))
    out = sitk.GetArrayFromImage(full)
    x, y, z = start
    inside = out[z : z + 3, y : y + 56, x : x + 70]
    np.testing.assert_array_equal(inside, alone)
    assert out.sum() == inside.sum() and alone.any()  # nothing outside the box


def test_an_roi_outside_the_image_is_a_clear_error(tmp_path, image):
    package = make_package(tmp_path / "m")
    far = RegionOfInterest(tuple(_centre(image) + [0, 0, 500.0]), (20.0, 20.0, 20.0))
    with pytest.raises(ValueError, match="lies outside the image"):
        inference.predict_volume(image, package, InferenceSettings(device="cpu", tta=False, roi=far))


def test_ras_numbers_and_markups_files_give_the_same_box(tmp_path):
    roi = RegionOfInterest.from_text("10,-20,30,40,50,60")
    assert roi.center == (-10.0, 20.0, 30.0) and roi.size == (40.0, 50.0, 60.0)  # RAS -> LPS
    for system, center in (("RAS", [10, -20, 30]), ("LPS", [-10, 20, 30])):
        path = tmp_path / f"roi-{system}.mrk.json"
        path.write_text(
            json.dumps(
                {
                    "markups": [
                        {
                            "type": "ROI",
                            "coordinateSystem": system,
                            "center": center,
                            "size": [40, 50, 60],
                            "orientation": [1, 0, 0, 0, 1, 0, 0, 0, 1],
                        }
                    ]
                }
            )
        )
        from_file = RegionOfInterest.from_markups_file(path)
        assert from_file.center == roi.center and from_file.size == roi.size
        assert np.allclose(np.asarray(from_file.axes) @ [1, 0, 0], [-1, 0, 0] if system == "RAS" else [1, 0, 0])
    with pytest.raises(ValueError, match="six numbers"):
        RegionOfInterest.from_text("1,2,3")
    (tmp_path / "points.mrk.json").write_text(json.dumps({"markups": [{"type": "Fiducial"}]}))
    with pytest.raises(ValueError, match="holds no ROI"):
        RegionOfInterest.from_markups_file(tmp_path / "points.mrk.json")


def test_a_rotated_roi_keeps_only_the_voxels_under_it(image):
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    roi = RegionOfInterest(tuple(_centre(image)), (60.0, 60.0, 100.0), ((c, -s, 0.0), (s, c, 0.0), (0.0, 0.0, 1.0)))
    crop, start = crop_to_roi(image, roi)
    ones = sitk.Image(crop.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(crop)
    pasted = sitk.GetArrayFromImage(paste_labels(ones, image, start, roi))
    # the box holds 60 x 60 mm in-plane: (60 / 1.4453)^2 = 1,723.4 voxels a slice, on all 11 slices
    assert pasted[5].sum() == pytest.approx(1723.4, rel=0.03)
    assert pasted.sum() == pytest.approx(11 * 1723.4, rel=0.03)
    assert crop.GetSize()[0] > 60 / 1.4453 * 1.35  # the bounding box of the rotated square is wider


def test_segment_cli_roi(tmp_path, capsys):
    package = make_package(tmp_path / "m")
    out = tmp_path / "roi.nii.gz"
    # the example's centre is (107.5 x 1.4453, 127.5 x 1.4453, 50) = (155.4, 184.3, 50) mm LPS, that is
    # (-155.4, -184.3, 50) RAS
    assert (
        main(
            [
                "segment",
                str(EXAMPLE),
                "-o",
                str(out),
                "--model",
                str(package.path),
                "--device",
                "cpu",
                "--no-tta",
                "--roi=-155.4,-184.3,50,100,80,30",
            ]
        )
        == 0
    )
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert labels.shape == (11, 256, 216) and labels.any()
    assert not labels[:4].any() and not labels[7:].any()  # 30 mm about z = 50 mm: slices 4-6 only
    assert (
        main(
            [
                "segment",
                str(EXAMPLE),
                "-o",
                str(tmp_path / "far.nii.gz"),
                "--model",
                str(package.path),
                "--device",
                "cpu",
                "--no-tta",
                "--roi",
                "0,0,500,10,10,10",
            ]
        )
        == 1
    )
    assert "lies outside the image" in capsys.readouterr().err and not (tmp_path / "far.nii.gz").exists()


def test_a_long_run_is_announced_with_the_quicker_options(tmp_path, image, caplog):
    package = make_package(tmp_path / "m")
    clock = iter(range(0, 10_000, 100))  # every reading of the clock is 100 s later
    predictor = inference.Predictor(package, InferenceSettings(device="cpu", tta=True, batch_size=1))
    predictor.clock = lambda: next(clock)
    predictor.predict(image[:, :, 3:8])
    said = [r for r in caplog.records if "This run will take about" in r.getMessage()]
    assert len(said) == 1 and getattr(said[0], "event", None) == "estimate"
    assert "quicker: --mode fast (fewer network passes), --roi" in said[0].getMessage()
    caplog.clear()
    predictor = inference.Predictor(package, InferenceSettings(device="cpu", tta=False))
    predictor.clock = lambda: 0.0  # instantaneous: nothing said
    predictor.predict(image[:, :, 3:8])
    assert not [r for r in caplog.records if "This run will take" in r.getMessage()]
