"""The training run: :class:`Trainer` reads as its named steps; :func:`train` runs one."""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import __version__, distributed
from ..dataset_validation import validate_dataset
from ..datasets import default_normalization, load_slices, split_cases, target_inplane_spacing
from ..devices import select_device, warn_if_bf16_is_emulated
from ..outputs import write_text_output
from .augmentation import epoch_indices, sample_batch
from .budget import BudgetPlanning
from .card_writer import default_classes, training_lineage
from .checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import ConfigError, TrainingConfig
from .packaging import PACKAGE_FOLDER, Packaging
from .report import plot_curves, write_log
from .schedule import ETA_MIN, cosine_factor
from .train_step import train_step
from .validation import validate

__all__ = ["Trainer", "train", "new_network"]

logger = logging.getLogger(__name__)

#: The files a run writes into its folder; a new run refuses a folder holding any of them.
RUN_FILES = (
    CHECKPOINT_LATEST,
    CHECKPOINT_BEST,
    "training_config.json",
    "training_log.csv",
    "training_curves.png",
    PACKAGE_FOLDER,
    "val_metrics.csv",
    "val_metrics.png",
)
Progress = Callable[[int, int, dict], None]


def train(
    config: TrainingConfig, progress: Progress | None = None, cancel: threading.Event | None = None
) -> Path | None:
    """Train Attention-Mamba on one fold of an nnU-Net v2 raw dataset and write a model package.

    Args:
        config: the settings (:class:`~.config.TrainingConfig`).
        progress: called after every step as ``progress(done_steps, total_steps, info)`` with info keys
            epoch, epochs, loss, lr.
        cancel: when set, training stops after the current step; the last epoch checkpoint is kept and
            None is returned.

    Several processes: under ``torchrun`` each process trains on its shard of every global batch
    with DistributedDataParallel (:mod:`AttentionMambaSegLib.distributed`); rank 0 writes every file.

    Returns:
        the model package folder (``config.output/model``), or None when stopped early
        (``stop_after_epoch``, ``cancel``) and on ranks other than 0.

    Raises:
        DatasetError: the dataset is invalid (checked before anything else).
        FileExistsError: ``output`` holds a run and ``resume`` is False.
        FileNotFoundError: ``resume`` is True and there is no checkpoint.
        ConfigError: invalid settings, or a time budget too small for the run.
    """
    return Trainer(config, progress, cancel).run()


class Trainer(BudgetPlanning, Packaging):
    """One training run; :meth:`run` is the recipe of arXiv 2402.02286 v4, Sec. 4, in named steps.

    A time budget is counted on :attr:`clock` and planned with :meth:`measure_step_times`; replacing
    both (on the class, or on an instance before :meth:`run`) plans a budget without timing anything.
    """

    #: Seconds on which the time budget is counted.
    clock = staticmethod(time.monotonic)

    def __init__(self, config: TrainingConfig, progress: Progress | None = None, cancel: threading.Event | None = None):
        self.config = config
        self.progress = progress
        self.cancel = cancel
        self.out = Path(config.output)
        self.latest_path = self.out / CHECKPOINT_LATEST
        self.checkpoint = None
        self.created_output = False
        self.step_times = None
        self.evaluation_reserve = None

    def run(self) -> Path | None:
        """Train and write the package; None when stopped early or on ranks other than 0."""
        self.start_time = self.clock()
        try:
            self.read_checkpoint()
            self.join_processes()
            self.read_dataset()
            self.build_network()
            self.check_budget()
            self.load_data()
            self.plan_run()
            self.restore_state()
            self.share_across_processes()
            self.write_config()
            if not self.fit():
                return None
            return self.write_package() if self.ctx.is_main else None
        except BaseException:
            self.remove_empty_output()
            raise

    # ---------------------------------------------------------------------------------------- setup
    def read_checkpoint(self) -> None:
        """Resume: the stored recipe (with this call's run controls); a new run: refuse an existing one."""
        if not self.config.resume:
            if self.latest_path.exists():
                raise FileExistsError(
                    f"{self.out} already holds a training run ({CHECKPOINT_LATEST}); pass "
                    "resume=True (--resume) to continue it, or choose another output folder (--output)"
                )
            present = sorted(name for name in RUN_FILES if (self.out / name).exists())
            if present:  # a new run never replaces the files of another one (output rule, AttentionMambaSegLib.outputs)
                raise FileExistsError(
                    f"{self.out} already holds {', '.join(present)} of another run; choose a new "
                    "output folder (--output), or remove those files first"
                )
            return
        if not self.latest_path.exists():
            raise FileNotFoundError(f"cannot resume: {self.latest_path} does not exist (start without --resume)")
        checkpoint = load_checkpoint(self.latest_path)
        if "settings" not in checkpoint or "epoch" not in checkpoint:
            raise ValueError(f"cannot resume: {self.latest_path} is not a full training checkpoint (no settings/epoch)")
        stored = TrainingConfig.from_dict(checkpoint["settings"], defaults=self.config)
        changed = stored.recipe_differences(self.config)
        if changed:
            logger.warning("resuming with the checkpoint's settings; ignored differing arguments: %s", changed)
        self.config = stored.with_controls_of(self.config)
        self.checkpoint = checkpoint

    def join_processes(self) -> None:
        """Join the torchrun process group (one process: nothing to do) and choose the device."""
        cfg = self.config
        self.ctx = distributed.setup(cfg.device)
        self.device, reason = select_device(distributed.device_for(self.ctx, cfg.device))
        logger.info("device: %s", reason)
        if cfg.batch_size % self.ctx.world_size:
            raise ConfigError(
                "batch_size",
                "{name} " + f"{cfg.batch_size} (the global batch) must be divisible by "
                f"the {self.ctx.world_size} processes",
            )
        self.local_batch = cfg.batch_size // self.ctx.world_size
        warn_if_bf16_is_emulated(self.device, cfg.bf16)

    def read_dataset(self) -> None:
        """Check the dataset, resolve activation, spacing, normalisation and classes."""
        cfg = self.config
        self.info = info = validate_dataset(cfg.dataset)
        self.train_cases = split_cases(info, "train", cfg.fold)
        self.val_cases = split_cases(info, "val", cfg.fold)
        if not self.train_cases or not self.val_cases:
            raise ValueError(f"fold {cfg.fold} of {info.root} needs training and validation cases")
        act = cfg.activation
        if act == "auto":
            act = "sigmoid" if len(info.foreground_labels) == 1 else "softmax"
        self.activation = act
        self.num_classes = 1 if act == "sigmoid" else len(info.labels)
        self.init_package = None  # the init_from model; a resumed run takes its weights from the checkpoint
        reference = None
        if cfg.init_from:
            from ..package import load_model_package

            reference = load_model_package(cfg.init_from)
        if self.checkpoint is not None:
            self.target_spacing = tuple(self.checkpoint["target_spacing"])
            self.normalization = self.checkpoint["normalization"]
            self.lineage = self.checkpoint.get("lineage") or {}
        else:
            self.init_package = reference
            self.lineage = training_lineage(reference) if reference is not None else {}
            self.target_spacing = self._initial_target_spacing()
            self.normalization = default_normalization(info)
        self.classes = default_classes(info, act, reference.card.class_dicts if reference is not None else None)
        logger.info(
            "dataset %s fold %d: %d training / %d validation cases; target spacing %s mm; normalisation %s; "
            "%s with K = %d",
            info.name,
            cfg.fold,
            len(self.train_cases),
            len(self.val_cases),
            self.target_spacing,
            self.normalization,
            act,
            self.num_classes,
        )

    def load_data(self) -> None:
        """The training and validation slices, resampled and normalised."""
        cfg, info = self.config, self.info
        self.train_slices = load_slices(info, self.train_cases, self.target_spacing, cfg.axes_code, self.normalization)
        self.val_all = load_slices(info, self.val_cases, self.target_spacing, cfg.axes_code, self.normalization)

    def _initial_target_spacing(self) -> tuple[float, float]:
        """The spacing asked for, else the init_from model's (a model keeps the scale it learnt), else the
        median of the training cases (the paper's choice)."""
        cfg = self.config
        if cfg.target_spacing:
            return cfg.target_spacing
        if self.init_package is not None and self.init_package.card.target_spacing:
            row, col = self.init_package.card.target_spacing  # [row_mm, col_mm], checked when the card is read
            spacing = (float(row), float(col))
            logger.info(
                "target spacing %s mm taken from the --init-from model %s (pass --target-spacing to change it)",
                list(spacing),
                cfg.init_from,
            )
            return spacing
        return target_inplane_spacing(self.info, self.train_cases, cfg.axes_code)

    def build_network(self) -> None:
        """A new Attention-Mamba (weights of the init_from model if any), AdamW and the run's generator."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        network = new_network(self.info.num_channels, self.num_classes, cfg.backbone_checkpoint, self.init_package)
        self.network = network.to(self.device)
        self.optimizer_args = {"lr": cfg.lr, "betas": (0.9, 0.999), "weight_decay": cfg.weight_decay}
        self.optimizer = torch.optim.AdamW(self.network.parameters(), **self.optimizer_args)
        self.gen = torch.Generator().manual_seed(cfg.seed)

    # ---------------------------------------------------------------------------------------- files
    def make_run_folder(self) -> None:
        """Create the run folder when missing (remembered, so that a failed run removes it when empty)."""
        if not self.out.exists():
            try:
                self.out.mkdir(parents=True)
                self.created_output = True
            except FileExistsError:  # made meanwhile by another process: training_config.json decides whose run it is
                pass

    # -------------------------------------------------------------------------------- state, ranks
    def restore_state(self) -> None:
        """The scheduler, and on resume every state of the checkpoint (bit-identical continuation)."""
        plan, base_lr = self.plan, self.config.lr
        if self.ctx.distributed:  # after rank 0's timing probe: global-batch BatchNorm statistics
            self.network = distributed.convert_sync_batchnorm(self.network, self.device)  # same parameter names
            self.optimizer = torch.optim.AdamW(self.network.parameters(), **self.optimizer_args)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda e: cosine_factor(e, plan.epochs, base_lr, ETA_MIN, plan.t_max_epochs)
        )
        self.history: list[dict] = []
        self.best = {"epoch": 0, "mean_dice": -1.0}
        self.start_epoch = 0
        self.previous_time = 0.0
        ck = self.checkpoint
        if ck is None:
            return
        self.network.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.gen.set_state(ck["generator"])
        set_rng_state(ck["rng"])
        self.history, self.best, self.start_epoch = ck["history"], ck["best"], ck["epoch"]
        self.previous_time = ck.get("train_seconds", 0.0)
        logger.info("resumed %s at epoch %d of %d", self.latest_path, self.start_epoch, plan.epochs)
        self.checkpoint = None  # free memory

    def share_across_processes(self) -> None:
        """Under torchrun: DDP for the steps, each rank validates its share, Dice sums all-reduced."""
        self.step_network = self.network
        self.sum_across = self.reduce = None
        if not self.ctx.distributed:
            return
        from torch.nn.parallel import DistributedDataParallel

        dev = self.device
        self.step_network = DistributedDataParallel(
            self.network, device_ids=[dev.index] if dev.type == "cuda" else None
        )
        self.val_slices = self.val_slices.subset(list(range(self.ctx.rank, len(self.val_slices), self.ctx.world_size)))
        self.sum_across, self.reduce = distributed.sum_across_ranks, distributed.all_reduce_sum

    def write_config(self) -> None:
        """``training_config.json``: the resolved settings and schedule (rank 0)."""
        if not self.ctx.is_main:
            return
        self.make_run_folder()
        record = {
            **self.config.to_dict(),
            "plan": asdict(self.plan),
            "target_spacing": list(self.target_spacing),
            "normalization": self.normalization,
            "activation_resolved": self.activation,
            "num_classes": self.num_classes,
            "train_cases": len(self.train_cases),
            "val_cases": len(self.val_cases),
            "train_slices": len(self.train_slices),
            "val_slices_total": len(self.val_all),
            "device": str(self.device),
            "processes": self.ctx.world_size,
            "torch": torch.__version__,
            "version": __version__,
        }
        # created exclusively for a new run: of two runs started on one folder, the second stops here
        write_text_output(
            self.out / "training_config.json", json.dumps(record, indent=2) + "\n", overwrite=self.config.resume
        )

    # ------------------------------------------------------------------------------------------ fit
    def fit(self) -> bool:
        """Every epoch: train, validate, record, checkpoint. False when stopped before the package."""
        cfg, plan = self.config, self.plan
        self.run_start = time.monotonic()
        self.network.train()
        last_epoch = plan.epochs if cfg.stop_after_epoch is None else min(plan.epochs, cfg.stop_after_epoch)
        for epoch in range(self.start_epoch, last_epoch):
            epoch_start = time.monotonic()
            lr_now = self.optimizer.param_groups[0]["lr"]
            losses = self.train_epoch(epoch, lr_now)
            if losses is None:
                return False
            train_time = time.monotonic() - epoch_start
            val_start = time.monotonic()
            val = validate(
                self.network,
                self.val_slices,
                self.num_classes,
                cfg.patch_size,
                self.device,
                self.local_batch,
                cfg.bf16,
                self.reduce,
            )
            self.scheduler.step()
            self.record_epoch(epoch, lr_now, losses, val, train_time, time.monotonic() - val_start)
        if self.ctx.distributed:
            steps = (last_epoch - self.start_epoch) * plan.iterations_per_epoch
            logger.info(
                "rank %d of %d: %d steps done, stopped at epoch %d",
                self.ctx.rank,
                self.ctx.world_size,
                steps,
                last_epoch,
            )
        if last_epoch < plan.epochs and not cfg.package_on_stop:
            logger.info("stopped after epoch %d of %d; continue with resume=True", last_epoch, plan.epochs)
            return False
        return True

    def train_epoch(self, epoch: int, lr_now: float) -> tuple[list[float], list[float]] | None:
        """The steps of one epoch: ``(losses, fused-output losses)``, or None when cancelled."""
        cfg, plan, ctx = self.config, self.plan, self.ctx
        rgb = self.normalization.get("type") == "rgb"
        indices = epoch_indices(len(self.train_slices), plan.iterations_per_epoch * cfg.batch_size, self.gen)
        losses, fused_losses = [], []
        for it in range(plan.iterations_per_epoch):
            if self.cancel is not None and self.cancel.is_set():
                logger.warning(
                    "training cancelled during epoch %d; the checkpoint of epoch %d is kept", epoch + 1, epoch
                )
                return None
            batch = indices[it * cfg.batch_size : (it + 1) * cfg.batch_size]
            # every rank draws the global batch (the shared generator stays in step) and keeps its shard
            x, y = sample_batch(self.train_slices, batch, cfg.patch_size, self.gen, cfg.augmentation, rgb)
            if ctx.distributed:
                shard = slice(ctx.rank * self.local_batch, (ctx.rank + 1) * self.local_batch)
                x, y = x[shard], y[shard]
            loss, fused = train_step(
                self.step_network,
                self.optimizer,
                x.to(self.device),
                y.to(self.device),
                self.device,
                cfg.bf16,
                self.sum_across,
            )
            if ctx.distributed:  # the mean over ranks, the same on every rank
                loss, fused = (v / ctx.world_size for v in distributed.all_reduce_sum([loss, fused]))
            if not math.isfinite(loss):
                raise RuntimeError(
                    f"the training loss became {loss} at epoch {epoch + 1}, step {it + 1}; lower the "
                    "learning rate or disable bf16, then resume or restart"
                )
            losses.append(loss)
            fused_losses.append(fused)
            if self.progress is not None and ctx.is_main:
                self.progress(
                    epoch * plan.iterations_per_epoch + it + 1,
                    plan.epochs * plan.iterations_per_epoch,
                    {"epoch": epoch + 1, "epochs": plan.epochs, "loss": loss, "lr": lr_now},
                )
        return losses, fused_losses

    def record_epoch(self, epoch: int, lr_now: float, losses, val: dict, train_time: float, val_time: float) -> None:
        """The epoch's row, the best epoch so far, and (rank 0) checkpoints, log and curves."""
        names = {c["label_value"]: c["dataset_label"] for c in self.classes}
        row = {
            "epoch": epoch + 1,
            "steps": (epoch + 1) * self.plan.iterations_per_epoch,
            "lr": lr_now,
            "train_loss": float(np.mean(losses[0])),
            "train_loss_fused": float(np.mean(losses[1])),
            "val_loss": val["loss"],
            "val_dice_mean": val["mean_dice"],
            **{f"val_dice_{names.get(v, v)}": d for v, d in val["dice"].items()},
            "train_seconds": round(train_time, 2),
            "val_seconds": round(val_time, 2),
            "elapsed_seconds": round(self.previous_time + time.monotonic() - self.run_start, 1),
        }
        self.history.append(row)
        improved = val["mean_dice"] > self.best["mean_dice"]
        if improved:
            self.best = {
                "epoch": epoch + 1,
                "mean_dice": val["mean_dice"],
                "dice": {str(k): v for k, v in val["dice"].items()},
            }
        if not self.ctx.is_main:  # rank 0 writes checkpoints, logs and plots
            return
        if improved:
            save_checkpoint(
                {"model": self.network.state_dict(), "epoch": epoch + 1, "val": val}, self.out / CHECKPOINT_BEST
            )
        save_checkpoint(
            {
                "model": self.network.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "generator": self.gen.get_state(),
                "rng": rng_state(),
                "epoch": epoch + 1,
                "history": self.history,
                "best": self.best,
                "plan": asdict(self.plan),
                "settings": self.config.to_dict(),
                "target_spacing": list(self.target_spacing),
                "normalization": self.normalization,
                "lineage": self.lineage,
                "train_seconds": self.previous_time + time.monotonic() - self.run_start,
            },
            self.latest_path,
        )
        write_log(self.history, self.out / "training_log.csv")
        plot_curves(self.history, self.out / "training_curves.png")
        logger.info(
            "epoch %d/%d: lr %.2e, train loss %.4f (fused %.4f), val loss %.4f, val Dice %.4f%s (%.0f s + %.0f s val)",
            epoch + 1,
            self.plan.epochs,
            lr_now,
            row["train_loss"],
            row["train_loss_fused"],
            val["loss"],
            val["mean_dice"],
            " *best*" if improved else "",
            train_time,
            val_time,
        )

    def remove_empty_output(self) -> None:
        """Remove the run folder this run created when nothing was written into it."""
        if self.created_output and self.out.is_dir() and not any(self.out.iterdir()):
            shutil.rmtree(self.out, ignore_errors=True)


def new_network(
    in_channels: int, num_classes: int, backbone_checkpoint: str | None = None, init_package=None
) -> torch.nn.Module:
    """A new Attention-Mamba; ``init_package`` (a loaded ``ModelPackage``, the init_from model) gives its weights.

    Raises:
        ValueError: the init_from model has other input channels or outputs than the dataset needs.
    """
    from ..model import AttentionMamba

    network = AttentionMamba(in_channels, num_classes, backbone_checkpoint=backbone_checkpoint or None)
    if init_package is not None:
        source = init_package.build_network("cpu")
        if (source.in_channels, source.num_classes) != (in_channels, num_classes):
            raise ValueError(
                f"--init-from model {init_package.id} ({init_package.path}) has {source.in_channels} input "
                f"channel(s) and {source.num_classes} output(s); this dataset needs {in_channels} and {num_classes}"
            )
        network.load_state_dict({k: v.float() for k, v in source.state_dict().items()})
        logger.info("initialised the network from model %s %s (fine-tuning)", init_package.id, init_package.version)
    return network
