"""The run estimate: measured after the warm-up, said for long runs, recorded in the report (a fake clock)."""

from __future__ import annotations

import json
import time as _time

import numpy as np
import pytest
import SimpleITK as sitk

from _inference_helpers import make_package
from AttentionMambaSegLib import inference
from AttentionMambaSegLib.inference import InferenceSettings
from AttentionMambaSegLib.inference.file_runner import report_path_for, segment_files
from AttentionMambaSegLib.inference.timing import LONG_RUN_SECONDS, UPDATE_SECONDS, RunTimer


class FakeClock:
    """Seconds that pass only when the network runs: ``first`` for its first pass, ``then`` for each after."""

    def __init__(self, first: float, then: float):
        self.now, self.first, self.then, self.passes = 0.0, first, then, 0

    def __call__(self) -> float:
        return self.now

    def network_ran(self, *_) -> None:
        self.now += self.first if self.passes == 0 else self.then
        self.passes += 1


def _stack(slices: int, size: int = 64) -> sitk.Image:
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(100, 20, (slices, size, size)).astype(np.float32))
    image.SetSpacing((1.5625, 1.5625, 10.0))
    return image


def _timed_predictor(package, clock: FakeClock, tta: bool) -> inference.Predictor:
    predictor = inference.Predictor(package, InferenceSettings(device="cpu", tta=tta, batch_size=1))
    predictor.clock = clock
    predictor.network.register_forward_hook(clock.network_ran)
    return predictor


def test_the_estimate_leaves_the_warm_up_out_and_is_recorded_in_the_report(tmp_path, caplog):
    package = make_package(tmp_path / "m")
    clock = FakeClock(first=50.0, then=2.0)  # a 50 s first pass (kernels compiling), then 2 s a slice
    result = _timed_predictor(package, clock, tta=False).segment(_stack(10))
    # warm-up: the first slice (50 s); measured: slice 2 (2 s, enough); 8 slices left at 2 s:
    # 52 + 16 = 68 s, exactly the run's 50 + 9 x 2 s (counting the first slice as a slice would say 260 s)
    assert result.timing == {
        "measured_seconds": 68.0,
        "estimated_seconds": 68.0,
        "estimated_at_seconds": 52.0,
        "warmup_seconds": 50.0,
    }
    assert result.report()["time"]["estimated_seconds"] == 68.0
    assert not [r for r in caplog.records if "This run will take" in r.getMessage()]  # under two minutes


def test_a_long_run_is_announced_once_with_the_quicker_options_and_then_updated(tmp_path, caplog):
    package = make_package(tmp_path / "m")
    clock = FakeClock(first=100.0, then=40.0)
    caplog.set_level("INFO")
    result = _timed_predictor(package, clock, tta=False).segment(_stack(10))  # one pass a slice
    said = [r for r in caplog.records if "This run will take about" in r.getMessage()]
    assert len(said) == 1 and getattr(said[0], "event", None) == "estimate"
    # measured on slice 2 (40 s): 140 s elapsed + 8 slices x 40 s = 460 s
    assert said[0].seconds == 460 == result.timing["estimated_seconds"] == result.timing["measured_seconds"]
    assert "about 8 min (5 min left; measured on 1 slice after a 100 s warm-up)" in said[0].getMessage()
    assert "quicker: --mode fast (fewer network passes), --roi" in said[0].getMessage()
    updates = [r for r in caplog.records if r.getMessage().startswith("About ")]
    assert updates and all(r.event == "estimate" for r in updates)  # the Slicer status line follows them
    # at least 60 s apart: after slices 4, 6 and 8 (220, 300 and 380 s), none once every slice is done
    assert [r.getMessage() for r in updates] == [
        "About 4 min left (4 of 10 slices done in 220 s)",
        "About 3 min left (6 of 10 slices done in 300 s)",
        "About 80 s left (8 of 10 slices done in 380 s)",
    ]


def test_a_single_photograph_is_estimated_from_its_network_passes(tmp_path):
    package = make_package(tmp_path / "m", in_channels=3, num_classes=2, target_spacing=None)
    photo = sitk.GetImageFromArray(
        np.random.default_rng(1).integers(0, 255, (160, 160, 3), dtype=np.uint8), isVector=True
    )
    clock = FakeClock(first=30.0, then=1.0)
    # sliding windows of 64 px over 160 px: 4 x 4 windows, 4 flips each = 64 passes in one batch
    result = _timed_predictor(package, clock, tta=True).segment(photo)
    assert clock.passes == 64
    assert result.timing["warmup_seconds"] == 30.0
    assert result.timing["estimated_seconds"] == pytest.approx(30.0 + 63 * 1.0)
    assert result.timing["measured_seconds"] == 93.0


def test_a_run_that_ends_within_its_warm_up_has_no_estimate():
    timer = RunTimer(batch_size=1, clock=lambda: 5.0)
    timer.progress(0, 1)
    timer.progress(1, 1)
    assert timer.record()["estimated_seconds"] is None


def test_the_report_states_estimated_and_measured_seconds(tmp_path):
    package = make_package(tmp_path / "m")
    image_path = tmp_path / "stack.nii.gz"
    sitk.WriteImage(_stack(5), str(image_path))
    out = tmp_path / "stack.nii.gz.out.nii.gz"
    start = _time.monotonic()
    segment_files([image_path], out, package, InferenceSettings(device="cpu", tta=False))
    wall = _time.monotonic() - start
    time = json.loads(report_path_for(out).read_text())["time"]
    assert set(time) == {"measured_seconds", "estimated_seconds", "estimated_at_seconds", "warmup_seconds"}
    # the prediction's own time (rounded to 0.01 s): part of the call's wall time
    assert isinstance(time["measured_seconds"], float) and 0.0 <= time["measured_seconds"] <= wall + 0.01


def test_thresholds_are_those_the_docs_state():
    assert LONG_RUN_SECONDS == 120.0 and UPDATE_SECONDS == 60.0
