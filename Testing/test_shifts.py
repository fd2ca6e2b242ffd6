"""Known answers of the shift suite (shifts.py) and the site augmentations (augmentation.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from AttentionMambaSegLib import shifts
from AttentionMambaSegLib.training import augmentation


def test_colour_cast_multiplies_each_channel_and_clips():
    rgb = np.array([[[100, 100, 100], [250, 10, 0]]], dtype=np.uint8)
    out = shifts.colour_cast(rgb, (1.2, 1.0, 0.5))
    np.testing.assert_allclose(out, [[[120, 100, 50], [255, 10, 0]]])


def test_zoom_by_two_puts_the_centre_pixels_at_the_frame():
    a = np.arange(25, dtype=np.float64).reshape(5, 5)
    out = shifts.zoom(a, 2.0)
    # output pixel (i, j) reads input (2 + (i - 2) / 2, 2 + (j - 2) / 2)
    assert out[2, 2] == a[2, 2]
    assert out[0, 0] == pytest.approx((a[1, 1] + a[1, 1]) / 2)
    assert out[0, 2] == pytest.approx(a[1, 2])
    assert out[4, 3] == pytest.approx((a[3, 2] + a[3, 3]) / 2)
    np.testing.assert_array_equal(shifts.zoom(a, 1.0), a)


def test_zoom_out_mirrors_and_labels_stay_labels():
    lab = np.zeros((9, 9), dtype=np.uint8)
    lab[3:6, 3:6] = 1
    out = shifts.zoom(lab, 0.5, nearest=True)
    assert set(np.unique(out)) == {0.0, 1.0}
    assert out[4, 4] == 1 and out[4, 2] == 0  # the 3-pixel square shrinks to about 1.5 pixels
    rgb = np.random.default_rng(0).integers(0, 255, (6, 8, 3)).astype(np.float64)
    assert shifts.zoom(rgb, 0.7).shape == (6, 8, 3)


def test_vignette_blackens_the_corners_and_keeps_the_centre():
    rgb = np.full((21, 21, 3), 200.0)
    out = shifts.vignette(rgb, 0.8)
    np.testing.assert_array_equal(out[10, 10], [200, 200, 200])
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    # the middle of an edge is at 1/sqrt(2) = 0.707 of the half diagonal: inside 0.8
    np.testing.assert_array_equal(out[0, 10], [200, 200, 200])


def test_gaussian_blur_keeps_the_mean_and_spreads_a_point():
    rgb = np.zeros((31, 31, 3))
    rgb[15, 15] = 1000.0
    out = shifts.gaussian_blur(rgb, 2.0)
    assert out[..., 0].sum() == pytest.approx(1000.0, rel=1e-3)
    # a 2D Gaussian of sigma 2 peaks at 1 / (2 pi sigma^2) of the mass
    assert out[15, 15, 1] == pytest.approx(1000.0 / (2 * math.pi * 4), rel=0.05)


def test_bias_field_known_values():
    v = np.ones((3, 3))
    out = shifts.bias_field(v, (0.1, 0.0, 0.0, 0.0, 0.2))  # exp(0.1 y + 0.2 x^2), y, x in {-1, 0, 1}
    assert out[1, 1] == pytest.approx(1.0)
    assert out[0, 0] == pytest.approx(math.exp(-0.1 + 0.2))
    assert out[2, 1] == pytest.approx(math.exp(0.1))
    with pytest.raises(ValueError, match="takes 9 coefficients"):
        shifts.bias_field(np.ones((2, 2, 2)), (0.1,) * 5)


def test_gamma_contrast_known_values():
    v = np.array([0.0, 25.0, 100.0])
    np.testing.assert_allclose(shifts.gamma_contrast(v, 0.5), [0.0, 50.0, 100.0])
    np.testing.assert_array_equal(shifts.gamma_contrast(np.full(3, 7.0), 2.0), [7, 7, 7])


def test_rician_noise_of_zero_is_rayleigh():
    out = shifts.rician_noise(np.zeros(200_000), 2.0, np.random.default_rng(0))
    assert out.min() >= 0
    assert out.mean() == pytest.approx(2.0 * math.sqrt(math.pi / 2), rel=0.01)  # the Rayleigh mean


def test_coarse_in_plane_averages_pairs_and_leaves_the_slice_axis():
    v = np.zeros((2, 4, 4))
    v[0] = [[0, 2, 0, 0], [2, 0, 0, 0], [0, 0, 4, 4], [0, 0, 4, 4]]
    out = shifts.coarse_in_plane(v, (1, 2))
    assert out.shape == v.shape
    np.testing.assert_allclose(out[1], 0)
    np.testing.assert_allclose(out[0, 3, 3], 4.0)  # a constant 2x2 block stays
    np.testing.assert_allclose(out[0, 0, 0], 1.0)  # the mean of [[0, 2], [2, 0]]
    assert out[0].mean() == pytest.approx(v[0].mean())


def _rgb_case():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 255, (40, 50, 3)).astype(np.uint8)
    image = sitk.GetImageFromArray(arr, isVector=True)
    image.SetSpacing((0.5, 0.5))
    image.SetOrigin((3.0, 4.0))
    lab = np.zeros((40, 50), dtype=np.uint8)
    lab[10:30, 15:35] = 1
    return image, sitk.GetImageFromArray(lab), arr


def test_suite_is_seeded_by_case_keeps_geometry_and_does_not_touch_the_input():
    image, label, arr = _rgb_case()
    label.CopyInformation(image)
    for shift in shifts.SUITES["dermoscopy"]:
        a1, l1 = shift.apply(image, label, "case1")
        a2, _ = shift.apply(image, label, "case1")
        a3, _ = shift.apply(image, label, "case2")
        np.testing.assert_array_equal(sitk.GetArrayFromImage(a1), sitk.GetArrayFromImage(a2))
        assert not np.array_equal(sitk.GetArrayFromImage(a1), sitk.GetArrayFromImage(a3)), shift.name
        assert a1.GetSpacing() == (0.5, 0.5) and a1.GetOrigin() == (3.0, 4.0)
        assert a1.GetPixelIDValue() == image.GetPixelIDValue() and l1.GetPixelIDValue() == label.GetPixelIDValue()
        assert not np.array_equal(sitk.GetArrayFromImage(a1), arr)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), arr)


def test_mri_suite_on_a_volume():
    rng = np.random.default_rng(2)
    vol = sitk.GetImageFromArray(rng.uniform(0, 500, (6, 20, 24)).astype(np.float32))
    vol.SetSpacing((1.5, 1.5, 10.0))
    lab = sitk.GetImageFromArray(np.zeros((6, 20, 24), np.uint8))
    lab.CopyInformation(vol)
    names = [s.name for s in shifts.SUITES["mri"]]
    assert names == ["bias_field", "contrast", "noise", "coarse"]
    for shift in shifts.SUITES["mri"]:
        out, out_lab = shift.apply(vol, lab, "p1")
        assert out.GetSize() == vol.GetSize()
        np.testing.assert_array_equal(sitk.GetArrayFromImage(out_lab), 0)
    coarse = sitk.GetArrayFromImage(shifts.SUITES["mri"][3].apply(vol, lab, "p1")[0])
    # 10 mm is the slice axis (array axis 0): each slice is coarsened on its own
    single = shifts.coarse_in_plane(sitk.GetArrayFromImage(vol)[2], (0, 1))
    np.testing.assert_allclose(coarse[2], single, rtol=1e-6)


def test_suite_for_normalisation():
    assert shifts.suite_for({"type": "rgb"})[0] == "dermoscopy"
    assert shifts.suite_for({"type": "zscore"})[0] == "mri"
    with pytest.raises(ValueError, match="no shift suite"):
        shifts.suite_for({"type": "ct", "clip": [0, 1], "mean": 0, "std": 1})


# --------------------------------------------------------------------------------------------------
# augmentations


def test_vignette_and_hair_masks():
    m = augmentation.vignette_mask(11, 0.5)
    assert m[5, 5] == 1 and m[0, 0] == 0
    h = augmentation.hair_mask(9, [(4.0, 0.0, 4.0, 8.0, 4.0, 4.0, 1.0)])  # a straight row-4 stroke
    np.testing.assert_array_equal(h[4].numpy(), 1)
    assert float(h[0].sum()) == 0 and float(h[8].sum()) == 0


def test_appearance_draws_a_fixed_number_of_numbers():
    x = torch.randn(3, 32, 32)
    for aug in (augmentation.SITE, augmentation.AugmentationParams(p_gain=1.0)):
        g = torch.Generator().manual_seed(5)
        augmentation.appearance(x, g, aug, True)
        after = torch.rand(1, generator=g)
        g2 = torch.Generator().manual_seed(5)
        augmentation.appearance(x, g2, augmentation.AugmentationParams(p_hair=1.0), True)
        assert torch.equal(torch.rand(1, generator=g2), after)


def test_gain_only_scales_the_rgb_colours():
    aug = augmentation.AugmentationParams(p_gain=1.0, gain_range=(0.5, 0.5), brightness_range=(1.0, 1.0))
    mean = torch.tensor(augmentation.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(augmentation.IMAGENET_STD).view(3, 1, 1)
    colours = torch.full((3, 8, 8), 0.6)
    out = augmentation.appearance((colours - mean) / std, torch.Generator().manual_seed(0), aug, True)
    torch.testing.assert_close(out * std + mean, torch.full((3, 8, 8), 0.3), atol=1e-6, rtol=0)


def test_mri_bias_field_leaves_the_darkest_pixel():
    aug = augmentation.AugmentationParams(p_bias_field=1.0)
    x = torch.rand(1, 16, 16) * 3 - 1
    x[0, 0, 0] = -1.5
    out = augmentation.appearance(x, torch.Generator().manual_seed(0), aug, False)
    assert float(out[0, 0, 0]) == pytest.approx(-1.5)
    assert not torch.allclose(out, x)


def test_paper_preset_draws_no_appearance_and_from_dict_round_trips():
    assert not augmentation.PAPER.has_appearance and augmentation.SITE.has_appearance
    from dataclasses import asdict

    assert augmentation.AugmentationParams.from_dict(asdict(augmentation.SITE)) == augmentation.SITE
    with pytest.raises(ValueError, match="unknown augmentation"):
        augmentation.AugmentationParams.from_dict({"p_colour": 1.0})
