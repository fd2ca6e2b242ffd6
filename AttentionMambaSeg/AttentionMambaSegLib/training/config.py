"""Every training setting, in one frozen dataclass: the CLI builds it, the checkpoint stores it.

A resumed run compares the stored recipe field by field with the one asked for (:meth:`TrainingConfig.
recipe_differences`); the run controls (where to write, when to stop, the device, the budget) may
change between the parts of a run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path

from .augmentation import PAPER, PRESETS, AugmentationParams

__all__ = ["TrainingConfig", "ConfigError", "RUN_CONTROLS", "CLI_FLAGS"]

#: Fields that may differ when a run is resumed (they do not change what is learnt).
RUN_CONTROLS = frozenset(
    {
        "output",
        "resume",
        "stop_after_epoch",
        "package_on_stop",
        "device",
        "time_budget_minutes",
        "final_evaluation",
        "command",
    }
)
#: The ``attention-mamba-seg train`` flag of each field (the rest are ``--field-name``).
CLI_FLAGS = {"dataset": "DATASET", "patch_size": "--patch", "time_budget_minutes": "--time-budget"}


class ConfigError(ValueError):
    """An invalid setting; :attr:`field` names it, and :meth:`for_cli` says it with the CLI flag."""

    def __init__(self, field_name: str, template: str):
        self.field = field_name
        self.template = template
        super().__init__(template.format(name=field_name))

    def for_cli(self) -> str:
        """The message with the field's command-line flag (``--patch`` for ``patch_size``)."""
        return self.template.format(name=CLI_FLAGS.get(self.field, "--" + self.field.replace("_", "-")))


@dataclass(frozen=True)
class TrainingConfig:
    """The settings of one training run (paper: arXiv 2402.02286 v4, Sec. 4).

    Attributes:
        dataset: nnU-Net v2 raw dataset folder (stored resolved).
        output: run folder; the model package goes to ``output/model``.
        fold: fold of splits_final.json ("train" cases train, "val" cases select the model).
        epochs: epochs of the schedule (paper: 150 ACDC / ISIC); an upper bound under a time budget.
        patch_size: P, crop size in pixels, a positive multiple of 32 (paper 192 ACDC, 256 ISIC).
        batch_size: crops per step, the global batch under torchrun (paper 24; 12 ISIC).
        lr: AdamW learning rate (paper 5e-4).
        weight_decay: AdamW weight decay on every parameter (paper 5e-2 ACDC; 1e-2 ISIC).
        time_budget_minutes: wall-clock minutes for the whole run; None: no budget.
        iterations_per_epoch: fixed steps per epoch (default: one pass, or the budget's).
        val_slices: fixed validation slices per epoch (default: all, or the budget's).
        resume: continue from ``output/checkpoint_latest.pt``.
        stop_after_epoch: stop, with a checkpoint, once this many epochs are done.
        package_on_stop: with ``stop_after_epoch``, write the package of the best epoch so far.
        device: "auto", "cpu", "cuda" or "cuda:N".
        seed: seeds the initialisation, crops and augmentations (paper 1290).
        model_id: model.json "id" (default ``<dataset name>-attention-mamba``).
        model_version: model.json "version".
        activation: "softmax", "sigmoid" (one foreground label) or "auto".
        axes_code: orientation volumes are reoriented to before slicing.
        backbone_checkpoint: optional pretrained deep-stem ResNet-18 weights.
        target_spacing: in-plane (row, column) spacing in mm; default the ``init_from`` model's, else the
            median of the training cases.
        init_from: model package (id or folder) whose weights start the run.
        bf16: bfloat16 autocast for the forward passes.
        augmentation: :class:`~.augmentation.AugmentationParams` (or a preset name, "paper" or "site").
        final_evaluation: score the selected model per case on the validation cases, with TTA.
        command: the command line recorded in model.json.

    Raises:
        ConfigError: an invalid value (the message names the field).
    """

    dataset: str
    output: str
    fold: int = 0
    epochs: int = 150
    patch_size: int = 192
    batch_size: int = 24
    lr: float = 5e-4
    weight_decay: float = 5e-2
    time_budget_minutes: float | None = None
    iterations_per_epoch: int | None = None
    val_slices: int | None = None
    resume: bool = False
    stop_after_epoch: int | None = None
    package_on_stop: bool = False
    device: str = "auto"
    seed: int = 1290
    model_id: str | None = None
    model_version: str = "1.0.0"
    activation: str = "auto"
    axes_code: str = "LPS"
    backbone_checkpoint: str | None = None
    target_spacing: tuple[float, float] | None = None
    init_from: str | None = None
    bf16: bool = False
    augmentation: AugmentationParams = field(default=PAPER)
    final_evaluation: bool = True
    command: str | None = None

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        put("dataset", str(Path(self.dataset).resolve()))
        put("output", str(self.output))
        if self.init_from is not None:
            put("init_from", str(self.init_from) or None)
        if self.target_spacing is not None:
            spacing = tuple(float(v) for v in self.target_spacing)
            if len(spacing) != 2 or not all(v > 0 for v in spacing):
                raise ConfigError("target_spacing", "{name} must be two positive numbers (mm), got " + repr(spacing))
            put("target_spacing", spacing)
        if isinstance(self.augmentation, str):
            if self.augmentation not in PRESETS:
                raise ConfigError(
                    "augmentation", "{name} must be one of " + ", ".join(PRESETS) + f", got {self.augmentation!r}"
                )
            put("augmentation", PRESETS[self.augmentation])
        elif isinstance(self.augmentation, dict):
            put("augmentation", AugmentationParams.from_dict(self.augmentation))
        if self.patch_size % 32 or self.patch_size < 32:
            raise ConfigError("patch_size", "{name} must be a positive multiple of 32, got " + str(self.patch_size))
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(name, "{name} must be at least 1, got " + str(getattr(self, name)))
        for name in ("iterations_per_epoch", "val_slices", "stop_after_epoch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(name, "{name} must be at least 1, got " + str(value))
        if self.lr <= 0 or self.weight_decay < 0:
            bad = "lr" if self.lr <= 0 else "weight_decay"
            raise ConfigError(
                bad, "{name} must be " + ("positive" if bad == "lr" else "zero or more") + f", got {getattr(self, bad)}"
            )
        if self.time_budget_minutes is not None and self.time_budget_minutes <= 0:
            raise ConfigError(
                "time_budget_minutes", "{name} must be positive (minutes), got " + str(self.time_budget_minutes)
            )
        if self.activation not in ("auto", "softmax", "sigmoid"):
            raise ConfigError(
                "activation", "{name} must be 'auto', 'softmax' or 'sigmoid', got " + repr(self.activation)
            )

    def to_dict(self) -> dict:
        """Plain JSON-able values (augmentation as a dict, spacing as a list), for checkpoints and logs."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["augmentation"] = dataclasses.asdict(self.augmentation)
        out["target_spacing"] = list(self.target_spacing) if self.target_spacing else None
        return out

    @classmethod
    def from_dict(cls, values: dict, defaults: TrainingConfig | None = None) -> TrainingConfig:
        """The inverse of :meth:`to_dict`; fields missing from ``values`` come from ``defaults``."""
        known = {f.name for f in fields(cls)}
        base = defaults.to_dict() if defaults is not None else {}
        return cls(**{**base, **{k: v for k, v in values.items() if k in known}})

    def recipe_differences(self, other: TrainingConfig) -> dict:
        """``{field: (self's, other's)}`` for every field outside :data:`RUN_CONTROLS` that differs."""
        return {
            f.name: (getattr(self, f.name), getattr(other, f.name))
            for f in fields(self)
            if f.name not in RUN_CONTROLS and getattr(self, f.name) != getattr(other, f.name)
        }

    def with_controls_of(self, other: TrainingConfig) -> TrainingConfig:
        """This recipe with where, how and when ``other`` runs (the first part's command and budget are kept)."""
        keep = RUN_CONTROLS - {"command", "time_budget_minutes"}
        return dataclasses.replace(self, **{name: getattr(other, name) for name in keep})
