"""The learning-rate schedule and the time budget (arXiv 2402.02286 v4, Sec. 4, and its fit into a budget).

Cosine annealing stepped once per epoch with T_max = epochs / 3 and eta_min 1e-5 (the rate falls,
rises and falls again). A run of fewer than :data:`PAPER_SCHEDULE_MIN_EPOCHS` epochs, or of fewer than
:data:`PAPER_SCHEDULE_MIN_STEPS` optimiser steps, is too short for three half-cycles (with 3 epochs,
T_max = 1 sends the rate to the floor and back every epoch), so its T_max is the whole run: the rate
falls once (:func:`t_max_epochs`).

``time_budget_minutes`` fits the whole schedule into a wall-clock budget: a few steps are timed on a
throw-away copy of the network, then epochs, steps per epoch and validation slices are chosen
(:func:`plan_schedule`). :func:`suggest_settings` names a patch and batch that fit a budget, and
:func:`final_evaluation_seconds` estimates the per-case evaluation that ends a run.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..datasets import SliceData
from .augmentation import sample_batch
from .train_step import train_step

__all__ = [
    "SchedulePlan",
    "plan_schedule",
    "cosine_factor",
    "t_max_epochs",
    "time_steps",
    "suggest_settings",
    "final_evaluation_seconds",
    "ETA_MIN",
    "MIN_EPOCHS",
    "VALIDATION_SHARE",
    "MIN_VALIDATION_SLICES",
    "PAPER_SCHEDULE_MIN_EPOCHS",
    "PAPER_SCHEDULE_MIN_STEPS",
    "USEFUL_STEPS",
]

#: Epochs of the cosine schedule are T_max = epochs / 3 long, with this floor of the learning rate.
ETA_MIN = 1e-5
#: Target share of an epoch spent on validation when the number of validation slices is automatic.
VALIDATION_SHARE = 0.10
#: Never validate on fewer slices than this (unless there are fewer).
MIN_VALIDATION_SLICES = 16
#: Fewest epochs a time-budgeted schedule may have.
MIN_EPOCHS = 3
#: Runs of at least this many epochs and steps use the paper's T_max = epochs / 3 (each half-cycle 3 epochs
#: and 100 steps or more); shorter runs use T_max = epochs.
PAPER_SCHEDULE_MIN_EPOCHS = 9
PAPER_SCHEDULE_MIN_STEPS = 300
#: A budget that allows fewer optimiser steps than this is said to be too short to learn much (with the
#: settings that would give this many).
USEFUL_STEPS = 100


def t_max_epochs(epochs: int, iterations_per_epoch: int) -> float:
    """T_max of the cosine schedule of a run: epochs / 3 (the paper's) from :data:`PAPER_SCHEDULE_MIN_EPOCHS`
    epochs and :data:`PAPER_SCHEDULE_MIN_STEPS` steps on, else the whole run (the rate falls once)."""
    if epochs >= PAPER_SCHEDULE_MIN_EPOCHS and epochs * iterations_per_epoch >= PAPER_SCHEDULE_MIN_STEPS:
        return epochs / 3.0
    return float(epochs)


def cosine_factor(
    epoch: int, epochs: int, base_lr: float, eta_min: float = ETA_MIN, t_max: float | None = None
) -> float:
    """Learning-rate multiplier of epoch ``epoch`` (0-based) for cosine annealing with T_max epochs.

    The closed form of ``torch.optim.lr_scheduler.CosineAnnealingLR`` continued past T_max (so the rate
    falls to eta_min at epochs/3, climbs back to the base rate at 2 epochs/3 and falls again):
    ``lr = eta_min + (base - eta_min) (1 + cos(pi epoch / T_max)) / 2``.

    Args:
        epoch: epochs finished so far (the scheduler's ``last_epoch``).
        epochs: total number of epochs.
        base_lr: the initial learning rate.
        eta_min: the floor.
        t_max: T_max in epochs (:func:`t_max_epochs`); None: epochs / 3 (the schedule of checkpoints
            written before T_max was recorded in the plan).

    Returns:
        ``lr / base_lr``.
    """
    t_max = max(epochs / 3.0 if t_max is None else t_max, 1e-9)
    lr = eta_min + (base_lr - eta_min) * (1.0 + math.cos(math.pi * epoch / t_max)) / 2.0
    return lr / base_lr


@dataclass(frozen=True)
class SchedulePlan:
    """How long the run is.

    Attributes:
        epochs: number of epochs.
        iterations_per_epoch: optimiser steps per epoch.
        val_slices: validation slices scored after every epoch.
        seconds_per_iteration: measured training step time (0 when not measured).
        seconds_per_val_slice: measured whole-slice validation time per slice (0 when not measured).
        t_max_epochs: T_max of the cosine schedule (:func:`t_max_epochs`); None in the plans of
            checkpoints written before it was recorded, which keep epochs / 3 when resumed.
    """

    epochs: int
    iterations_per_epoch: int
    val_slices: int
    seconds_per_iteration: float = 0.0
    seconds_per_val_slice: float = 0.0
    t_max_epochs: float | None = None

    @property
    def t_max(self) -> float:
        """T_max in epochs (epochs / 3 for a plan that does not record it)."""
        return self.epochs / 3.0 if self.t_max_epochs is None else self.t_max_epochs


def plan_schedule(
    *,
    epochs: int,
    num_train_slices: int,
    num_val_slices: int,
    batch_size: int,
    budget_seconds: float | None = None,
    seconds_per_iteration: float = 0.0,
    seconds_per_val_slice: float = 0.0,
    seconds_per_checkpoint: float = 0.0,
    iterations_per_epoch: int | None = None,
    val_slices: int | None = None,
) -> SchedulePlan:
    """Choose epochs, iterations per epoch and validation size.

    Without a budget: ``epochs`` epochs of ``iterations_per_epoch`` steps (default one pass over the
    training slices, ``ceil(num_train_slices / batch_size)``), validation on ``val_slices`` slices
    (default all).

    With a budget (seconds for the epochs, validation and checkpoints): the number of steps that fit is
    ``budget / seconds_per_iteration`` minus validation. If the full recipe (``epochs`` passes) fits,
    the epochs are kept and lengthened to use the budget. Otherwise epochs are shortened no further than
    needed to keep validation (at least 16 slices) near 10 % of an epoch, and their number is reduced
    (never below 3) so the cosine schedule still completes. The number of validation slices is then
    the most that fits in ~10 % of an epoch.

    Args:
        epochs: the requested number of epochs (an upper bound under a budget that cannot hold it).
        num_train_slices: training slices.
        num_val_slices: available validation slices.
        batch_size: slices per step.
        budget_seconds: seconds available for the training loop, or None.
        seconds_per_iteration: measured step time (needed with a budget).
        seconds_per_val_slice: measured validation time per slice.
        seconds_per_checkpoint: time to write one checkpoint.
        iterations_per_epoch: fixed steps per epoch (overrides the budget's choice).
        val_slices: fixed number of validation slices (overrides the automatic choice).

    Returns:
        the plan.

    Raises:
        ValueError: for non-positive epochs, batch size or budget, or a budget without a step time.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    one_pass = max(1, math.ceil(num_train_slices / batch_size))
    all_val = num_val_slices
    min_val = min(MIN_VALIDATION_SLICES, all_val)
    if budget_seconds is None:
        ipe = iterations_per_epoch or one_pass
        nval = all_val if val_slices is None else min(val_slices, all_val)
        return SchedulePlan(epochs, ipe, nval, seconds_per_iteration, seconds_per_val_slice, t_max_epochs(epochs, ipe))
    if budget_seconds <= 0:
        raise ValueError(f"the time budget leaves no time for training ({budget_seconds:.0f} s)")
    if seconds_per_iteration <= 0:
        raise ValueError("a time budget needs the measured seconds per iteration")
    t_it, t_val, t_ck = seconds_per_iteration, seconds_per_val_slice, seconds_per_checkpoint
    nval_fixed = None if val_slices is None else min(val_slices, all_val)
    overhead_min = (nval_fixed if nval_fixed is not None else min_val) * t_val + t_ck
    n_epochs, ipe = _budget_epochs(epochs, one_pass, budget_seconds, t_it, overhead_min, iterations_per_epoch)
    if nval_fixed is not None:
        nval = nval_fixed
    else:
        nval, ipe = _budget_validation(ipe, t_it, t_val, all_val, min_val, bool(iterations_per_epoch))
    return SchedulePlan(n_epochs, ipe, nval, t_it, t_val, t_max_epochs(n_epochs, ipe))


def _budget_epochs(
    epochs: int,
    one_pass: int,
    budget_seconds: float,
    t_it: float,
    overhead_min: float,
    iterations_per_epoch: int | None,
) -> tuple[int, int]:
    """``(epochs, iterations per epoch)`` that fit ``budget_seconds`` (:func:`plan_schedule`'s budget rule).

    ``overhead_min`` is the seconds of each epoch's minimum validation and its checkpoint; ``t_it`` the
    seconds of one step.
    """
    if iterations_per_epoch:
        ipe = iterations_per_epoch
        n_epochs = int(budget_seconds // (ipe * t_it + overhead_min))
        return max(1, min(epochs, n_epochs)), ipe
    # Shortest epoch that keeps the minimum validation near VALIDATION_SHARE of the epoch.
    ipe_min = max(1, math.ceil(overhead_min * (1 - VALIDATION_SHARE) / (VALIDATION_SHARE * t_it)))
    full_epoch = one_pass * t_it + overhead_min
    if epochs * full_epoch <= budget_seconds:
        n_epochs = epochs
    else:
        n_epochs = int(budget_seconds // (max(ipe_min, 1) * t_it + overhead_min))
        n_epochs = max(min(MIN_EPOCHS, epochs), min(epochs, n_epochs))
    per_epoch = budget_seconds / n_epochs
    return n_epochs, max(1, int((per_epoch - overhead_min) // t_it))


def _budget_validation(
    ipe: int, t_it: float, t_val: float, all_val: int, min_val: int, fixed_steps: bool
) -> tuple[int, int]:
    """``(validation slices, iterations per epoch)``: the most slices that fit in ~:data:`VALIDATION_SHARE` of an
    epoch; validation above the minimum comes out of the steps unless they are ``fixed_steps``."""
    share = VALIDATION_SHARE / (1 - VALIDATION_SHARE) * ipe * t_it
    nval = all_val if t_val <= 0 else int(max(min_val, min(all_val, share // t_val)))
    extra = (nval - min_val) * t_val
    if not fixed_steps and extra > 0:
        ipe = max(1, ipe - int(math.ceil(extra / t_it)))
    return nval, ipe


def time_steps(
    network,
    optimizer_args: dict,
    slices: SliceData,
    patch_size: int,
    batch_size: int,
    device,
    bf16: bool,
    steps: int = 3,
) -> float:
    """Median seconds of a training step, on a throw-away copy of the network and optimiser.

    ``steps`` timed steps follow one untimed step (allocators and kernels warm up in it).
    """
    net = copy.deepcopy(network).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), **optimizer_args)
    gen = torch.Generator().manual_seed(0)
    times = []
    for step in range(steps + 1):
        idx = torch.randint(0, len(slices), (batch_size,), generator=gen).tolist()
        t0 = time.perf_counter()
        x, y = sample_batch(slices, idx, patch_size, gen)
        train_step(net, opt, x.to(device), y.to(device), device, bf16)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    del net, opt
    return float(np.median(times))


def suggest_settings(
    seconds_per_iteration: float, patch_size: int, batch_size: int, seconds_available: float, steps: int = USEFUL_STEPS
) -> tuple[int, int, float] | None:
    """The largest patch and batch (crops x pixels) whose ``steps`` steps fit ``seconds_available``.

    Step time is taken as proportional to the pixels of a batch (batch x patch^2), as on a CPU;
    patches are multiples of 32 from ``patch_size`` down to 64, batches from ``batch_size`` down to 2.

    Returns:
        ``(patch_size, batch_size, seconds_per_iteration)``, or None when even 2 crops of 64 px do not fit.
    """
    best = None
    for patch in range(patch_size, 63, -32):
        for batch in range(batch_size, 1, -1):
            seconds = seconds_per_iteration * (batch / batch_size) * (patch / patch_size) ** 2
            if steps * seconds <= seconds_available and (best is None or batch * patch**2 > best[1] * best[0] ** 2):
                best = (patch, batch, seconds)
    return best


def final_evaluation_seconds(
    slice_shapes, patch_size: int, seconds_per_pixel: float, flips: int = 4, overhead: float = 1.5
) -> float:
    """Seconds of the per-case evaluation that ends a run: sliding windows of ``patch_size`` (overlap 0.5)
    with ``flips`` flips over every validation slice.

    Args:
        slice_shapes: (H, W) of each validation slice at the model's spacing.
        patch_size: the window, pixels.
        seconds_per_pixel: forward time per input pixel (measured on whole validation slices).
        flips: passes per window (4: the evaluation's test-time augmentation).
        overhead: reading, resampling and scoring the cases, as a factor.
    """
    from ..inference.sliding_window import sliding_window_starts

    passes = 0
    for h, w in slice_shapes:
        hp, wp = max(int(h), patch_size), max(int(w), patch_size)
        passes += len(sliding_window_starts(hp, patch_size)) * len(sliding_window_starts(wp, patch_size))
    return overhead * passes * flips * patch_size**2 * seconds_per_pixel
