"""The learning-rate schedule of short runs and the check of a time budget (fixed step timings, a fixed clock)."""

from __future__ import annotations

import pytest

from AttentionMambaSegLib import training
from AttentionMambaSegLib.training import schedule
from AttentionMambaSegLib.training.budget import StepTimes
from AttentionMambaSegLib.training.trainer import Trainer
from conftest import make_copy, needs_datasets


def _lrs(plan: schedule.SchedulePlan, base: float = 5e-4) -> list[float]:
    return [base * schedule.cosine_factor(e, plan.epochs, base, t_max=plan.t_max_epochs) for e in range(plan.epochs)]


@pytest.mark.parametrize("epochs", [1, 2, 3, 8])
def test_a_short_run_falls_once_and_never_restarts(epochs):
    plan = schedule.plan_schedule(epochs=epochs, num_train_slices=100, num_val_slices=10, batch_size=8)
    assert plan.t_max >= epochs  # T_max is the whole run
    lrs = _lrs(plan)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # falls every epoch, never climbs back


def test_a_budgeted_run_of_three_epochs_has_t_max_of_three():
    plan = schedule.plan_schedule(
        epochs=150,
        num_train_slices=1700,
        num_val_slices=200,
        batch_size=24,
        budget_seconds=60,
        seconds_per_iteration=8.0,
        seconds_per_val_slice=0.5,
    )
    assert plan.epochs == 3 and plan.t_max == 3.0


def test_runs_of_nine_epochs_and_300_steps_or_more_keep_the_papers_t_max():
    for epochs in (9, 21, 150):
        plan = schedule.plan_schedule(epochs=epochs, num_train_slices=800, num_val_slices=10, batch_size=8)
        assert plan.t_max == pytest.approx(epochs / 3)
    assert schedule.t_max_epochs(8, 100) == 8.0 and schedule.t_max_epochs(9, 34) == 3.0
    assert schedule.t_max_epochs(11, 1) == 11.0  # 11 steps in all: one fall, not three


@pytest.mark.parametrize("epochs, steps", [(21, 182), (9, 148), (24, 100)])
def test_the_bundled_models_recipes_keep_the_papers_t_max(epochs, steps):
    assert schedule.t_max_epochs(epochs, steps) == pytest.approx(epochs / 3)


def test_a_checkpoint_plan_without_t_max_resumes_with_epochs_over_three():
    stored = {
        "epochs": 21,
        "iterations_per_epoch": 182,
        "val_slices": 150,
        "seconds_per_iteration": 3.1,
        "seconds_per_val_slice": 0.2,
    }  # the plan of a checkpoint written before T_max was recorded
    plan = schedule.SchedulePlan(**stored)
    assert plan.t_max_epochs is None and plan.t_max == 7.0
    assert [schedule.cosine_factor(e, 21, 2e-4, t_max=plan.t_max_epochs) for e in range(21)] == [
        schedule.cosine_factor(e, 21, 2e-4) for e in range(21)
    ]
    assert schedule.cosine_factor(7, 21, 2e-4, t_max=None) == pytest.approx(1e-5 / 2e-4)  # the old minimum


def test_suggest_settings_finds_the_largest_patch_and_batch_that_fit():
    # 4 s a step of 8 crops of 128 px; 100 steps in 100 s need 1 s a step: a quarter of the pixels.
    assert schedule.suggest_settings(4.0, 128, 8, 100.0) == (128, 2, 1.0)
    assert schedule.suggest_settings(4.0, 128, 8, 10_000.0) == (128, 8, 4.0)
    assert schedule.suggest_settings(400.0, 128, 8, 100.0) is None


def test_final_evaluation_seconds_counts_windows_and_flips():
    # 64 x 64: one window of 64; 96 x 64: two; 4 flips; 1.5 for reading and scoring
    assert schedule.final_evaluation_seconds([(64, 64)], 64, 1e-6) == pytest.approx(1.5 * 4 * 4096e-6)
    assert schedule.final_evaluation_seconds([(96, 64), (40, 40)], 64, 1e-6) == pytest.approx(1.5 * 3 * 4 * 4096e-6)


# ------------------------------------------------------------------ the budget check of a run (no timing)
TINY = dict(epochs=20, patch_size=64, batch_size=2, val_slices=1, device="cpu", final_evaluation=False)


def _fixed(monkeypatch, seconds_per_iteration: float, loaded: list):
    """The trainer's clock stands still and its step timings are fixed; records whether all slices were loaded."""
    monkeypatch.setattr(Trainer, "clock", staticmethod(lambda: 0.0))
    monkeypatch.setattr(Trainer, "measure_step_times", lambda self, *args: StepTimes(seconds_per_iteration, 1e-6, 0.5))
    original = Trainer.load_data
    monkeypatch.setattr(Trainer, "load_data", lambda self: (loaded.append(True), original(self))[1])


@pytest.mark.slow
@needs_datasets
def test_a_budget_too_small_is_refused_before_the_data_is_loaded_with_settings_that_fit(tmp_path, monkeypatch):
    root = make_copy(tmp_path, "Hippocampus", ["hippocampus_001", "hippocampus_003"], ["hippocampus_004"])
    loaded = []
    _fixed(monkeypatch, 30.0, loaded)  # 30 s a step: 2 minutes hold 3 epochs of one step, not more than 3 steps
    with pytest.raises(training.ConfigError) as e:
        training.train(training.TrainingConfig(root, tmp_path / "run", time_budget_minutes=1.0, **TINY))
    message = e.value.for_cli()
    assert "--time-budget 1 min cannot hold 3 epochs of one step (30.0 s a step of 2 crops of 64 px here)" in message
    assert "give at least 52 min for 100 steps" in message  # (100 x 30 s + 3 x (1 x 0.004 s + 0.5 s)) / 0.97
    assert not loaded and not (tmp_path / "run").exists()


@pytest.mark.slow
@needs_datasets
def test_a_budget_of_few_steps_says_so_and_names_smaller_settings(tmp_path, monkeypatch, caplog):
    root = make_copy(tmp_path, "Hippocampus", ["hippocampus_001", "hippocampus_003"], ["hippocampus_004"])
    loaded = []
    _fixed(monkeypatch, 10.0, loaded)  # 10 s a step of 2 crops of 64 px: 2 min hold about 11 steps
    caplog.set_level("INFO")
    trainer = Trainer(
        training.TrainingConfig(root, tmp_path / "run", time_budget_minutes=2.0, stop_after_epoch=1, **TINY)
    )
    assert trainer.run() is None  # stopped after its first epoch
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("time budget: timing 3 training steps of 2 crop(s) of 64 px") for m in said)
    warning = next(m for m in said if "too few for a model to learn much" in m)
    assert "only about 11 training steps fit in 2 min" in warning and "give at least 18 min for 100 steps" in warning
    assert loaded and trainer.plan.epochs * trainer.plan.iterations_per_epoch <= 12
    assert trainer.plan.t_max >= trainer.plan.epochs  # a short run: one fall
