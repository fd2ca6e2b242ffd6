"""Tests of AttentionMambaSegLib.slicing, .stacking and .normalization: orientation, slice axis, in-plane resampling,
inverse, normalisation. Known answers on synthetic images and on the shared ACDC / Hippocampus / DICOM / PH2 data."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from _inference_helpers import (
    ACDC_IMAGE,
    ACDC_LABEL,
    DICOM_DIR,
    HIPPO_IMAGE,
    HIPPO_LABEL,
    PH2_IMAGE,
    dice,
    permute_flip,
)
from AttentionMambaSegLib import images, normalization, slicing as P, stacking
from AttentionMambaSegLib.postprocessing import keep_largest_component
from conftest import require


def onehot(labels: np.ndarray, k: int) -> np.ndarray:
    """uint8 (S, H, W) -> float32 (S, K, H, W)."""
    return np.eye(k, dtype=np.float32)[labels].transpose(0, 3, 1, 2)


def image_from(arr, spacing=(1.0, 1.0, 1.0), direction=None, origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def rotation_x(deg):
    t = np.deg2rad(deg)
    return np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])


# ------------------------------------------------------------------------------------- orientation
def test_validate_axes_code():
    assert P.validate_axes_code("ras") == "RAS"
    assert P.validate_axes_code("PIL") == "PIL"
    for bad in ("LPR", "LP", "XYZ", "LLS", ""):
        with pytest.raises(ValueError, match="one from each"):
            P.validate_axes_code(bad)


def test_reorient_keeps_every_voxel_at_its_physical_position():
    require(HIPPO_IMAGE)
    img = sitk.ReadImage(str(HIPPO_IMAGE))  # RAS-stored NIfTI: direction diag(-1, -1, 1)
    out = P.reorient(img, "LPS")
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(out.GetDirection()) == "LPS"
    assert np.allclose(out.GetDirection(), np.eye(3).ravel())
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = [int(rng.integers(0, s)) for s in img.GetSize()]
        point = img.TransformIndexToPhysicalPoint(idx)
        idx2 = out.TransformPhysicalPointToIndex(point)
        assert out[idx2] == img[idx]


def test_reorient_leaves_2d_images_alone():
    img = sitk.Image([5, 4], sitk.sitkUInt8)
    assert P.reorient(img, "LPS") is img


# ------------------------------------------------------------------------------------- slice axis
def test_choose_slice_axis_largest_spacing():
    img = sitk.Image([8, 8, 8], sitk.sitkFloat32)
    img.SetSpacing((1.0, 1.0, 3.0))
    assert P.choose_slice_axis(img) == 2
    img.SetSpacing((5.0, 1.0, 1.0))
    assert P.choose_slice_axis(img) == 0
    img.SetSpacing((1.0, 1.4, 1.0))  # not anisotropic enough (< 1.5x): falls back to the z rule
    assert P.choose_slice_axis(img) == 2


def test_choose_slice_axis_uses_direction_not_numpy_order():
    img = sitk.Image([8, 8, 8], sitk.sitkFloat32)  # isotropic
    # Axis 0 (i) runs along patient z, axis 2 along x: a sagittal-like stack.
    img.SetDirection((0, 0, 1, 0, 1, 0, 1, 0, 0))
    assert P.choose_slice_axis(img) == 0
    # Oblique: axis 1 tilted 30 degrees away from z is still the closest to z.
    d = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=float)
    d = rotation_x(30) @ d
    img.SetDirection(d.ravel().tolist())
    assert P.choose_slice_axis(img) == 1


def test_choose_slice_axis_single_slice_volume():
    img = sitk.Image([1, 40, 30], sitk.sitkFloat32)  # one sagittal slice, isotropic spacing
    assert P.choose_slice_axis(img) == 0


def test_choose_slice_axis_real_volumes():
    require(ACDC_IMAGE, DICOM_DIR)
    assert P.choose_slice_axis(P.reorient(sitk.ReadImage(str(ACDC_IMAGE)), "LPS")) == 2
    dicom = images.read_image(DICOM_DIR)
    assert P.choose_slice_axis(P.reorient(dicom, "LPS")) == 2  # 6.5 mm slices
    with pytest.raises(ValueError, match="3D"):
        P.choose_slice_axis(sitk.Image([4, 4], sitk.sitkUInt8))


# ----------------------------------------------------------------------------------- image_to_slices
#: In-plane spacing of the ACDC example (patient019, the original file's pixdim), mm.
ACDC_SPACING = (1.4453099966049194, 1.4453099966049194)


def test_image_to_slices_without_resampling_is_the_array():
    require(ACDC_IMAGE)
    img = sitk.ReadImage(str(ACDC_IMAGE))
    assert img.GetSpacing()[:2] == ACDC_SPACING
    slices, geo = P.image_to_slices(img, ACDC_SPACING, "LPS")
    assert slices.shape == (11, 1, 256, 216) and slices.dtype == np.float32
    np.testing.assert_array_equal(slices[:, 0], sitk.GetArrayFromImage(img).astype(np.float32))
    assert geo.slice_axis == 2 and not geo.resampled
    assert geo.in_plane_shape == (256, 216) and geo.slice_shape == (256, 216)


def test_in_plane_resampling_known_answer():
    # Rows 0, 2, 4, 6 mm-spaced by 1 mm -> 2 mm pixels centred between pairs: (0+2)/2, (4+6)/2.
    arr = np.tile(np.array([0.0, 2.0, 4.0, 6.0], dtype=np.float32)[None, :, None], (2, 1, 4))  # (k, j, i)
    img = image_from(arr, spacing=(1.0, 1.0, 5.0))
    slices, geo = P.image_to_slices(img, (2.0, 1.0), "LPS")
    assert slices.shape == (2, 1, 2, 4)
    np.testing.assert_allclose(slices[0, 0, :, 0], [1.0, 5.0], atol=1e-5)
    assert geo.slice_spacing == (2.0, 1.0)
    # The slice axis (k, 5 mm) is never interpolated: each output slice is exactly one input slice.
    arr2 = arr.copy()
    arr2[1] += 100
    s2, _ = P.image_to_slices(image_from(arr2, spacing=(1.0, 1.0, 5.0)), (2.0, 1.0), "LPS")
    np.testing.assert_allclose(s2[1, 0, :, 0], [101.0, 105.0], atol=1e-4)
    np.testing.assert_allclose(s2[0, 0, :, 0], [1.0, 5.0], atol=1e-5)


def test_image_to_slices_resampled_shapes_and_labels():
    require(ACDC_IMAGE, ACDC_LABEL)
    img, lab = sitk.ReadImage(str(ACDC_IMAGE)), sitk.ReadImage(str(ACDC_LABEL))
    double = (2 * ACDC_SPACING[0], 2 * ACDC_SPACING[1])
    slices, geo = P.image_to_slices(img, double, "LPS")
    assert slices.shape == (11, 1, 128, 108)
    assert geo.slice_spacing == double
    labels, lgeo = P.image_to_slices(lab, double, "LPS", is_label=True)
    assert labels.shape == (11, 128, 108) and labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 1, 2, 3}  # nearest neighbour: no new values
    assert lgeo == geo


def test_permuted_and_flipped_storage_gives_identical_slices():
    require(HIPPO_IMAGE, HIPPO_LABEL)
    img, lab = sitk.ReadImage(str(HIPPO_IMAGE)), sitk.ReadImage(str(HIPPO_LABEL))
    img2, lab2 = permute_flip(img), permute_flip(lab)
    assert img2.GetSize() != img.GetSize()  # really stored differently
    a, _ = P.image_to_slices(img, (0.8, 0.8), "LPS")
    b, _ = P.image_to_slices(img2, (0.8, 0.8), "LPS")
    np.testing.assert_array_equal(a, b)
    la, _ = P.image_to_slices(lab, (0.8, 0.8), "LPS", is_label=True)
    lb, _ = P.image_to_slices(lab2, (0.8, 0.8), "LPS", is_label=True)
    np.testing.assert_array_equal(la, lb)


@pytest.mark.parametrize("target", [None, ACDC_SPACING])
def test_roundtrip_is_exact_without_resampling(target):
    require(ACDC_LABEL)
    lab = sitk.ReadImage(str(ACDC_LABEL))
    labels, geo = P.image_to_slices(lab, target, "LPS", is_label=True)
    back = stacking.slices_to_image(onehot(labels, 4), geo)
    np.testing.assert_array_equal(back, sitk.GetArrayFromImage(lab))


def test_roundtrip_with_resampling_and_real_direction():
    require(HIPPO_LABEL)
    lab = sitk.ReadImage(str(HIPPO_LABEL))
    labels, geo = P.image_to_slices(lab, (0.5, 0.5), "LPS", is_label=True)
    assert geo.slice_shape == (102, 70)
    # Up-sampling then back: nearest neighbour + linear/argmax recovers the labels exactly.
    back = stacking.slices_to_image(onehot(labels, 3), geo)
    np.testing.assert_array_equal(back, sitk.GetArrayFromImage(lab))
    # Down-sampling to 2 mm and back loses detail but keeps the structures in place.
    labels2, geo2 = P.image_to_slices(lab, (2.0, 2.0), "LPS", is_label=True)
    back2 = stacking.slices_to_image(onehot(labels2, 3), geo2)
    ref = sitk.GetArrayFromImage(lab)
    for c in (1, 2):
        assert dice(back2, ref, c) > 0.6


def test_label_slices_to_image_geometry_oblique_dicom():
    require(DICOM_DIR)
    dicom = images.read_image(DICOM_DIR)
    slices, geo = P.image_to_slices(dicom, (1.0, 1.0), "LPS")
    assert slices.shape[0] == 22
    labels = np.zeros((geo.num_slices, *geo.in_plane_shape), dtype=np.uint8)
    labels[3, 10:20, 30:40] = 1
    out = stacking.label_slices_to_image(labels, geo)
    assert out.GetSize() == dicom.GetSize()
    assert out.GetSpacing() == dicom.GetSpacing()
    assert out.GetOrigin() == dicom.GetOrigin()
    assert out.GetDirection() == dicom.GetDirection()
    arr = sitk.GetArrayFromImage(out)
    assert arr.sum() == 100 and arr[3, 10:20, 30:40].all()  # DICOM series is already LPS-ordered


def test_one_slice_volume():
    require(ACDC_IMAGE)
    img = sitk.ReadImage(str(ACDC_IMAGE))[:, :, 5:6]
    slices, geo = P.image_to_slices(img, ACDC_SPACING, "LPS")
    assert slices.shape == (1, 1, 256, 216) and geo.slice_axis == 2
    out = stacking.label_slices_to_image(np.ones((1, 256, 216), np.uint8), geo)
    assert out.GetSize() == (216, 256, 1) and out.GetOrigin() == img.GetOrigin()


def test_rgb_png_is_one_slice():
    require(PH2_IMAGE)
    img = sitk.ReadImage(str(PH2_IMAGE))
    slices, geo = P.image_to_slices(img, None, "LPS")
    arr = sitk.GetArrayFromImage(img)  # (H, W, 3)
    assert slices.shape == (1, 3, *arr.shape[:2])
    np.testing.assert_array_equal(slices[0], np.moveaxis(arr, -1, 0).astype(np.float32))
    labels = np.zeros((1, *arr.shape[:2]), np.uint8)
    labels[0, 5, 7] = 1
    out = stacking.label_slices_to_image(labels, geo)
    assert out.GetSize() == img.GetSize() and sitk.GetArrayFromImage(out)[5, 7] == 1


def test_sigmoid_probabilities_threshold_at_half():
    geo = P.image_to_slices(sitk.Image([4, 3], sitk.sitkFloat32), None, "LPS")[1]
    probs = np.full((1, 1, 3, 4), 0.4, np.float32)
    probs[0, 0, 1, 2] = 0.7
    labels = stacking.probabilities_to_label_slices(probs, geo)
    assert labels.sum() == 1 and labels[0, 1, 2] == 1


def test_image_to_slices_rejects_bad_input():
    with pytest.raises(ValueError, match="4D"):
        P.image_to_slices(sitk.Image([4, 4, 4, 2], sitk.sitkFloat32), None, "LPS")
    bad = sitk.GetImageFromArray(np.full((2, 3, 3), 300, np.int16))
    with pytest.raises(ValueError, match="0..255"):
        P.image_to_slices(bad, None, "LPS", is_label=True)
    with pytest.raises(ValueError, match="positive"):
        P.image_to_slices(sitk.Image([4, 4, 4], sitk.sitkFloat32), (0.0, 1.0), "LPS")


# ------------------------------------------------------------------------------------- normalize
def test_normalize_zscore_and_constant_image():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(3, 2, 8, 8)) * 5 + 10).astype(np.float32)
    y = normalization.normalize(x, {"type": "zscore"})
    for c in range(2):
        assert abs(y[:, c].mean()) < 1e-5 and abs(y[:, c].std() - 1) < 1e-4
    with pytest.raises(ValueError, match="constant"):
        normalization.normalize(np.zeros((2, 1, 4, 4), np.float32), {"type": "zscore"})


def test_normalize_ct_rgb_known_answers():
    x = np.array([-2000.0, 0.0, 71.19, 1000.0], np.float32).reshape(1, 1, 2, 2)
    y = normalization.normalize(x, {"type": "ct", "clip": [-956, 277], "mean": 71.19, "std": 127.96})
    np.testing.assert_allclose(
        y.ravel(), [(-956 - 71.19) / 127.96, -71.19 / 127.96, 0.0, (277 - 71.19) / 127.96], rtol=1e-5, atol=1e-6
    )
    rgb = np.full((1, 3, 1, 1), 255.0, np.float32)
    np.testing.assert_allclose(
        normalization.normalize(rgb, {"type": "rgb"}).ravel(),
        [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225],
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="3 channels"):
        normalization.normalize(np.ones((1, 1, 2, 2), np.float32), {"type": "rgb"})
    with pytest.raises(ValueError, match="Unknown normalisation"):
        normalization.normalize(rgb, {"type": "minmax"})


def test_keep_largest_component_known_answer():
    arr = np.zeros((3, 8, 8), dtype=np.uint8)
    arr[0, 0:2, 0:3] = 1  # 6 voxels of label 1
    arr[2, 6:8, 6:8] = 1  # 4 voxels of label 1, not connected to the first
    arr[1, 4, 0:3] = 2  # label 2 in two pieces of 3 and 1 voxels
    arr[1, 4, 6] = 2
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.7, 0.7, 5.0))
    image.SetOrigin((1.0, -2.0, 3.0))
    before = sitk.GetArrayFromImage(image).copy()
    out = keep_largest_component(image, [1, 3])  # 3 is absent: skipped
    expected = arr.copy()
    expected[2, 6:8, 6:8] = 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), expected)
    assert out.GetSpacing() == image.GetSpacing() and out.GetOrigin() == image.GetOrigin()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), before)  # input untouched
    both = sitk.GetArrayFromImage(keep_largest_component(image, [1, 2]))
    assert (both == 2).sum() == 3 and (both == 1).sum() == 6


# ----------------------------------------------------------------------------------- SliceSource
def _streamed_equals_whole(img, target, scheme, atol=2e-4):
    """SliceSource batches == normalize(image_to_slices(...)) on the same image; geometry identical."""
    whole, geo = P.image_to_slices(img, target, "LPS")
    whole = normalization.normalize(whole, scheme)
    source = P.SliceSource(img, target, "LPS", scheme)
    assert source.geometry == geo and len(source) == whole.shape[0]
    parts = [source[a : a + 3] for a in range(0, len(source), 3)]
    streamed = np.concatenate(parts)
    assert streamed.dtype == np.float32 and streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=atol, rtol=0)
    return source, geo


def test_slice_source_matches_image_to_slices_on_real_volumes():
    require(ACDC_IMAGE, HIPPO_IMAGE, DICOM_DIR)
    acdc = sitk.ReadImage(str(ACDC_IMAGE))
    source, geo = _streamed_equals_whole(acdc, ACDC_SPACING, {"type": "zscore"})
    assert not geo.resampled and source._plan.work is acdc  # already LPS: neither reoriented nor copied
    _streamed_equals_whole(acdc, (1.2, 2.0), {"type": "zscore"})  # anisotropic in-plane resampling
    hippo = sitk.ReadImage(str(HIPPO_IMAGE))  # RAS-stored: reoriented first
    _, geo = _streamed_equals_whole(hippo, (0.7, 0.7), {"type": "zscore"})
    assert geo.resampled
    dicom = images.read_image(DICOM_DIR)  # oblique
    _streamed_equals_whole(dicom, (1.0, 1.0), {"type": "ct", "clip": [-100, 400], "mean": 50.0, "std": 80.0})


def test_slice_source_on_permuted_flipped_volume_and_rgb_photo():
    require(ACDC_IMAGE, PH2_IMAGE)
    acdc = sitk.ReadImage(str(ACDC_IMAGE))
    moved = permute_flip(acdc, (2, 0, 1), (True, False, True))
    a = P.SliceSource(acdc, (1.3, 1.3), "LPS", {"type": "zscore"})[:]
    b = P.SliceSource(moved, (1.3, 1.3), "LPS", {"type": "zscore"})[:]
    np.testing.assert_allclose(a, b, atol=2e-4)  # same anatomy, same slices
    photo = sitk.ReadImage(str(PH2_IMAGE))
    source, geo = _streamed_equals_whole(photo, (2.0, 2.0), {"type": "rgb"})
    assert source[0:1].shape == (1, 3, *geo.slice_shape)


def test_slice_source_refuses_constant_image_like_normalize():
    img = image_from(np.full((3, 8, 8), 7, np.int16))
    with pytest.raises(ValueError, match="constant"):
        P.SliceSource(img, None, "LPS", {"type": "zscore"})
