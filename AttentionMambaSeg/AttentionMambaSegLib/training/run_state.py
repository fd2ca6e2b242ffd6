"""What the steps of a training run share (:class:`RunState`): settings, data, network and plan, typed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import distributed
from ..datasets import DatasetInfo, SliceData
from .config import TrainingConfig
from .schedule import SchedulePlan

if TYPE_CHECKING:
    from ..package import ModelPackage
    from .budget import StepTimes

__all__ = ["RunState"]


class RunState:
    """The attributes the steps of a training run share, with their types.

    :class:`~.trainer.Trainer` sets them step by step (:meth:`~.trainer.Trainer.run` lists the steps in
    order); its parts, :class:`~.budget.BudgetPlanning` and :class:`~.packaging.Packaging`, read them.
    """

    #: Seconds on which the time budget is counted (:attr:`.trainer.Trainer.clock`).
    clock: Callable[[], float]
    #: Creates the run folder when missing (:meth:`.trainer.Trainer.make_run_folder`).
    make_run_folder: Callable[[], None]

    # the settings and the run folder (__init__, read_checkpoint, run)
    config: TrainingConfig
    out: Path
    checkpoint: dict | None
    start_time: float
    # the processes and the device (join_processes)
    ctx: distributed.Context
    device: torch.device
    local_batch: int
    # the dataset, its classes and preprocessing (read_dataset)
    info: DatasetInfo
    train_cases: list[str]
    val_cases: list[str]
    activation: str
    num_classes: int
    init_package: ModelPackage | None
    target_spacing: tuple[float, float]
    normalization: dict
    lineage: dict
    classes: list[dict]
    # the network and its optimiser (build_network)
    network: torch.nn.Module
    optimizer_args: dict[str, Any]
    optimizer: torch.optim.Optimizer
    gen: torch.Generator
    # timing, slices and plan (check_budget, load_data, plan_run)
    step_times: StepTimes | None
    evaluation_reserve: float | None
    train_slices: SliceData
    val_all: SliceData
    val_slices: SliceData
    plan: SchedulePlan
    # the epochs (restore_state, fit)
    history: list[dict]
    best: dict[str, Any]
