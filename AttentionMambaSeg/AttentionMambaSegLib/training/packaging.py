"""The model package a training run ends with (:class:`Packaging`, the last step of :class:`~.trainer.Trainer`):
the best epoch's network, its model card, and the per-case evaluation of the validation cases."""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .. import __version__
from .card_writer import KNOWN_DATASETS, model_licence, summary_to_metrics
from .checkpoint import CHECKPOINT_BEST, load_checkpoint
from .run_state import RunState
from .schedule import ETA_MIN

__all__ = ["Packaging", "PACKAGE_FOLDER"]

logger = logging.getLogger(__name__)

#: The model package's folder inside the run folder.
PACKAGE_FOLDER = "model"


class Packaging(RunState):
    """The packaging step of a training run: the best epoch's network and its model card as a model package.

    A part of :class:`~.trainer.Trainer`: the methods read the run's settings, data, classes, plan and
    history (:class:`~.run_state.RunState`), which the trainer's earlier steps set.
    """

    def write_package(self) -> Path:
        """The best epoch's network as a model package, scored per case when ``final_evaluation``."""
        from ..package import save_model_package

        cfg = self.config
        self.network.load_state_dict(load_checkpoint(self.out / CHECKPOINT_BEST)["model"])
        self.network.eval()
        card = self.model_card()
        package_dir = self.out / PACKAGE_FOLDER
        save_model_package(self.network, card, package_dir)
        if cfg.final_evaluation:
            from ..evaluation import evaluate
            from ..inference import InferenceSettings

            evaluation_start = time.monotonic()
            summary = evaluate(
                package_dir,
                cfg.dataset,
                InferenceSettings(device=str(self.device), tta=True, overwrite=True),
                split="val",
                fold=cfg.fold,
                output=self.out / "val_metrics.csv",
            )  # the run's own files
            assert summary is not None  # None only when cancelled, and no cancel is passed
            card["metrics"]["val"] = summary_to_metrics(summary)
            save_model_package(self.network, card, package_dir)
            reserved = self.evaluation_reserve
            logger.info(
                "final evaluation: %.0f s%s",
                time.monotonic() - evaluation_start,
                "" if reserved is None else f" ({reserved:.0f} s were reserved for it in the time budget)",
            )
        logger.info("model package written to %s (%.1f min in all)", package_dir, (self.clock() - self.start_time) / 60)
        return package_dir

    def model_card(self) -> dict:
        """model.json of the run (before the per-case evaluation)."""
        cfg, info, plan = self.config, self.info, self.plan
        names = {c["label_value"]: c["dataset_label"] for c in self.classes}
        seconds = self.history[-1]["elapsed_seconds"] if self.history else 0.0
        known = KNOWN_DATASETS.get(info.name, {})
        return {
            "id": cfg.model_id or f"{info.name.lower()}-attention-mamba",
            "version": str(cfg.model_version),
            "task": info.task or known.get("task", f"{info.name} segmentation"),
            "modality": info.modality or known.get("modality", ", ".join(info.channel_names)),
            "in_channels": info.num_channels,
            "channel_names": list(info.channel_names),
            "num_classes": self.num_classes,
            "activation": self.activation,
            "classes": self.classes,
            "normalization": self.normalization,
            "axes_code": cfg.axes_code,
            "slice_axis_rule": "largest-spacing-else-z",
            "target_spacing": list(self.target_spacing),
            "patch_size": [cfg.patch_size, cfg.patch_size],
            "licence": model_licence(info),
            "training": {
                "data": f"{info.name} ({info.reference or 'no reference'}), fold {cfg.fold} of splits_final.json: "
                f"{len(self.train_cases)} training cases ({len(self.train_slices)} slices), "
                f"{len(self.val_cases)} validation cases",
                "licence": model_licence(info),
                "data_licence": info.licence,
                "command": cfg.command,
                "epochs": plan.epochs,
                "epochs_completed": len(self.history),
                "iterations_per_epoch": plan.iterations_per_epoch,
                "batch_size": cfg.batch_size,
                "optimizer": {"name": "AdamW", "lr": cfg.lr, "betas": [0.9, 0.999], "weight_decay": cfg.weight_decay},
                "schedule": (
                    f"cosine annealing per epoch, T_max = epochs/3 = {plan.t_max:.2f}"
                    if plan.t_max < plan.epochs
                    else f"cosine annealing per epoch, T_max = epochs = {plan.t_max:.2f} (one fall)"
                )
                + f", eta_min {ETA_MIN}",
                "augmentation": _augmentation_name(cfg.augmentation),
                "seed": cfg.seed,
                "bf16": cfg.bf16,
                "device": str(self.device),
                "time": f"{seconds / 60:.1f} min",
                "time_seconds": round(seconds, 1),
                "time_budget_minutes": cfg.time_budget_minutes,
                "selected_epoch": self.best["epoch"],
                "selection": f"best mean validation Dice on {plan.val_slices} whole validation slices",
                "software": f"AttentionMambaSeg {__version__}, torch {torch.__version__}, "
                f"Python {platform.python_version()}",
                **self.lineage,
            },
            # Until tools/measure_inference.py measures both modes on the validation split, a CPU uses the
            # fast one (no flips): 4 flips cost 4 times the time for a small gain.
            "inference": {
                "modes": {"fast": {"window": "sliding", "flips": 1}, "accurate": {"window": "sliding", "flips": 4}},
                "cpu_mode": "fast",
            },
            "metrics": {
                "val_slices_pooled": {
                    "dice": {names[int(k)]: round(v, 4) for k, v in self.best.get("dice", {}).items()},
                    "mean_dice": round(self.best["mean_dice"], 4),
                    "epoch": self.best["epoch"],
                }
            },
        }


def _augmentation_name(augmentation) -> str:
    from .augmentation import PRESETS

    for name, preset in PRESETS.items():
        if augmentation == preset:
            return name
    return "custom: " + json.dumps(asdict(augmentation))
