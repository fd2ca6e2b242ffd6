"""The typed model card: model.json read, checked and written in one place.

:meth:`ModelCard.from_dict` is the only reader of a model.json object: every check names the file and
the field, and the defaults are filled in there. :meth:`ModelCard.to_dict` writes the same object back
(fields this version does not know are kept). Classes are
:class:`~AttentionMambaSegLib.terminology.ClassEntry` values (names, colours, SNOMED CT codes, checked by
:mod:`AttentionMambaSegLib.terminology`). The checks are written out rather than taken from a schema
library because model.json is read inside Slicer's Python, which ships neither pydantic nor jsonschema,
on the path that lists models.

Fields (required unless a default is given):
    id (letters/digits/``._-``), version, task, modality (optional), in_channels (C), channel_names
    (optional), num_classes (K: softmax outputs incl. background, or 1 for sigmoid), activation
    ("softmax" | "sigmoid"), classes, normalization ({"type": zscore | ct | rgb | none, ...}),
    axes_code ("LPS"), slice_axis_rule ("largest-spacing-else-z"), slicing ("acquisition" | "canonical",
    see :mod:`AttentionMambaSegLib.inference.reslice`), target_spacing ([row_mm, col_mm] or
    null), patch_size ([H, W], multiples of 32), inference_patch_size (default patch_size),
    postprocessing ({"largest_component": [label values]} or {}), inference (speed modes, see
    :mod:`.modes`; default: sliding windows, ``accurate`` = 4 flips), confidence
    ({"threshold": t}, see :mod:`.confidence_rule`), appearance (training-image statistics for
    the plausibility warning, see :mod:`.appearance`), training_geometry (spacing and field
    of view of the training images, for the warning about inputs far outside them, see
    :mod:`.training_geometry`), photo_long_side (2D photograph models: the longer
    side in pixels of the training photographs; a much larger photograph is brought to that scale, see
    :mod:`AttentionMambaSegLib.inference.photo_scale`; optional), licence, training, metrics, limits
    (optional), name (optional, the name shown in model choosers), sha256 (of model.safetensors),
    weights_dtype ("float16"), architecture ("AttentionMamba"), architecture_kwargs ({}).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from .appearance import Appearance
from .axes import validate_axes_code
from .confidence_rule import ConfidenceRule
from .modes import SpeedModes
from .numbers import is_int, is_number, is_patch_size
from .training_geometry import TrainingGeometry

__all__ = ["ModelCard", "ID_PATTERN", "NORMALIZATION_TYPES", "SLICE_AXIS_RULES", "SLICING"]

SLICE_AXIS_RULES = ("largest-spacing-else-z",)
#: "acquisition": slice the input's own grid; "canonical": resample an oblique input to the patient axes.
SLICING = ("acquisition", "canonical")
NORMALIZATION_TYPES = ("zscore", "ct", "rgb", "none")
#: A model id (and its folder name); used with ``fullmatch``, so no trailing newline is accepted.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_REQUIRED = ("id", "version", "in_channels", "num_classes", "activation", "classes", "normalization", "patch_size")
_TEXT = ("version", "task", "modality", "licence")


class _Checker:
    """Raises ``ValueError("<source>: field '<name>' must be <expected>, got <value>.")``."""

    def __init__(self, source: str):
        self.source = source

    def require(self, ok: bool, name: str, expected: str, got: Any) -> None:
        if not ok:
            raise ValueError(f"{self.source}: field '{name}' must be {expected}, got {got!r}.")


@dataclass(frozen=True)
class ModelCard:
    """What a model is: model.json as typed fields (see the module docstring for each field)."""

    id: str
    version: str
    in_channels: int
    num_classes: int
    activation: str
    classes: tuple
    normalization: dict
    patch_size: tuple[int, int]
    inference_patch_size: tuple[int, int]
    target_spacing: tuple[float, float] | None = None
    task: str | None = None
    modality: str | None = None
    channel_names: tuple[str, ...] | None = None
    axes_code: str = "LPS"
    slice_axis_rule: str = "largest-spacing-else-z"
    slicing: str = "acquisition"
    postprocessing: dict = field(default_factory=dict)
    inference: dict = field(default_factory=dict)
    confidence: dict = field(default_factory=dict)
    appearance: dict = field(default_factory=dict)
    training_geometry: dict = field(default_factory=dict)
    photo_long_side: int | None = None
    licence: str | None = None
    sha256: str | None = None
    weights_dtype: str = "float16"
    architecture: str = "AttentionMamba"
    architecture_kwargs: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def foreground_classes(self) -> list:
        """The classes with label value >= 1, as :class:`~AttentionMambaSegLib.terminology.ClassEntry`."""
        return [c for c in self.classes if c.label_value >= 1]

    @property
    def class_dicts(self) -> list[dict]:
        """``classes`` as model.json objects (background entries included), as the label writers take them."""
        return [c.to_dict() for c in self.classes]

    @property
    def name(self) -> str | None:
        """The name shown in model choosers (model.json ``name``), or None."""
        return self.extra.get("name")

    @property
    def limits(self) -> dict:
        """model.json ``limits``: what the model needs and was (not) trained and validated on ({} if none)."""
        return self.extra.get("limits") or {}

    @property
    def speed_modes(self) -> SpeedModes:
        """``inference`` as :class:`~.modes.SpeedModes`."""
        return SpeedModes.from_dict(self.inference)

    @property
    def confidence_rule(self) -> ConfidenceRule:
        """``confidence`` as :class:`~.confidence_rule.ConfidenceRule`."""
        return ConfidenceRule.from_dict(self.confidence)

    @property
    def training_appearance(self) -> Appearance:
        """``appearance`` as :class:`~.appearance.Appearance`."""
        return Appearance.from_dict(self.appearance)

    @property
    def training_geometry_range(self) -> TrainingGeometry:
        """``training_geometry`` as :class:`~.training_geometry.TrainingGeometry`."""
        return TrainingGeometry.from_dict(self.training_geometry)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "model.json") -> ModelCard:
        """Check a parsed model.json object and fill in its defaults.

        Raises:
            ValueError: naming ``source`` and the field, for any missing or invalid field.
        """
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(raw).__name__}.")
        for key in _REQUIRED:
            if key not in raw:
                raise ValueError(f"{source}: required field '{key}' is missing.")
        check = _Checker(source)
        _check_identity(raw, check)
        _check_outputs(raw, check)
        _check_geometry(raw, check)
        _check_normalization(raw.get("normalization"), check)
        _check_inference(raw, source)
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in raw.items() if k in known}
        values.update(
            version=str(raw["version"]),
            classes=tuple(_read_classes(raw, check)),
            patch_size=tuple(raw["patch_size"]),
            inference_patch_size=tuple(raw.get("inference_patch_size") or raw["patch_size"]),
            target_spacing=tuple(float(v) for v in raw["target_spacing"]) if raw.get("target_spacing") else None,
            channel_names=tuple(raw["channel_names"]) if raw.get("channel_names") else None,
            axes_code=_axes_code(raw.get("axes_code", "LPS"), source),
            postprocessing=dict(raw.get("postprocessing") or {}),
            architecture_kwargs=dict(raw.get("architecture_kwargs") or {}),
            training=dict(raw.get("training") or {}),
            metrics=dict(raw.get("metrics") or {}),
            inference=dict(raw.get("inference") or {}),
            confidence=dict(raw.get("confidence") or {}),
            appearance=dict(raw.get("appearance") or {}),
            training_geometry=dict(raw.get("training_geometry") or {}),
            extra={k: v for k, v in raw.items() if k not in known},
        )
        return cls(**values)

    def to_dict(self) -> dict:
        """The model.json object (JSON types; unknown fields kept; None-valued optional text left out)."""
        out: dict = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                continue
            if value is None and f.name in (
                "task",
                "modality",
                "channel_names",
                "licence",
                "sha256",
                "photo_long_side",
            ):
                continue
            if (
                f.name in ("training", "metrics", "inference", "confidence", "appearance", "training_geometry")
                and not value
            ):
                continue
            if f.name == "classes":
                value = [c.to_dict() for c in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        out.update(self.extra)
        return out


def _check_identity(raw: dict, check: _Checker) -> None:
    check.require(
        isinstance(raw["id"], str) and bool(ID_PATTERN.fullmatch(raw["id"])),
        "id",
        "letters, digits, '.', '_' or '-' (a folder name)",
        raw["id"],
    )
    for key in _TEXT + ("name",):
        if key in raw:
            value = raw[key]
            check.require(
                isinstance(value, (str, int, float)) and str(value).isprintable(),
                key,
                "printable text (no line breaks or control characters)",
                value,
            )
    if "sha256" in raw:
        check.require(
            isinstance(raw["sha256"], str) and bool(re.fullmatch(r"[0-9a-f]{64}", raw["sha256"])),
            "sha256",
            "64 lower-case hex digits",
            raw["sha256"],
        )


def _check_outputs(raw: dict, check: _Checker) -> None:
    for key in ("in_channels", "num_classes"):
        check.require(is_int(raw[key]) and raw[key] >= 1, key, "a positive integer", raw[key])
    act, k = raw["activation"], raw["num_classes"]
    check.require(act in ("softmax", "sigmoid"), "activation", "'softmax' or 'sigmoid'", act)
    if act == "sigmoid":
        check.require(k == 1, "num_classes", "1 for a sigmoid model", k)
    else:
        check.require(2 <= k <= 256, "num_classes", "2..256 for a softmax model (background included)", k)
    post = raw.get("postprocessing", {})
    largest = post.get("largest_component", []) if isinstance(post, dict) else None
    check.require(
        isinstance(post, dict)
        and not set(post) - {"largest_component"}
        and isinstance(largest, list)
        and all(is_int(v) and 1 <= v <= 255 for v in largest),
        "postprocessing",
        '{"largest_component": [label values 1..255]} or {}',
        post,
    )
    check.require(
        isinstance(raw.get("architecture_kwargs", {}), dict),
        "architecture_kwargs",
        "an object (keyword arguments of the network)",
        raw.get("architecture_kwargs"),
    )


def _check_geometry(raw: dict, check: _Checker) -> None:
    check.require(is_patch_size(raw["patch_size"]), "patch_size", "[H, W], positive multiples of 32", raw["patch_size"])
    window = raw.get("inference_patch_size", raw["patch_size"])
    check.require(is_patch_size(window), "inference_patch_size", "[H, W], positive multiples of 32", window)
    spacing = raw.get("target_spacing")
    check.require(
        spacing is None
        or (isinstance(spacing, (list, tuple)) and len(spacing) == 2 and all(is_number(s) and s > 0 for s in spacing)),
        "target_spacing",
        "null or [row_mm, col_mm] positive numbers",
        spacing,
    )
    rule = raw.get("slice_axis_rule", "largest-spacing-else-z")
    check.require(rule in SLICE_AXIS_RULES, "slice_axis_rule", f"one of {SLICE_AXIS_RULES}", rule)
    slicing = raw.get("slicing", "acquisition")
    check.require(slicing in SLICING, "slicing", f"one of {SLICING}", slicing)
    long_side = raw.get("photo_long_side")
    check.require(
        long_side is None or (is_int(long_side) and 32 <= long_side <= 100_000),
        "photo_long_side",
        "null or the longer side of the training photographs in pixels (an integer, 32..100000)",
        long_side,
    )


def _check_inference(raw: dict, source: str) -> None:
    """``inference``, ``confidence``, ``appearance`` and ``training_geometry``, read by their own types."""
    SpeedModes.from_dict(raw.get("inference"), source)
    ConfidenceRule.from_dict(raw.get("confidence"), source)
    Appearance.from_dict(raw.get("appearance"), source)
    TrainingGeometry.from_dict(raw.get("training_geometry"), source)


def _check_normalization(norm, check: _Checker) -> None:
    check.require(
        isinstance(norm, dict) and norm.get("type") in NORMALIZATION_TYPES,
        "normalization",
        f"an object with 'type' in {NORMALIZATION_TYPES}",
        norm,
    )
    if norm["type"] != "ct":
        return
    for key in ("clip", "mean", "std"):
        check.require(
            key in norm,
            "normalization",
            f"for type 'ct', an object with 'clip' [lo, hi], 'mean' and 'std' (missing '{key}')",
            norm,
        )
    clip = norm["clip"]
    check.require(
        isinstance(clip, (list, tuple)) and len(clip) == 2 and all(is_number(v) for v in clip) and clip[0] < clip[1],
        "normalization.clip",
        "[lo, hi] numbers with lo < hi",
        clip,
    )
    check.require(is_number(norm["mean"]), "normalization.mean", "a finite number", norm["mean"])
    check.require(is_number(norm["std"]) and norm["std"] > 0, "normalization.std", "a positive number", norm["std"])


def _axes_code(code, source: str) -> str:
    try:
        return validate_axes_code(code)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e


def _read_classes(raw: dict, check: _Checker) -> list:
    """The classes as ClassEntry values: codes and colours distinct, one per output label value."""
    from ..terminology import read_classes

    try:
        entries = read_classes(raw["classes"], "classes")
    except ValueError as e:
        raise ValueError(f"{check.source}: {e}") from e
    k, sigmoid = raw["num_classes"], raw["activation"] == "sigmoid"
    max_label = 1 if sigmoid else k - 1
    for i, entry in enumerate(entries):
        check.require(
            entry.label_value <= max_label,
            f"classes[{i}].label_value",
            f"an integer in 0..{max_label}",
            entry.label_value,
        )
    seen = {entry.label_value for entry in entries}
    if sigmoid:
        check.require(1 in seen, "classes", "an entry with label_value 1 for a sigmoid model", sorted(seen))
    else:
        missing = sorted(set(range(1, k)) - seen)
        check.require(
            not missing,
            "classes",
            f"an entry for every label value 1..{k - 1} of the {k}-class softmax model (missing {missing})",
            sorted(seen),
        )
    return entries
