"""Tests of AttentionMambaSegLib.inference: device selection, sliding window + TTA (known answers),
geometry of predict_volume on real data (ACDC, Hippocampus, oblique DICOM, PH2 PNG), orientation
invariance, one-slice volumes, cancel, out-of-memory back-off, bad inputs."""

from __future__ import annotations

import threading
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from _inference_helpers import (
    ACDC_IMAGE,
    ACDC_LABEL,
    DICOM_DIR,
    HIPPO_IMAGE,
    PH2_IMAGE,
    make_config,
    make_package,
    permute_flip,
)
from AttentionMambaSegLib import devices, images, inference, package as pkg
from AttentionMambaSegLib.inference import InferenceSettings
from conftest import require


def assert_same_geometry(out: sitk.Image, ref: sitk.Image):
    assert out.GetPixelID() == sitk.sitkUInt8
    assert out.GetSize() == ref.GetSize()
    assert out.GetSpacing() == ref.GetSpacing()
    assert out.GetOrigin() == ref.GetOrigin()
    assert out.GetDirection() == ref.GetDirection()


class Threshold(torch.nn.Module):
    """Pointwise network: class 1 where x > 0 (sharp softmax); no spatial context, flip-equivariant."""

    def __init__(self, num_classes=2):
        super().__init__()
        self.num_classes = num_classes
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        logits = torch.cat([-x[:, :1], x[:, :1]] + [x[:, :1] * 0 - 50] * (self.num_classes - 2), dim=1)
        return 20 * logits


class OOMNetwork(Threshold):
    """Raises torch.cuda.OutOfMemoryError for batches above ``limit`` inputs, or on ``bad_device``."""

    def __init__(self, limit=10**9, bad_device=None):
        super().__init__()
        self.limit, self.bad_device = limit, bad_device

    def forward(self, x):
        if x.shape[0] > self.limit or (self.bad_device and x.device.type == self.bad_device):
            self.calls.append(("oom", x.shape[0], x.device.type))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x.cpu())


@pytest.fixture
def acdc():
    require(ACDC_IMAGE)
    return images.read_image(ACDC_IMAGE)


@pytest.fixture
def acdc_package(tmp_path):
    return make_package(tmp_path / "acdc", target_spacing=(1.5625, 1.5625))


# ----------------------------------------------------------------------------------------- device
def test_select_device_cpu_and_auto_on_cpu_only_machine():
    device, reason = inference.select_device("cpu")
    assert device == torch.device("cpu") and "CPU" in reason
    if not torch.cuda.is_available():
        device, reason = inference.select_device("auto")
        assert device.type in ("cpu", "mps") and reason
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            inference.select_device("cuda")
    with pytest.raises(ValueError, match="Unknown device"):
        inference.select_device("tpu")


def test_auto_falls_back_to_cpu_when_gpu_probe_fails(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_probe_device", lambda d: "no kernel image is available for execution")
    device, reason = inference.select_device("auto")
    assert device == torch.device("cpu")
    assert "failed the convolution probe" in reason and "no kernel image" in reason
    with pytest.raises(RuntimeError, match="failed a test convolution"):
        inference.select_device("cuda:0")
    with pytest.raises(RuntimeError, match="only 1 CUDA device"):
        inference.select_device("cuda:3")


def test_probe_runs_a_real_convolution_on_cpu():
    devices._probe_cache.pop("cpu", None)
    assert devices._probe_device(torch.device("cpu")) is None


# ----------------------------------------------------------------------------------- sliding window
def test_sliding_window_starts_and_gaussian():
    assert inference.sliding_window_starts(100, 64, 0.5) == [0, 18, 36]
    assert inference.sliding_window_starts(64, 64) == [0]
    assert inference.sliding_window_starts(30, 64) == [0]
    assert inference.sliding_window_starts(128, 64, 0.5) == [0, 32, 64]
    g = inference.gaussian_importance_map((64, 32))
    assert g.shape == (64, 32) and g.max() == pytest.approx(1.0, abs=0.02) and g.min() > 0
    assert np.allclose(g, g[::-1]) and np.allclose(g, g[:, ::-1])


@pytest.mark.parametrize("shape", [(3, 1, 150, 97), (2, 1, 20, 40), (1, 1, 64, 64)])
@pytest.mark.parametrize("tta", [True, False])
def test_predict_slices_known_answer(shape, tta):
    # With a pointwise network the blended, flip-averaged probability is exactly sigmoid(40 x).
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).numpy() * 0.1
    probs = inference.predict_slices(Threshold(), x, (64, 64), 2, tta=tta, batch_size=2)
    assert probs.shape == (shape[0], 2, *shape[2:]) and probs.dtype == np.float32
    expected = 1 / (1 + np.exp(-40 * x[:, 0].astype(np.float64)))
    np.testing.assert_allclose(probs[:, 1], expected, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_predict_slices_sigmoid_and_shape_errors():
    x = np.linspace(-1, 1, 64 * 64, dtype=np.float32).reshape(1, 1, 64, 64)

    class One(torch.nn.Module):
        def forward(self, t):
            return t * 3

    probs = inference.predict_slices(One(), x, (64, 64), 1, activation="sigmoid")
    np.testing.assert_allclose(probs[0, 0], 1 / (1 + np.exp(-3 * x[0, 0])), atol=1e-5)
    with pytest.raises(ValueError, match="returned logits of shape"):
        inference.predict_slices(One(), x, (64, 64), 3)


# ------------------------------------------------------------------------------------ geometry
def test_acdc_geometry_and_known_answer(acdc):
    # Threshold network on z-scored slices: label 1 exactly where the voxel is above the case mean.
    package = make_package_for_threshold(acdc)
    out = inference.predict_volume(acdc, package, InferenceSettings(device="cpu", tta=False), network=Threshold())
    assert_same_geometry(out, acdc)
    arr = sitk.GetArrayFromImage(acdc).astype(np.float64)
    expected = (arr > arr.mean()).astype(np.uint8)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), expected)


def test_window_comes_from_inference_patch_size_or_the_argument(acdc):
    """The sliding window is model.json's inference_patch_size (default: the training patch), or the
    ``window`` argument; any window gives the threshold network's exact answer."""
    image = acdc[:, :, 3:5]  # 2 slices of 154 x 224 (ACDC spacing 1.5625 mm: no resampling)
    expected = (sitk.GetArrayFromImage(image) > sitk.GetArrayFromImage(image).mean()).astype(np.uint8)
    package = make_package_for_threshold(image)
    assert package.card.inference_patch_size == (64, 64)
    for window, sizes in ((None, {(64, 64)}), (256, {(256, 256)}), ((96, 128), {(96, 128)})):
        net = Threshold()
        out = inference.predict_volume(
            image, package, InferenceSettings(device="cpu", tta=False, window=window), network=net
        )
        assert {c[-2:] for c in net.calls} == sizes, window
        np.testing.assert_array_equal(sitk.GetArrayFromImage(out), expected)
    package.card = replace(package.card, inference_patch_size=(128, 128))
    net = Threshold()
    inference.predict_volume(image, package, InferenceSettings(device="cpu", tta=False), network=net)
    assert {c[-2:] for c in net.calls} == {(128, 128)}
    with pytest.raises(ValueError, match="multiples of 32"):
        inference.predict_volume(image, package, InferenceSettings(device="cpu", tta=False, window=100), network=net)


def test_postprocessing_from_model_json_keeps_the_largest_component():
    """model.json postprocessing.largest_component removes the smaller of two bright blobs."""
    arr = np.zeros((2, 64, 64), dtype=np.float32)
    arr[:, 5:25, 5:25] = 100.0  # 2 x 400 voxels
    arr[:, 40:45, 40:45] = 100.0  # 2 x 25 voxels, apart from the first
    image = sitk.GetImageFromArray(arr + np.linspace(0, 1, 64, dtype=np.float32))  # not constant per row
    package = make_package_for_threshold(image)
    raw = sitk.GetArrayFromImage(
        inference.predict_volume(image, package, InferenceSettings(device="cpu", tta=False), network=Threshold())
    )
    assert raw.sum() == 850
    package.card = replace(package.card, postprocessing={"largest_component": [1]})
    out = sitk.GetArrayFromImage(
        inference.predict_volume(image, package, InferenceSettings(device="cpu", tta=False), network=Threshold())
    )
    assert out.sum() == 800 and out[:, 40:45, 40:45].sum() == 0


def make_package_for_threshold(image, spacing=None):
    return pkg.ModelPackage(
        ".",
        make_config(
            "threshold", num_classes=2, target_spacing=spacing, in_channels=image.GetNumberOfComponentsPerPixel()
        ),
    )


def test_resampled_known_answer_on_hippocampus_real_direction():
    require(HIPPO_IMAGE)
    img = images.read_image(HIPPO_IMAGE)  # RAS-stored, direction diag(-1, -1, 1)
    out = inference.predict_volume(
        img, make_package_for_threshold(img, (0.7, 0.7)), InferenceSettings(device="cpu"), network=Threshold()
    )
    assert_same_geometry(out, img)
    arr = sitk.GetArrayFromImage(img).astype(np.float64)
    expected = arr > arr.mean()
    got = sitk.GetArrayFromImage(out).astype(bool)
    assert (got == expected).mean() > 0.97  # interpolation only moves the boundary


@pytest.mark.parametrize("which", ["acdc", "hippocampus", "dicom"])
def test_predict_volume_geometry_real_data(tmp_path, which):
    path = {"acdc": ACDC_IMAGE, "hippocampus": HIPPO_IMAGE, "dicom": DICOM_DIR}[which]
    require(path)
    image = images.read_image(path)
    if which != "hippocampus":
        image = image[:, :, 3:8]  # 5 slices keep the test fast
    package = make_package(tmp_path / "m", target_spacing=(2.5, 2.0))
    seen = []
    out = inference.predict_volume(
        image,
        package,
        InferenceSettings(device="cpu", tta=False, batch_size=3),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert_same_geometry(out, image)
    total = image.GetSize()[2]
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert len(seen) == 1 + -(-total // 3)  # once per batch
    assert set(np.unique(sitk.GetArrayFromImage(out))) <= {0, 1, 2, 3}


def test_ph2_png_rgb_geometry(tmp_path):
    require(PH2_IMAGE)
    image = images.read_image(PH2_IMAGE)
    package = make_package(
        tmp_path / "rgb", in_channels=3, num_classes=1, activation="sigmoid", target_spacing=None, patch_size=(96, 96)
    )
    out = inference.predict_volume(image, package, InferenceSettings(device="cpu", tta=False))
    assert_same_geometry(out, image)
    assert out.GetDimension() == 2
    assert set(np.unique(sitk.GetArrayFromImage(out))) <= {0, 1}


@pytest.mark.parametrize("path, spacing", [(ACDC_IMAGE, (2.5, 2.5)), (HIPPO_IMAGE, (0.8, 0.8))])
def test_permuted_flipped_storage_gives_same_labels_in_physical_space(tmp_path, path, spacing):
    require(path)
    image = images.read_image(path)
    if image.GetSize()[2] > 6:
        image = image[:, :, 3:7]
    package = make_package(tmp_path / "m", target_spacing=spacing)
    a = inference.predict_volume(image, package, InferenceSettings(device="cpu", tta=False))
    moved = permute_flip(image)
    b = inference.predict_volume(moved, package, InferenceSettings(device="cpu", tta=False))
    assert_same_geometry(b, moved)
    assert len(np.unique(sitk.GetArrayFromImage(a))) > 1  # not trivially constant
    # Resample b onto a's grid (nearest neighbour; the grids share every voxel position).
    b_on_a = sitk.Resample(b, a, sitk.Transform(), sitk.sitkNearestNeighbor)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(b_on_a), sitk.GetArrayFromImage(a))


def test_one_slice_volume(tmp_path, acdc):
    # Fixed normalisation (z-score statistics would differ between 1 and 3 slices).
    package = make_package(
        tmp_path / "m",
        target_spacing=(2.5, 2.5),
        normalization={"type": "ct", "clip": [0, 1000], "mean": 60, "std": 40},
    )
    one = acdc[:, :, 4:5]
    out = inference.predict_volume(one, package, InferenceSettings(device="cpu", tta=False))
    assert_same_geometry(out, one)
    full = inference.predict_volume(acdc[:, :, 3:6], package, InferenceSettings(device="cpu", tta=False))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out)[0], sitk.GetArrayFromImage(full)[1])


def test_small_image_is_padded(tmp_path):
    arr = np.random.default_rng(0).normal(size=(2, 20, 30)).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    out = inference.predict_volume(
        img, make_package_for_threshold(img), InferenceSettings(device="cpu"), network=Threshold()
    )
    assert_same_geometry(out, img)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), (arr > arr.mean()).astype(np.uint8))


# -------------------------------------------------------------------------------------- cancel, OOM
def test_cancel_stops_within_one_batch(acdc):
    cancel = threading.Event()
    net = Threshold()
    done = []

    def progress(d, t):
        done.append(d)
        if d > 0:
            cancel.set()

    out = inference.predict_volume(
        acdc,
        make_package_for_threshold(acdc),
        InferenceSettings(device="cpu", tta=False, batch_size=2),
        progress=progress,
        cancel=cancel,
        network=net,
    )
    assert out is None
    assert done == [0, 2]  # one batch of 2 slices, then stop
    assert {c[0] for c in net.calls} == {2}
    cancel.clear()
    cancel.set()
    assert (
        inference.predict_volume(
            acdc, make_package_for_threshold(acdc), InferenceSettings(device="cpu"), cancel=cancel, network=Threshold()
        )
        is None
    )


def test_default_batch_is_one_slice_on_cpu_four_on_gpu(acdc):
    assert inference.default_batch_size("cpu") == 1 and inference.default_batch_size(torch.device("cpu")) == 1
    assert inference.default_batch_size("cuda:1") == 4 and inference.default_batch_size("mps") == 4
    small = acdc[:, :, 3:6]
    default, three = Threshold(), Threshold()
    inference.predict_volume(
        small, make_package_for_threshold(small), InferenceSettings(device="cpu", tta=True), network=default
    )
    inference.predict_volume(
        small, make_package_for_threshold(small), InferenceSettings(device="cpu", tta=True, batch_size=3), network=three
    )
    assert {c[0] for c in default.calls} == {1} and {c[0] for c in three.calls} == {3}
    assert len(default.calls) == 3 * len(three.calls)  # every window and flip once per slice


def test_oom_halves_the_batch(caplog):
    x = np.random.default_rng(1).normal(size=(7, 1, 64, 64)).astype(np.float32)
    reference = inference.predict_slices(Threshold(), x, (64, 64), 2, tta=True, batch_size=1)
    net = OOMNetwork(limit=2)  # 2 slices per forward pass fit, more do not
    with caplog.at_level("WARNING", logger="AttentionMambaSegLib.inference"):
        probs = inference.predict_slices(net, x, (64, 64), 2, tta=True, batch_size=8)
    np.testing.assert_allclose(probs, reference, atol=1e-6)
    ooms = [c for c in net.calls if c[0] == "oom"]
    assert [c[1] for c in ooms] == [7, 4]  # 7 slices -> 4 slices -> 2 slices (one pass per flip)
    assert "retrying with 4 slice(s)" in caplog.text and "retrying with 2 slice(s)" in caplog.text
    assert max(c[0] for c in net.calls if c[0] != "oom") == 2
    assert len([c for c in net.calls if c[0] != "oom"]) == 4 * 4  # 2+2+2+1 slices, 4 flips each


def test_oom_at_one_slice_falls_back_to_cpu_once(caplog):
    x = np.random.default_rng(2).normal(size=(3, 1, 64, 64)).astype(np.float32)
    net = OOMNetwork(bad_device="meta")  # fails on the 'GPU' (meta device), works on the CPU
    with caplog.at_level("WARNING", logger="AttentionMambaSegLib.inference"):
        probs = inference.predict_slices(net, x, (64, 64), 2, tta=False, device="meta", batch_size=2)
    expected = 1 / (1 + np.exp(-40 * x[:, 0].astype(np.float64)))
    np.testing.assert_allclose(probs[:, 1], expected, atol=1e-5)
    assert caplog.text.count("continuing on the CPU") == 1


def test_oom_on_cpu_with_one_slice_is_an_error():
    x = np.zeros((2, 1, 64, 64), np.float32)
    with pytest.raises(RuntimeError, match="Out of memory on the CPU"):
        inference.predict_slices(OOMNetwork(limit=0), x, (64, 64), 2, tta=False, batch_size=4)


# -------------------------------------------------------------------------------------- bad input
def test_4d_image_is_refused(acdc_package):
    img = sitk.Image([8, 8, 4, 3], sitk.sitkFloat32)
    with pytest.raises(ValueError, match="4D"):
        inference.predict_volume(img, acdc_package, InferenceSettings(device="cpu"))


@pytest.mark.parametrize("value", [0.0, 7.0])
def test_constant_image_is_refused(acdc_package, value):
    img = sitk.GetImageFromArray(np.full((2, 40, 40), value, np.float32))
    with pytest.raises(ValueError, match="constant"):
        inference.predict_volume(img, acdc_package, InferenceSettings(device="cpu"))


def test_complex_and_out_of_float32_range_images_are_refused(acdc_package):
    real = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(2, 40, 40)).astype(np.float32))
    with pytest.raises(ValueError, match="complex-valued"):
        inference.predict_volume(
            sitk.RealAndImaginaryToComplex(real, real), acdc_package, InferenceSettings(device="cpu")
        )
    huge = sitk.GetImageFromArray(sitk.GetArrayFromImage(real).astype(np.float64) * 1e300)
    with pytest.raises(ValueError, match="beyond what the network's float32"):
        inference.predict_volume(huge, acdc_package, InferenceSettings(device="cpu"))


def test_float64_offset_beyond_float32_precision_gives_the_same_labels():
    """1e12 + x is one float32 value for all small x; the z-score must be computed in float64."""
    arr = np.random.default_rng(3).normal(size=(3, 40, 40)) * 50
    small = sitk.GetImageFromArray(arr)
    offset = sitk.GetImageFromArray(arr + 1e12)
    package = make_package_for_threshold(small)
    a = inference.predict_volume(small, package, InferenceSettings(device="cpu", tta=False), network=Threshold())
    b = inference.predict_volume(offset, package, InferenceSettings(device="cpu", tta=False), network=Threshold())
    expected = (arr > arr.mean()).astype(np.uint8)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), expected)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(b), expected)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_are_refused(acdc_package, bad):
    arr = np.random.default_rng(0).normal(size=(2, 40, 40)).astype(np.float32)
    arr[1, 5, 5] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        inference.predict_volume(sitk.GetImageFromArray(arr), acdc_package, InferenceSettings(device="cpu"))


def test_labelmap_like_input_warns(caplog):
    require(ACDC_LABEL)
    lab = images.read_image(ACDC_LABEL)[:, :, 4:6]
    with caplog.at_level("WARNING", logger="AttentionMambaSegLib.inference"):
        out = inference.predict_volume(
            lab, make_package_for_threshold(lab), InferenceSettings(device="cpu", tta=False), network=Threshold()
        )
    assert "looks like a labelmap" in caplog.text and "[0, 1, 2, 3]" in caplog.text
    assert_same_geometry(out, lab)


def test_intensity_image_does_not_warn(acdc, acdc_package, caplog):
    with caplog.at_level("WARNING", logger="AttentionMambaSegLib.inference"):
        inference.check_input_image(acdc, acdc_package)
    assert "labelmap" not in caplog.text


def test_channel_mismatch_names_both(tmp_path, acdc):
    require(PH2_IMAGE)
    rgb_package = make_package(
        tmp_path / "rgb", model_id="rgb-model", in_channels=3, num_classes=1, activation="sigmoid", target_spacing=None
    )
    grey_package = make_package(tmp_path / "grey", model_id="grey-model")
    with pytest.raises(ValueError, match=r"'rgb-model' expects RGB, 3 channels.*greyscale, 1 channel"):
        inference.predict_volume(acdc, rgb_package, InferenceSettings(device="cpu"))
    with pytest.raises(ValueError, match=r"'grey-model' expects greyscale, 1 channel.*RGB, 3 channels"):
        inference.predict_volume(images.read_image(PH2_IMAGE), grey_package, InferenceSettings(device="cpu"))


def test_corrupted_model_is_refused(tmp_path, acdc):
    package = make_package(tmp_path / "m")
    with open(package.weights_path, "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\xff\xff\xff\xff")
    with pytest.raises(pkg.ModelIntegrityError, match="SHA-256"):
        inference.predict_volume(acdc, package, InferenceSettings(device="cpu"))


# ------------------------------------------------------------------------------ real Attention-Mamba
def test_random_attention_mamba_end_to_end(tmp_path, acdc):
    from AttentionMambaSegLib.model import AttentionMamba

    torch.manual_seed(0)
    # 6.25 mm pixels: 64 x 54 slices, one (padded) 64 x 64 window each, to keep the CPU time small.
    config = make_config("am-random", architecture="AttentionMamba", target_spacing=(6.25, 6.25))
    package = pkg.load_model_package(pkg.save_model_package(AttentionMamba(1, 4), config, tmp_path / "am"))
    image = acdc[:, :, 5:7]
    a = inference.predict_volume(image, package, InferenceSettings(device="cpu", tta=False, batch_size=2))
    b = inference.predict_volume(image, package, InferenceSettings(device="cpu", tta=False, batch_size=1))
    assert_same_geometry(a, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


@pytest.mark.slow
def test_trained_cardiac_model_on_validation_case(acdc):
    package = pkg.load_model_package("cardiac-acdc")  # a missing bundled model fails here
    require(ACDC_LABEL)
    image = acdc[:, :, 4:7]
    out = inference.predict_volume(image, package, InferenceSettings(device="cpu", tta=False))
    assert_same_geometry(out, image)
    ref = sitk.GetArrayFromImage(images.read_image(ACDC_LABEL))[4:7]
    pred = sitk.GetArrayFromImage(out)
    lv = 2 * np.logical_and(pred == 3, ref == 3).sum() / ((pred == 3).sum() + (ref == 3).sum())
    assert lv > 0.8, f"LV Dice {lv:.3f} on a validation case"


# ------------------------------------------------------------------ regressions from the break report
class _Pkg:
    """Just what check_input_image reads from a package."""

    def __init__(self, target_spacing=(1.5, 1.5)):
        self.id, self.in_channels = "stub", 1
        self.card = SimpleNamespace(target_spacing=tuple(target_spacing) if target_spacing else None, modality=None)


def _noise(size=(64, 64, 3), spacing=(1.0, 1.0, 5.0), dtype=np.float32):
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=size[::-1]).astype(dtype))
    image.SetSpacing(spacing)
    return image


@pytest.mark.parametrize(
    "spacing, shown",
    [
        ((1e-4, 1e-4, 5.0), "0.0001 x 0.0001"),  # 64 px -> 0 px
        ((3000.0, 3000.0, 5.0), "3000 x 3000"),  # 64 px -> 128000 px
        ((0.001, 0.001, 0.005), "0.001 x 0.001"),
    ],
)  # metres, not mm
def test_implausible_spacing_is_refused(spacing, shown):
    with pytest.raises(ValueError, match=f"Implausible image spacing {shown} mm.*metres instead of mm"):
        inference.check_input_image(_noise(spacing=spacing), _Pkg())


def test_plausible_spacings_pass():
    inference.check_input_image(_noise(spacing=(0.5, 0.5, 3.0)), _Pkg())
    inference.check_input_image(_noise(size=(12, 12, 2), spacing=(4.0, 4.0, 8.0)), _Pkg())  # 12 px -> 32 px
    inference.check_input_image(_noise(size=(6, 6, 2)), _Pkg())  # small image, unchanged size order
    inference.check_input_image(_noise(spacing=(1e-4, 1e-4, 5.0)), _Pkg(None))  # no resampling


def test_invalid_spacing_is_refused():
    image = _noise()
    image.SetSpacing((1.0, float("nan"), 5.0))
    with pytest.raises(ValueError, match="invalid spacing .* axis 1"):
        inference.check_input_image(image, _Pkg())


def test_float_labelmap_warns(caplog):
    arr = np.zeros((2, 32, 32), np.float32)
    arr[:, 8:20, 8:20] = 1.0
    arr[:, 10:12, 10:12] = 3.0
    with caplog.at_level("WARNING", logger="AttentionMambaSegLib.inference"):
        inference.check_input_image(sitk.GetImageFromArray(arr), _Pkg(None))
    assert "looks like a labelmap" in caplog.text and "[0.0, 1.0, 3.0]" in caplog.text
    caplog.clear()
    arr[0, 0, 0] = 0.5  # not integer-valued: an intensity image
    with caplog.at_level("WARNING", logger="AttentionMambaSegLib.inference"):
        inference.check_input_image(sitk.GetImageFromArray(arr), _Pkg(None))
    assert "labelmap" not in caplog.text


def test_same_file_guard_sees_links(tmp_path):
    a = tmp_path / "a.nii.gz"
    a.write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    link = tmp_path / "sub" / "b.nii.gz"
    link.symlink_to(a)
    hard = tmp_path / "c.nii.gz"
    import os

    os.link(a, hard)
    from AttentionMambaSegLib.outputs import same_file

    assert same_file(a, link) and same_file(a, hard)
    assert same_file(a, tmp_path / "sub" / ".." / "a.nii.gz")
    assert not same_file(a, tmp_path / "d.nii.gz")
