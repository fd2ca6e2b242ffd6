"""Tests of metrics.py: Dice and HD95 against hand-computed values, anisotropic spacing, empty masks."""

import math

import numpy as np
import pytest
import SimpleITK as sitk

from AttentionMambaSegLib.metrics import array_spacing, dice, hd95, image_diagonal, per_class_metrics


def test_dice_by_hand():
    pred = np.zeros((4, 4), bool)
    ref = np.zeros((4, 4), bool)
    pred[0, :3] = True  # 3 pixels
    ref[0, 1:] = True  # 3 pixels, 2 shared
    assert dice(pred, ref) == pytest.approx(2 * 2 / 6)
    assert dice(pred.astype(np.uint8), ref.astype(np.uint8)) == pytest.approx(2 / 3)


def test_empty_mask_conventions():
    empty = np.zeros((4, 5), bool)
    full = np.zeros((4, 5), bool)
    full[1, 1] = True
    assert dice(empty, empty) == 1.0 and hd95(empty, empty, (2.0, 1.0)) == 0.0
    assert dice(full, empty) == 0.0 and dice(empty, full) == 0.0
    diagonal = math.sqrt((4 * 2.0) ** 2 + (5 * 1.0) ** 2)
    assert hd95(full, empty, (2.0, 1.0)) == pytest.approx(diagonal)
    assert hd95(empty, full, (2.0, 1.0)) == pytest.approx(diagonal)
    assert image_diagonal((4, 5), (2.0, 1.0)) == pytest.approx(diagonal)


def test_hd95_single_voxels_with_anisotropic_spacing():
    pred = np.zeros((5, 6), bool)
    ref = np.zeros((5, 6), bool)
    pred[0, 0] = True
    ref[3, 4] = True
    assert hd95(pred, ref) == pytest.approx(5.0)
    assert hd95(pred, ref, (2.0, 0.5)) == pytest.approx(math.sqrt((3 * 2.0) ** 2 + (4 * 0.5) ** 2))
    # 3D, ACDC-like spacing (10 mm between slices, 1.5625 mm in-plane), array order (S, H, W).
    p3 = np.zeros((3, 4, 4), bool)
    r3 = np.zeros((3, 4, 4), bool)
    p3[0, 1, 1] = True
    r3[2, 1, 3] = True
    assert hd95(p3, r3, (10.0, 1.5625, 1.5625)) == pytest.approx(math.sqrt(20.0**2 + (2 * 1.5625) ** 2))


def test_hd95_parallel_lines_uses_spacing_per_axis():
    pred = np.zeros((3, 4), bool)
    ref = np.zeros((3, 4), bool)
    pred[0] = True
    ref[2] = True
    assert hd95(pred, ref, (1.5, 1.0)) == pytest.approx(3.0)  # 2 rows x 1.5 mm
    assert hd95(pred.T, ref.T, (1.0, 1.5)) == pytest.approx(3.0)


def test_hd95_is_the_95th_percentile_of_pooled_surface_distances():
    # One row: every voxel is a surface voxel. ref = columns 0..19; pred = the same plus 37, 38, 39.
    ref = np.zeros((1, 40), bool)
    ref[0, :20] = True
    pred = ref.copy()
    pred[0, 37:] = True
    # pooled distances: 40 zeros, then 18, 19, 20 -> percentile 95 at index 0.95 * 42 = 39.9
    expected = 0.9 * 18.0
    assert hd95(pred, ref) == pytest.approx(expected)
    assert hd95(ref, pred) == pytest.approx(expected)  # symmetric
    assert hd95(pred, ref, (1.0, 0.5)) == pytest.approx(expected * 0.5)


def test_identical_masks_and_shape_errors():
    mask = np.zeros((6, 6), bool)
    mask[1:4, 2:5] = True
    assert dice(mask, mask) == 1.0 and hd95(mask, mask, (3.0, 0.7)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        dice(mask, mask[:5])
    with pytest.raises(ValueError, match="one value per array axis"):
        hd95(mask, mask, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        hd95(mask, mask, (0.0, 1.0))


def test_per_class_and_array_spacing():
    image = sitk.Image(4, 3, 2, sitk.sitkUInt8)
    image.SetSpacing((0.5, 0.7, 5.0))
    assert array_spacing(image) == (5.0, 0.7, 0.5)
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    ref = np.array([[0, 1, 0], [2, 2, 0]])
    scores = per_class_metrics(pred, ref, [1, 2, 3])
    assert scores[1]["dice"] == pytest.approx(2 / 3)
    assert scores[2]["dice"] == 1.0 and scores[2]["hd95"] == 0.0
    assert scores[3] == {"dice": 1.0, "hd95": 0.0, "pred_voxels": 0, "ref_voxels": 0}
