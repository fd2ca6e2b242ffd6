"""The learning-rate schedule and the time budget (arXiv 2402.02286 v4, Sec. 4, and its fit into a budget).

Cosine annealing stepped once per epoch with T_max = epochs / 3 and eta_min 1e-5 (the rate falls,
rises and falls again). ``time_budget_minutes`` fits the whole schedule into a wall-clock budget: the
first steps are timed on a throw-away copy of the network, then epochs, steps per epoch and
validation slices are chosen (:func:`plan_schedule`).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..data import SliceData
from .augmentation import sample_batch
from .step import train_step

__all__ = ["SchedulePlan", "plan_schedule", "cosine_factor", "time_steps", "ETA_MIN", "MIN_EPOCHS",
           "VALIDATION_SHARE", "MIN_VALIDATION_SLICES"]

#: Epochs of the cosine schedule are T_max = epochs / 3 long, with this floor of the learning rate.
ETA_MIN = 1e-5
#: Target share of an epoch spent on validation when the number of validation slices is automatic.
VALIDATION_SHARE = 0.10
#: Never validate on fewer slices than this (unless there are fewer).
MIN_VALIDATION_SLICES = 16
#: Fewest epochs a time-budgeted schedule may have (one fall, rise and fall of the cosine).
MIN_EPOCHS = 3


def cosine_factor(epoch: int, epochs: int, base_lr: float, eta_min: float = ETA_MIN) -> float:
    """Learning-rate multiplier of epoch ``epoch`` (0-based) for cosine annealing with T_max = epochs / 3.

    The closed form of ``torch.optim.lr_scheduler.CosineAnnealingLR`` continued past T_max (so the rate
    falls to eta_min at epochs/3, climbs back to the base rate at 2 epochs/3 and falls again):
    ``lr = eta_min + (base - eta_min) (1 + cos(pi epoch / T_max)) / 2``.

    Args:
        epoch: epochs finished so far (the scheduler's ``last_epoch``).
        epochs: total number of epochs.
        base_lr: the initial learning rate.
        eta_min: the floor.

    Returns:
        ``lr / base_lr``.
    """
    t_max = max(epochs / 3.0, 1e-9)
    lr = eta_min + (base_lr - eta_min) * (1.0 + math.cos(math.pi * epoch / t_max)) / 2.0
    return lr / base_lr


@dataclass(frozen=True)
class SchedulePlan:
    """How long the run is.

    Attributes:
        epochs: number of epochs (the cosine schedule's length; T_max = epochs / 3).
        iterations_per_epoch: optimiser steps per epoch.
        val_slices: validation slices scored after every epoch.
        seconds_per_iteration: measured training step time (0 when not measured).
        seconds_per_val_slice: measured whole-slice validation time per slice (0 when not measured).
    """

    epochs: int
    iterations_per_epoch: int
    val_slices: int
    seconds_per_iteration: float = 0.0
    seconds_per_val_slice: float = 0.0


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
        return SchedulePlan(epochs, ipe, nval, seconds_per_iteration, seconds_per_val_slice)
    if budget_seconds <= 0:
        raise ValueError(f"the time budget leaves no time for training ({budget_seconds:.0f} s)")
    if seconds_per_iteration <= 0:
        raise ValueError("a time budget needs the measured seconds per iteration")
    t_it, t_val, t_ck = seconds_per_iteration, seconds_per_val_slice, seconds_per_checkpoint
    nval_fixed = None if val_slices is None else min(val_slices, all_val)
    overhead_min = (nval_fixed if nval_fixed is not None else min_val) * t_val + t_ck
    if iterations_per_epoch:
        ipe = iterations_per_epoch
        n_epochs = int(budget_seconds // (ipe * t_it + overhead_min))
        n_epochs = max(1, min(epochs, n_epochs))
    else:
        # Shortest epoch that keeps the minimum validation near VALIDATION_SHARE of the epoch.
        ipe_min = max(1, math.ceil(overhead_min * (1 - VALIDATION_SHARE) / (VALIDATION_SHARE * t_it)))
        full_epoch = one_pass * t_it + overhead_min
        if epochs * full_epoch <= budget_seconds:
            n_epochs = epochs
        else:
            n_epochs = int(budget_seconds // (max(ipe_min, 1) * t_it + overhead_min))
            n_epochs = max(min(MIN_EPOCHS, epochs), min(epochs, n_epochs))
        per_epoch = budget_seconds / n_epochs
        ipe = max(1, int((per_epoch - overhead_min) // t_it))
    if nval_fixed is not None:
        nval = nval_fixed
    else:
        share = VALIDATION_SHARE / (1 - VALIDATION_SHARE) * ipe * t_it
        nval = all_val if t_val <= 0 else int(max(min_val, min(all_val, share // t_val)))
        # Validation above the minimum comes out of the steps.
        extra = (nval - min_val) * t_val
        if not iterations_per_epoch and extra > 0:
            ipe = max(1, ipe - int(math.ceil(extra / t_it)))
    return SchedulePlan(n_epochs, ipe, nval, t_it, t_val)


def time_steps(
    network, optimizer_args: dict, slices: SliceData, patch_size: int, batch_size: int, device, bf16: bool, steps: int = 3
) -> float:
    """Median seconds of a training step, on a throw-away copy of the network and optimiser."""
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
