"""The time budget of a training run: a few steps are timed, a budget that cannot hold the run is refused,
and the schedule is planned to fit it (:class:`BudgetPlanning`, the planning steps of :class:`~.trainer.Trainer`)."""

from __future__ import annotations

import logging
import math
import time
from typing import NamedTuple

import numpy as np
import torch

from .. import distributed
from ..datasets import load_slices
from .checkpoint import save_checkpoint
from .config import ConfigError
from .run_state import RunState
from .schedule import (
    MIN_EPOCHS,
    USEFUL_STEPS,
    SchedulePlan,
    final_evaluation_seconds,
    plan_schedule,
    suggest_settings,
    time_steps,
)
from .validation import validate

__all__ = ["BudgetPlanning", "StepTimes", "CPU_PROBE_CROPS"]

logger = logging.getLogger(__name__)

#: Crops per timed step on a CPU when the batch is larger (a CPU step takes time in proportion to its crops,
#: so the batch's time is scaled from them and the check of a budget takes seconds, not minutes).
CPU_PROBE_CROPS = 2


class StepTimes(NamedTuple):
    """What a time budget is planned with (measured by :meth:`Trainer.measure_step_times`)."""

    seconds_per_iteration: float  # one optimiser step of the (local) batch
    seconds_per_val_pixel: float  # whole-slice validation forward, per padded input pixel
    seconds_per_checkpoint: float  # writing checkpoint_latest.pt


class BudgetPlanning(RunState):
    """The planning steps of a training run: epochs, steps and validation slices, under a time budget or not.

    A part of :class:`~.trainer.Trainer`: the methods read the run's settings (``config``), its data
    (``info``, ``train_cases``, ``val_cases``, ``train_slices``, ``val_all``), network, optimiser, device and
    processes (``ctx``), which the trainer's earlier steps set (:class:`~.run_state.RunState`), and use its
    :attr:`~.trainer.Trainer.clock` and :meth:`~.trainer.Trainer.make_run_folder`.
    """

    def plan_run(self) -> None:
        """Epochs, steps and validation slices: from the checkpoint, or planned by rank 0 and shared."""
        if self.checkpoint is not None:
            plan = SchedulePlan(**self.checkpoint["plan"])
        elif not self.ctx.is_main:
            plan = None  # rank 0 decides (it alone times the steps under a budget)
        else:
            plan = self._plan_schedule()
        self.plan = distributed.broadcast_object(plan)
        cfg, plan = self.config, self.plan
        logger.info(
            "schedule: %d epochs x %d steps of %d crops %dx%d; validation on %d of %d slices; lr %g, weight decay "
            "%g, T_max %.1f epochs",
            plan.epochs,
            plan.iterations_per_epoch,
            cfg.batch_size,
            cfg.patch_size,
            cfg.patch_size,
            plan.val_slices,
            len(self.val_all),
            cfg.lr,
            cfg.weight_decay,
            plan.t_max,
        )
        # A fixed random subset of the validation slices, the same every epoch.
        order = torch.randperm(len(self.val_all), generator=torch.Generator().manual_seed(cfg.seed + 1)).tolist()
        self.val_slices = self.val_all.subset(sorted(order[: plan.val_slices]))

    def check_budget(self) -> None:
        """Under a time budget (rank 0 of a new run): time a few steps on the slices of the first cases,
        say so on the console, and refuse at once a budget that cannot hold the run, naming settings that
        fit; warn when it holds fewer than :data:`~.schedule.USEFUL_STEPS` steps."""
        cfg = self.config
        self.step_times = None
        if cfg.time_budget_minutes is None or self.checkpoint is not None or not self.ctx.is_main:
            return
        self._check_budget_left(60.0 * cfg.time_budget_minutes - (self.clock() - self.start_time))
        info, spacing, norm = self.info, self.target_spacing, self.normalization
        t0 = self.clock()
        probe_train = load_slices(info, self.train_cases[:2], spacing, cfg.axes_code, norm)
        probe_val = load_slices(info, self.val_cases[:1], spacing, cfg.axes_code, norm)
        cases_read = len(self.train_cases[:2]) + 1
        loading = (self.clock() - t0) / cases_read * (len(self.train_cases) + len(self.val_cases) - cases_read)
        crops = self.local_batch if self.device.type != "cpu" else min(self.local_batch, CPU_PROBE_CROPS)
        logger.info(
            "time budget: timing 3 training steps of %d crop(s) of %d px on %s%s",
            crops,
            cfg.patch_size,
            self.device,
            "" if crops == self.local_batch else f" (the batch of {self.local_batch} is scaled from them)",
        )
        self.step_times = times = self.measure_step_times(probe_train, probe_val, crops)
        t_val = times.seconds_per_val_pixel * _mean_padded_pixels(probe_val, cfg.patch_size)
        reserve = (
            final_evaluation_seconds(_shapes(probe_val), cfg.patch_size, times.seconds_per_val_pixel)
            * len(self.val_cases)
            if cfg.final_evaluation
            else 0.0
        )
        spent = self.clock() - self.start_time
        left = 0.97 * (60.0 * cfg.time_budget_minutes - spent - loading - reserve)
        epoch_overhead = min(16, len(probe_val) * len(self.val_cases)) * t_val + times.seconds_per_checkpoint
        steps = int(max(0.0, left - MIN_EPOCHS * epoch_overhead) // times.seconds_per_iteration)
        logger.info(
            "time budget: %.1f s a step of %d crops, %.2f s a validation slice; loading the data about %.0f s, "
            "the final evaluation of %d validation cases about %.0f s (%s); about %d training steps fit",
            times.seconds_per_iteration,
            cfg.batch_size,
            t_val,
            loading,
            len(self.val_cases),
            reserve,
            "counted in the budget; --no-final-evaluation leaves it out"
            if cfg.final_evaluation
            else "not run: --no-final-evaluation",
            steps,
        )
        if steps < MIN_EPOCHS:
            raise ConfigError(
                "time_budget_minutes",
                "{name} " + f"{cfg.time_budget_minutes:g} min cannot hold "
                f"{MIN_EPOCHS} epochs of one step ({times.seconds_per_iteration:.1f} s a step of "
                f"{cfg.batch_size} crops of {cfg.patch_size} px here): "
                + self._settings_that_fit(times, left, spent + loading + reserve, epoch_overhead),
            )
        if steps < USEFUL_STEPS:
            advice = self._settings_that_fit(times, left, spent + loading + reserve, epoch_overhead)
            logger.warning(
                "time budget: only about %d training steps fit in %g min, too few for a model to learn much: %s",
                steps,
                cfg.time_budget_minutes,
                advice,
            )

    def _settings_that_fit(self, times: StepTimes, left: float, fixed: float, epoch_overhead: float) -> str:
        """'give at least N min, or --patch P --batch-size B ...': a budget for USEFUL_STEPS steps, and the
        largest patch and batch whose USEFUL_STEPS steps fit this budget."""
        cfg = self.config
        minutes = math.ceil(
            (fixed + (USEFUL_STEPS * times.seconds_per_iteration + MIN_EPOCHS * epoch_overhead) / 0.97) / 60.0
        )
        text = f"give at least {minutes} min for {USEFUL_STEPS} steps"
        fit = suggest_settings(
            times.seconds_per_iteration, cfg.patch_size, self.local_batch, left - MIN_EPOCHS * epoch_overhead
        )
        if fit is not None and (fit[0], fit[1]) != (cfg.patch_size, self.local_batch):
            text += (
                f", or --patch {fit[0]} --batch-size {fit[1] * self.ctx.world_size} (about {fit[2]:.1f} s a step) "
                "within this budget"
            )
        elif fit is None:
            text += ", or a smaller patch and batch"
        if cfg.final_evaluation:
            text += ", or --no-final-evaluation"
        return text

    def measure_step_times(self, train_slices, val_slices, crops: int) -> StepTimes:
        """Seconds of a training step of the local batch (timed with ``crops`` crops and scaled to the batch),
        of validation per padded pixel, and of writing a checkpoint."""
        cfg = self.config
        t_it = (
            time_steps(
                self.network, self.optimizer_args, train_slices, cfg.patch_size, crops, self.device, cfg.bf16, steps=2
            )
            * self.local_batch
            / crops
        )
        probe = val_slices.subset(list(range(0, len(val_slices), max(1, len(val_slices) // 4)))[:4])
        t0 = time.perf_counter()
        validate(self.network, probe, self.num_classes, cfg.patch_size, self.device, cfg.batch_size, cfg.bf16)
        t_val = (time.perf_counter() - t0) / max(len(probe), 1)
        self.make_run_folder()
        t0 = time.perf_counter()
        save_checkpoint(
            {"model": self.network.state_dict(), "optimizer": self.optimizer.state_dict()}, self.out / ".timing.pt"
        )
        t_ck = 3.0 * (time.perf_counter() - t0)  # the real checkpoint also holds AdamW's two moments
        (self.out / ".timing.pt").unlink(missing_ok=True)
        return StepTimes(t_it, t_val / _mean_padded_pixels(probe, cfg.patch_size), t_ck)

    def _plan_schedule(self) -> SchedulePlan:
        cfg = self.config
        budget, t_it, t_val, t_ck = None, 0.0, 0.0, 0.0
        if cfg.time_budget_minutes is not None:
            self._check_budget_left(60.0 * cfg.time_budget_minutes - (self.clock() - self.start_time))
            times = self.step_times
            assert times is not None  # measured by check_budget (rank 0 of a new run under a budget)
            t_it, t_ck = times.seconds_per_iteration, times.seconds_per_checkpoint
            t_val = times.seconds_per_val_pixel * _mean_padded_pixels(self.val_all, cfg.patch_size)
            # Reserve the final per-case evaluation: sliding windows with 4 flips over every validation slice.
            reserve = (
                final_evaluation_seconds(_shapes(self.val_all), cfg.patch_size, times.seconds_per_val_pixel)
                if cfg.final_evaluation
                else 0.0
            )
            self.evaluation_reserve = reserve
            budget = 0.97 * (60.0 * cfg.time_budget_minutes - (self.clock() - self.start_time) - reserve)
            logger.info(
                "time budget: %.1f s/step, %.2f s/validation slice, %.1f s/checkpoint; %.0f s left for "
                "training, %.0f s reserved for the final evaluation",
                t_it,
                t_val,
                t_ck,
                budget,
                reserve,
            )
            smallest = MIN_EPOCHS * (t_it + min(16, len(self.val_all)) * t_val + t_ck)
            if budget < smallest:
                needed = (self.clock() - self.start_time + reserve + smallest / 0.97) / 60.0
                raise ConfigError(
                    "time_budget_minutes",
                    "{name} " + f"{cfg.time_budget_minutes:g} min cannot hold "
                    f"{MIN_EPOCHS} epochs of one step ({t_it:.1f} s a step of {cfg.batch_size} crops of "
                    f"{cfg.patch_size} px here): give at least {math.ceil(needed)} min, or a smaller "
                    "batch or patch",
                )
        return plan_schedule(
            epochs=cfg.epochs,
            num_train_slices=len(self.train_slices),
            num_val_slices=len(self.val_all),
            batch_size=cfg.batch_size,
            budget_seconds=budget,
            seconds_per_iteration=t_it,
            seconds_per_val_slice=t_val,
            seconds_per_checkpoint=t_ck,
            iterations_per_epoch=cfg.iterations_per_epoch,
            val_slices=cfg.val_slices,
        )

    def _check_budget_left(self, seconds_left: float) -> None:
        """Before the timing probe: a budget that loading the data already spent cannot hold a run."""
        if seconds_left <= 0:
            spent = (self.clock() - self.start_time) / 60.0
            raise ConfigError(
                "time_budget_minutes",
                "{name} " + f"{self.config.time_budget_minutes:g} min was spent "
                f"before training began (checking and loading the data took {spent:.1f} min): give "
                "a larger budget",
            )


def _shapes(slices) -> list[tuple[int, int]]:
    return [tuple(label.shape) for label in slices.labels]


def _mean_padded_pixels(slices, patch_size: int) -> float:
    """Mean pixels of the slices zero-padded as validation pads them (multiples of 32, at least the patch)."""
    sizes = [
        max(patch_size, 32 * math.ceil(h / 32)) * max(patch_size, 32 * math.ceil(w / 32)) for h, w in _shapes(slices)
    ]
    return float(np.mean(sizes)) if sizes else float(patch_size * patch_size)
