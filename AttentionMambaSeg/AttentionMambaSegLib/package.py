"""Model packages: a folder with ``model.json`` (what the model is) and ``model.safetensors`` (weights).

A package describes itself, as an nnU-Net results folder does, so inference needs nothing else: the
classes (names, colours, label values, SNOMED CT terminology), the normalisation, the orientation
and spacing the slices were trained at, the patch size, training provenance and metrics.

Safety: weights are stored as float16 safetensors (never a pickle, so a downloaded model cannot run
code), and the file's SHA-256 recorded in model.json is checked before any weight is loaded and before
a package is imported. Bundled models live in ``AttentionMambaSeg/Resources/Models/<id>/``; imported
models in a per-user cache, removable with :func:`remove_imported_models`: the folder named by the
environment variable ``ATTENTION_MAMBA_SEG_MODELS_DIR`` (the Slicer module sets it to its per-user data
folder, ``slicer_models``; never Slicer's cache, which Clear cache empties), else ``platformdirs.user_cache_dir("AttentionMambaSeg")/models``.
Listing models needs neither platformdirs nor torch: bundled models are always listed. An imported model with the id of a bundled one takes precedence.

model.json's fields and their checks: :mod:`.model_card`.

Label values: network output channel k is label value k (softmax); a sigmoid model writes label 1.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

from .outputs import explain_write_error
from .card import ID_PATTERN, ModelCard, is_number

logger = logging.getLogger(__name__)

__all__ = [
    "ModelIntegrityError",
    "ModelPackage",
    "bundled_models_dir",
    "imported_models_dir",
    "import_model_package",
    "list_models",
    "load_model_package",
    "register_architecture",
    "imported_models_size",
    "remove_imported_model",
    "remove_imported_models",
    "save_model_package",
    "sha256_of_file",
    "validate_config",
]

CONFIG_NAME = "model.json"
WEIGHTS_NAME = "model.safetensors"
_ARCHITECTURES: dict[str, Callable[..., Any]] = {}
#: Hidden folders this module creates (interrupted import / save / swap), safe to delete.
_LEFTOVER_PATTERN = re.compile(r"^\.(import-.+|.+\.(old|tmp)-[0-9a-f]{8})$")


class ModelIntegrityError(ValueError):
    """The weights file does not match the SHA-256 recorded in model.json (corrupted or tampered)."""


def bundled_models_dir() -> Path:
    """Folder of the models shipped with the extension: ``AttentionMambaSeg/Resources/Models``."""
    return Path(__file__).resolve().parent.parent / "Resources" / "Models"


MODELS_DIR_VARIABLE = "ATTENTION_MAMBA_SEG_MODELS_DIR"


def imported_models_dir() -> Path:
    """Per-user folder of imported models (not created here).

    Returns:
        ``$ATTENTION_MAMBA_SEG_MODELS_DIR`` when set, else ``platformdirs.user_cache_dir("AttentionMambaSeg")/models``.

    Raises:
        ModuleNotFoundError: the variable is not set and platformdirs is not installed (the message
            says what to do).
        NotADirectoryError: the variable names a file.
    """
    override = os.environ.get(MODELS_DIR_VARIABLE)
    if override:
        folder = Path(override)
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(
                f"The environment variable {MODELS_DIR_VARIABLE} names {folder}, which is a file, not a folder: set "
                "it to a folder for imported models (it is created if missing), or unset it to use the default."
            )
        return folder
    try:
        import platformdirs
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"The imported-models folder needs platformdirs (pip install platformdirs) or the environment "
            f"variable {MODELS_DIR_VARIABLE} naming a folder.", name="platformdirs"
        ) from e
    return Path(platformdirs.user_cache_dir("AttentionMambaSeg", appauthor=False)) / "models"


def _imported_models_dir_if_known() -> Path | None:
    """:func:`imported_models_dir`, or None (logged at debug level) where it cannot be known."""
    try:
        return imported_models_dir()
    except ModuleNotFoundError as e:
        logger.debug("Imported models are not listed: %s", e)
        return None
    except NotADirectoryError as e:
        logger.warning("Imported models are not listed: %s", e)
        return None


def register_architecture(name: str, factory: Callable[..., Any]) -> None:
    """Register a network constructor ``factory(in_channels, num_classes, **architecture_kwargs)``.

    ``"AttentionMamba"`` is built in; other names are for experiments and tests.
    """
    _ARCHITECTURES[name] = factory


def sha256_of_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def validate_config(config: dict, source: str = CONFIG_NAME) -> dict:
    """Check a model.json dict and fill in defaults (:meth:`~.model_card.ModelCard.from_dict`).

    Returns:
        A new dict with defaults filled in.

    Raises:
        ValueError: naming the file and the field, for any missing or invalid field.
    """
    return ModelCard.from_dict(config, source).to_dict()


class ModelPackage:
    """A model folder: model.json + model.safetensors.

    Attributes:
        path: the folder.
        config: model.json with defaults filled in.
        id, version: from model.json.
        classes: foreground classes (label_value >= 1), each ``{label_value, name, color, snomed}``.
        in_channels: C, image components the network expects (1 grey, 3 RGB).
        num_classes: K, network output channels (incl. background for softmax; 1 for sigmoid).

    Example:
        >>> package = load_model_package("cardiac-acdc")  # doctest: +SKIP
        >>> network = package.build_network("cpu")        # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, config: dict | None = None):
        """Load (or take) and validate the config of the package in ``path``.

        Raises:
            FileNotFoundError: if model.json is missing.
            ValueError: if model.json is not valid JSON or a field is invalid.
        """
        self.path = Path(path)
        source = str(self.path / CONFIG_NAME)
        if config is None:
            if not (self.path / CONFIG_NAME).is_file():
                raise FileNotFoundError(f"No {CONFIG_NAME} in model folder {self.path}: not a model package.")
            try:
                config = json.loads((self.path / CONFIG_NAME).read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ValueError(f"{source} is not valid JSON: {e}") from e
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{source} is not UTF-8 text (byte {e.start}: {e.reason}); save model.json as UTF-8."
                ) from e
        self.card = ModelCard.from_dict(config, source)
        self.config = self.card.to_dict()
        self.id: str = self.config["id"]
        self.version: str = str(self.config["version"])
        self.in_channels: int = self.config["in_channels"]
        self.num_classes: int = self.config["num_classes"]
        self.classes: list[dict] = [c for c in self.config["classes"] if c["label_value"] >= 1]

    @property
    def class_entries(self) -> list:
        """Foreground classes as :class:`~AttentionMambaSegLib.terminology.ClassEntry` (names, colours, codes)."""
        from .terminology import ClassEntry

        return [ClassEntry.from_dict(c, f"classes of model '{self.id}'") for c in self.classes]

    def __repr__(self) -> str:
        return f"ModelPackage(id={self.id!r}, version={self.version!r}, path={str(self.path)!r})"

    @property
    def weights_path(self) -> Path:
        """Path of model.safetensors."""
        return self.path / WEIGHTS_NAME

    def verify(self) -> None:
        """Check that the weights file exists and matches the SHA-256 in model.json.

        Raises:
            FileNotFoundError: if model.safetensors is missing.
            ModelIntegrityError: if model.json has no sha256 or the hash differs.
        """
        if not self.weights_path.is_file():
            raise FileNotFoundError(f"Model '{self.id}': weights file {self.weights_path} is missing.")
        expected = self.config.get("sha256")
        if not expected:
            raise ModelIntegrityError(
                f"Model '{self.id}': {self.path / CONFIG_NAME} has no 'sha256', so the weights cannot be "
                "verified. Re-save the package with save_model_package."
            )
        actual = sha256_of_file(self.weights_path)
        if actual != expected:
            raise ModelIntegrityError(
                f"Model '{self.id}': SHA-256 of {self.weights_path} is {actual}, but model.json expects "
                f"{expected}. The file is corrupted or was modified; re-import or re-install the model."
            )

    def check_weights_fit(self) -> None:
        """Check, without loading them, that the weights have every tensor of the network with its shape and dtype.

        Reads the safetensors header and builds the architecture on PyTorch's ``meta`` device (no memory).

        Raises:
            ValueError: the file is not readable as safetensors, or a tensor is missing, extra, or has
                another shape or dtype than the architecture of model.json needs (each named).
            ModuleNotFoundError: torch or safetensors is not installed (the message says how to install them).
        """
        try:
            import torch
            from safetensors import safe_open
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(
                f"Checking the weights of model '{self.id}' needs PyTorch and safetensors, and {e.name} is not "
                "installed: pip install torch safetensors (in Slicer: press Segment once, which installs them).",
                name=e.name) from e

        with torch.device("meta"):
            reference = _build_architecture(self.config).state_dict()
        try:
            with safe_open(str(self.weights_path), framework="pt") as f:
                stored = {name: (tuple(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype())
                          for name in f.keys()}
        except Exception as e:  # safetensors raises its own error types for a malformed header
            raise ValueError(f"Model '{self.id}': {self.weights_path} is not a readable safetensors file "
                             f"({type(e).__name__}: {e}).") from e
        problems = [f"missing {n}" for n in sorted(set(reference) - set(stored))]
        problems += [f"unexpected {n}" for n in sorted(set(stored) - set(reference))]
        for name, tensor in reference.items():
            if name not in stored:
                continue
            shape, dtype = stored[name]
            want = "F16" if tensor.is_floating_point() else str(tensor.dtype).replace("torch.", "").upper()
            want = {"INT64": "I64", "INT32": "I32", "UINT8": "U8", "BOOL": "BOOL"}.get(want, want)
            if shape != tuple(tensor.shape) or dtype != want:
                problems.append(f"{name}: {dtype} {list(shape)} where the network needs {want} {list(tensor.shape)}")
        if problems:
            raise ValueError(f"Model '{self.id}': the weights do not fit the '{self.config['architecture']}' "
                             f"network of model.json ({len(problems)} problems: {'; '.join(problems[:5])}).")

    def build_network(self, device: Any = "cpu"):
        """Verify the weights and build the network on ``device`` in eval mode (float32).

        Args:
            device: torch device or string.

        Returns:
            ``torch.nn.Module`` in eval mode; eval forward maps float32 (B, C, H, W) to logits (B, K, H, W).

        Raises:
            FileNotFoundError, ModelIntegrityError: see :meth:`verify`.
            ValueError: if the weights do not fit the architecture.
        """
        import torch
        from safetensors.torch import load_file

        self.verify()
        network = _build_architecture(self.config)
        try:
            state = load_file(str(self.weights_path), device="cpu")
        except Exception as e:  # SafetensorError (header, truncation) and OSError
            raise ValueError(
                f"Model '{self.id}': the weights file {self.weights_path} could not be read as safetensors "
                f"({type(e).__name__}: {e}). Re-export or re-install the model."
            ) from e
        reference = network.state_dict()
        converted = {}
        for name, tensor in state.items():
            target = reference.get(name)
            converted[name] = tensor.to(target.dtype) if target is not None else tensor
        try:
            network.load_state_dict(converted, strict=True)
        except RuntimeError as e:
            raise ValueError(
                f"Model '{self.id}': the weights in {self.weights_path} do not fit the "
                f"'{self.config['architecture']}' network described by model.json: {e}"
            ) from e
        network = network.to(torch.device(device) if isinstance(device, str) else device)
        network.eval()
        return network

    @property
    def licence(self) -> str:
        """The licence of the weights, as model.json states it ("" when it states none)."""
        return str(self.config.get("licence") or "")

    @property
    def licence_needs_acceptance(self) -> bool:
        """True unless the licence is a known permissive one (a model without a licence statement needs it too).

        Non-commercial (``NC``) and research-only licences, and unknown ones, must be accepted by the user
        before the model is used.
        """
        text = self.licence.lower()
        if not text or "nc" in re.findall(r"[a-z]+", text) or any(
                word in text for word in ("non-commercial", "noncommercial", "not be used commercially",
                                          "research")):
            return True
        return not any(word in text for word in ("cc by", "cc0", "apache", "mit", "bsd"))

    def validation_dice(self) -> tuple[float | None, bool]:
        """(mean validation Dice, with flip TTA) from model.json metrics: the TTA figure where recorded."""
        metrics = self.config.get("metrics") or {}
        for key, tta in (("val_tta", True), ("val", False)):
            value = (metrics.get(key) or {}).get("mean_dice")
            if is_number(value):
                return float(value), tta
        return None, False

    def summary(self) -> str:
        """A few lines for a model chooser: licence, validation Dice, the shift suite, what it was not
        validated on (the card's ``limits``)."""
        dice, tta = self.validation_dice()
        figure = (f"validation Dice {dice:.3f}" + (" (with flip TTA)" if tta else "")) if dice is not None \
            else "no validation figure recorded"
        text = f"Licence: {self.licence or 'not stated'}. {figure[0].upper()}{figure[1:]}."
        suite = (self.config.get("metrics") or {}).get("shift_suite") or {}
        if suite.get("shift_mean") is not None:
            text += f" Under site-like changes (colour, scale, noise...): {suite['shift_mean']:.3f}."
        limits = self.config.get("limits") or {}
        if limits.get("needs"):
            text += f" Needs {limits['needs']}."
        if limits.get("not_validated_on"):
            value = limits["not_validated_on"]
            text += " Not validated on: " + ("; ".join(value) if isinstance(value, list) else str(value)) + "."
        return text

    def describe(self) -> str:
        """The model card, short and human-readable (``models info``; the Slicer panel's details).

        Task, classes, licence, the data it was trained and validated on and its limits, validation
        figures (clean and, where measured, under the shift suite and on external data), and how it
        was trained, one line per step. ``models info --json`` prints the raw model.json instead.
        """
        c = self.config
        channels = ", ".join(c.get("channel_names") or []) or f"{self.in_channels} channel(s)"
        lines = [f"{self.id} {self.version}: {c.get('task', 'segmentation')}",
                 f"  modality      {c.get('modality', 'not stated')} ({channels})",
                 f"  licence       {self.licence or 'not stated'}"]
        unit = "px" if (c.get("normalization") or {}).get("type") == "rgb" else "mm"  # photographs: pixels
        spacing = " x ".join(f"{float(v):g}" for v in c["target_spacing"]) + f" {unit}" if c.get("target_spacing") \
            else "the input's own spacing"
        window = " x ".join(str(v) for v in c["inference_patch_size"])
        lines.append(f"  input         2D slices at {spacing}{' a pixel' if unit == 'px' else ''}, slicing in the "
                     f"{'patient axes' if c.get('slicing') == 'canonical' else 'acquisition plane'}; "
                     f"sliding windows of {window} px")
        lines += self._describe_modes()
        lines.append("  classes")
        for entry in self.class_entries:
            code = f"  ({entry.type.scheme} {entry.type.value} {entry.type.meaning})" if entry.type else ""
            lines.append(f"    {entry.label_value:3d}  {entry.name}  rgb{tuple(entry.color)}{code}")
        lines += _describe_figures(c.get("metrics") or {}, unit)
        limits = c.get("limits") or {}
        for key, title in (("needs", "needs"), ("trained_on", "trained on"), ("validated_on", "validated on"),
                           ("not_validated_on", "not validated on"), ("external", "external figures")):
            value = limits.get(key)
            if value:
                lines.append(f"  {title:<13} " + ("; ".join(value) if isinstance(value, list) else str(value)))
        training = c.get("training") or {}
        steps = list(training.get("earlier_training") or [])
        lines.append("  training      oldest first; each step's weights started the next")
        lines.extend(f"    {_describe_step(step)}" for step in steps)
        lines.append(f"    {_describe_step(_this_step(c))}")
        if training.get("command"):
            lines.append(f"  command       {training['command']}")
        lines.append(f"  weights       {self.weights_path} (SHA-256 {str(c.get('sha256', 'missing'))[:16]}...)")
        return "\n".join(lines)


    def _describe_modes(self) -> list[str]:
        """The speed modes, their measured validation Dice and time, the CPU default and the review threshold."""
        modes = self.card.speed_modes
        measured = {name: (self.card.inference.get("modes") or {}).get(name, {}).get("measured") or {}
                    for name in ("fast", "accurate")}
        lines = []
        for name in ("fast", "accurate"):
            m = measured[name]
            figures = (f": validation Dice {m['mean_dice']:.4f}, {m['seconds_per_case']:.1f} s a case"
                       if m.get("mean_dice") is not None else "")
            where = [w for w, used in (("CPU", modes.cpu_mode == name), ("GPU", name == "accurate")) if used]
            default = f" (default on {' and '.join(where)})" if where else ""
            lines.append(f"  mode {name:<8} {modes.plan(name).describe()}{figures}{default}")
        rule = self.card.confidence_rule
        by_mode = ", ".join(f"{mode} {rule.for_mode(mode).threshold:.4f}" for mode in ("fast", "accurate")
                            if rule.for_mode(mode).threshold is not None)
        lines.append("  review        " + (f"segments with confidence below the mode's threshold ({by_mode}) and empty "
                                            "segments are flagged 'needs review'" if by_mode else
                                            "empty segments are flagged 'needs review'"))
        return lines


def _this_step(config: dict) -> dict:
    """The current version's own training step, in the form of an ``earlier_training`` entry."""
    t = config.get("training") or {}
    val = (config.get("metrics") or {}).get("val") or {}
    return {"version": config.get("version"), "sha256": config.get("sha256"), "time": t.get("time"),
            "epochs": t.get("epochs_completed", t.get("epochs")), "iterations_per_epoch": t.get("iterations_per_epoch"),
            "batch_size": t.get("batch_size"), "patch_size": config.get("patch_size"),
            "target_spacing": config.get("target_spacing"), "val_mean_dice": val.get("mean_dice"),
            "val_cases": val.get("cases")}


def _describe_figures(metrics: dict, unit: str = "mm") -> list[str]:
    """The validation lines of the card: per-case Dice (with and without TTA) and the shift suite; HD95 in
    ``unit`` (mm, or px for photographs)."""
    lines = []
    for key in ("val", "val_tta"):
        m = metrics.get(key)
        if isinstance(m, dict) and m.get("mean_dice") is not None:
            per_class = ", ".join(f"{k} {v:.3f}" for k, v in (m.get("dice") or {}).items())
            hd = f", HD95 {m['mean_hd95_mm']:.1f} {unit}" if m.get("mean_hd95_mm") is not None else ""
            lines.append(f"  validation    Dice {m['mean_dice']:.3f} on {m.get('cases', '?')} cases "
                         f"({'with' if m.get('tta') else 'without'} flip TTA{hd})" + (f": {per_class}" if per_class else ""))
    suite = metrics.get("shift_suite")
    if isinstance(suite, dict) and suite.get("shifts"):
        shifts = ", ".join(f"{k} {v:.3f}" for k, v in suite["shifts"].items())
        lines.append(f"  shift suite   Dice {suite['shift_mean']:.3f} mean under site-like shifts ({shifts}; clean "
                     f"{suite['clean']:.3f}, {suite.get('cases', '?')} cases)")
    return lines


def _describe_step(step: dict) -> str:
    """One line for a step of ``training.earlier_training``: version, weights, budget, validation Dice."""
    def g(key, fmt="{}"):
        return fmt.format(step[key]) if step.get(key) is not None else "?"

    patch = "x".join(str(v) for v in step["patch_size"]) if step.get("patch_size") else "?"
    spacing = "x".join(f"{float(v):g}" for v in step["target_spacing"]) if step.get("target_spacing") else "?"
    return (f"{g('version'):8} {str(step.get('sha256') or '')[:8] or '-':8} {g('time')}: {g('epochs')} epochs x "
            f"{g('iterations_per_epoch')} steps x {g('batch_size')} crops {patch} at {spacing} mm; val mean Dice "
            f"{g('val_mean_dice', '{:.4f}')} ({g('val_cases')} cases)")


def _build_architecture(config: dict):
    name = config.get("architecture", "AttentionMamba")
    kwargs = config.get("architecture_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ValueError(
            f"Model '{config.get('id')}': 'architecture_kwargs' in model.json must be an object, got {kwargs!r}."
        )
    kwargs = dict(kwargs)
    if name in _ARCHITECTURES:
        factory = _ARCHITECTURES[name]
    elif name == "AttentionMamba":
        from .model import AttentionMamba as factory
    else:
        raise ValueError(
            f"Model '{config.get('id')}': unknown architecture {name!r}; this version knows "
            f"{['AttentionMamba', *sorted(_ARCHITECTURES)]}. Update AttentionMambaSeg."
        )
    try:
        return factory(config["in_channels"], config["num_classes"], **kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"Model '{config.get('id')}': cannot build the {name!r} network with architecture_kwargs "
            f"{kwargs}: {e}. Fix 'architecture_kwargs' in model.json."
        ) from e


def _is_path_like(text: str) -> bool:
    return os.sep in text or "/" in text or text.endswith(".zip") or Path(text).exists()


def load_model_package(id_or_path: str | os.PathLike) -> ModelPackage:
    """Find and load a model package by id or folder path.

    Ids are looked up among imported models first, then bundled ones. Weights are verified later,
    when the network is built.

    Args:
        id_or_path: a model id (``"cardiac-acdc"``) or a folder holding model.json.

    Returns:
        The :class:`ModelPackage`.

    Raises:
        FileNotFoundError: no such folder or id (the message lists the available ids).
        ValueError: invalid model.json, or a .zip path (import it first).
    """
    text = str(id_or_path)
    if isinstance(id_or_path, Path) or _is_path_like(text):
        path = Path(text)
        if path.suffix.lower() == ".zip":
            raise ValueError(
                f"{path} is a zip archive: import it first with `attention-mamba-seg models import {path}` "
                "(or import_model_package), then use its id."
            )
        if path.is_file():
            if path.name in (CONFIG_NAME, WEIGHTS_NAME) and (path.parent / CONFIG_NAME).is_file():
                logger.info("Using the model folder %s that holds %s", path.parent, path.name)
                return ModelPackage(path.parent)
            raise ValueError(
                f"{path} is a file, not a model folder: give the folder that holds {CONFIG_NAME} and "
                f"{WEIGHTS_NAME}."
            )
        if not path.is_dir():
            raise FileNotFoundError(f"Model folder {path} does not exist.")
        return ModelPackage(path)
    for root in (_imported_models_dir_if_known(), bundled_models_dir()):
        if root is None:
            continue
        candidate = root / text
        if (candidate / CONFIG_NAME).is_file():
            return ModelPackage(candidate)
    available = sorted({p.id for p in list_models()})
    raise FileNotFoundError(
        f"No model with id {text!r} is installed. Installed: {available or 'none'}. Registry models are "
        f"downloaded with `attention-mamba-seg models download ID` (in Slicer: press Segment); a package file is "
        "installed with `attention-mamba-seg models import PATH` (in Slicer: Import model...)."
    )


def list_models() -> list[ModelPackage]:
    """All bundled and imported models (an imported model hides a bundled one with the same id).

    Invalid folders are skipped with a warning. Sorted by id.
    """
    found: dict[str, ModelPackage] = {}
    for root in (bundled_models_dir(), _imported_models_dir_if_known()):
        if root is None or not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if not (folder / CONFIG_NAME).is_file():
                continue
            try:
                package = ModelPackage(folder)
            except (ValueError, OSError) as e:
                logger.warning("Skipping invalid model folder %s: %s", folder, e)
                continue
            found[package.id] = package
    return [found[k] for k in sorted(found)]


def save_model_package(network, config: dict, folder: str | os.PathLike) -> Path:
    """Write a model package: float16 model.safetensors + model.json with its SHA-256.

    The package is written to a temporary folder next to ``folder`` and renamed into place, so a
    crash never leaves a half-written package; an existing package in ``folder`` is replaced.

    Args:
        network: ``torch.nn.Module``; floating-point tensors of its state_dict are stored as float16.
        config: model.json fields (see the module docstring); ``sha256`` and ``weights_dtype`` are
            set here.
        folder: the package folder to create or replace.

    Returns:
        The package folder.

    Raises:
        ValueError: if ``config`` is invalid.
    """
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.is_dir() and not (folder / CONFIG_NAME).is_file() and any(folder.iterdir()):
        raise ValueError(
            f"Cannot save the model package to {folder}: the folder exists, is not empty and holds no "
            f"{CONFIG_NAME}, so it is not a model package and its contents would be lost. Choose a new folder "
            "(or an existing model package folder to replace it)."
        )
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"Cannot save the model package to {folder}: it is a file, not a folder. Choose a new folder.")
    cfg = validate_config({**config, "weights_dtype": "float16"}, source="config")
    cfg.pop("sha256", None)
    state = {}
    for name, tensor in network.state_dict().items():
        t = tensor.detach().to("cpu")
        t = t.to(torch.float16) if t.is_floating_point() else t.clone()
        state[name] = t.contiguous()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "model_id": cfg["id"]})
        _make_readable(tmp / WEIGHTS_NAME)
        cfg["sha256"] = sha256_of_file(tmp / WEIGHTS_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _swap_folder(tmp, folder)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        explained = explain_write_error(e, folder)  # a full disk names the package folder
        if explained is e:
            raise
        raise explained from e
    logger.info("Saved model package '%s' to %s", cfg["id"], folder)
    return folder


def _make_readable(path: Path) -> None:
    """Give a freshly written file the usual 0o644 permissions, less the umask (safetensors writes 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o644 & ~umask)


def _swap_folder(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``; an existing ``target`` is kept until the rename succeeded."""
    backup = None
    if target.exists():
        backup = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, backup)
    try:
        os.replace(new, target)
    except BaseException:
        if backup is not None:
            os.replace(backup, target)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


#: What a model package may hold, by file name or extension, with the largest size of each (bytes).
PACKAGE_MEMBER_LIMITS = {
    CONFIG_NAME: 1 << 20,            # model.json: 1 MiB
    WEIGHTS_NAME: 4 << 30,           # model.safetensors: 4 GiB
    ".md": 1 << 20, ".txt": 1 << 20,  # model card, readme, licence: 1 MiB each
    ".png": 8 << 20, ".jpg": 8 << 20, ".jpeg": 8 << 20, ".svg": 1 << 20,  # card figures: 8 MiB each
}
#: The largest total (uncompressed) size of a model package.
PACKAGE_TOTAL_LIMIT = (4 << 30) + (64 << 20)


def package_member_limit(name: str) -> int | None:
    """The largest size (bytes) a model package may hold under file ``name``, or None: not a package file."""
    base = Path(name).name
    if base in (CONFIG_NAME, WEIGHTS_NAME):
        return PACKAGE_MEMBER_LIMITS[base]
    return PACKAGE_MEMBER_LIMITS.get(Path(base).suffix.lower()) if base not in PACKAGE_MEMBER_LIMITS else None


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"


def _check_package_files(files: list[tuple[str, int]], where) -> None:
    """Refuse a package holding a file it may not hold, a file over its limit, or more than the total limit.

    Args:
        files: (name inside the package, size in bytes) of every file.
        where: the archive or folder, for the messages.

    Raises:
        ValueError: naming the file, its size and the limit.
    """
    allowed = "model.json, model.safetensors, .md/.txt (card, readme, licence), .png/.jpg/.svg (card figures)"
    total = 0
    for name, size in files:
        limit = package_member_limit(name)
        if limit is None:
            raise ValueError(f"Refusing to import {where}: it holds {name!r}, which a model package does not hold "
                             f"(a package holds {allowed}). Nothing was imported.")
        if size > limit:
            raise ValueError(f"Refusing to import {where}: {name!r} is {_mib(size)}, more than the {_mib(limit)} such a "
                             "file may be in a model package. Nothing was imported.")
        total += size
    if total > PACKAGE_TOTAL_LIMIT:
        raise ValueError(f"Refusing to import {where}: its files add up to {_mib(total)}, more than a model package "
                         f"may hold ({_mib(PACKAGE_TOTAL_LIMIT)}). Nothing was imported.")


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract a model package archive after checking every member; a member is never written past its declared size.

    Raises:
        ValueError: an unsafe member (a path outside the package, a link), a member a package does not
            hold, a member or total over the limits (:data:`PACKAGE_MEMBER_LIMITS`, a zip bomb), or a
            member that expands beyond its declared size.
    """
    with zipfile.ZipFile(archive) as z:
        members = z.infolist()
        for member in members:
            name = member.filename
            parts = Path(name).parts
            if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise ValueError(f"Refusing to import {archive}: unsafe member path {name!r}.")
            if stat.S_ISLNK(member.external_attr >> 16):
                raise ValueError(f"Refusing to import {archive}: member {name!r} is a symbolic link.")
        files = [m for m in members if not m.is_dir()]
        _check_package_files([(m.filename, m.file_size) for m in files], archive)
        for member in members:
            target = dest.joinpath(*Path(member.filename).parts)
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with z.open(member) as src, open(target, "xb") as out:
                    while True:
                        block = src.read(1 << 20)
                        if not block:
                            break
                        written += len(block)
                        if written > member.file_size:
                            raise ValueError(f"Refusing to import {archive}: {member.filename!r} expands beyond the "
                                             f"{member.file_size:,} bytes its header declares. Nothing was imported.")
                        out.write(block)
            except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # e.g. more data than declared: the CRC fails
                raise ValueError(f"Refusing to import {archive}: member {member.filename!r} is damaged or holds other "
                                 f"data than its header declares ({e}). Nothing was imported.") from e


def _find_package_root(folder: Path) -> Path:
    if (folder / CONFIG_NAME).is_file():
        return folder
    candidates = [p.parent for p in folder.glob(f"*/{CONFIG_NAME}") if not p.parent.is_symlink()]
    if len(candidates) == 1:
        return candidates[0]
    raise ValueError(
        f"Expected {CONFIG_NAME} and {WEIGHTS_NAME} at the top of the package or in exactly one "
        f"sub-folder, found {len(candidates)} candidate folders."
    )


ImportProgress = Callable[[int, int], None]
#: Steps of an import reported to ``progress``: unpacked, weights verified, copied, weights checked against the network.
IMPORT_STEPS = 4


def import_model_package(folder_or_zip: str | os.PathLike, expected_id: str | None = None,
                         progress: ImportProgress | None = None) -> ModelPackage:
    """Verify a model package (folder or .zip) and copy it into the per-user model cache.

    The SHA-256 is checked before anything is copied; a previously imported version with the same id
    is kept until the new copy is in place.

    Args:
        folder_or_zip: package folder, or a zip archive holding one.
        expected_id: refuse a package with another id (a download must hold the model it was fetched for).
        progress: ``progress(done_steps, IMPORT_STEPS)`` after each step (unpacked, verified, copied, checked).

    Returns:
        The imported package (in :func:`imported_models_dir`).

    Raises:
        FileNotFoundError: if the path does not exist or lacks model.json / model.safetensors.
        ModelIntegrityError: if the weights do not match model.json's SHA-256.
        ValueError: invalid model.json, weights that do not fit its network, a symbolic link for
            model.json or the weights, or an unsafe archive (paths outside the package, links).
    """
    source = Path(folder_or_zip)
    if not source.exists():
        raise FileNotFoundError(f"Model package {source} does not exist.")
    cache = imported_models_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".import-") as tmp:
        tmp = Path(tmp)
        try:
            if source.is_file():
                if not zipfile.is_zipfile(source):
                    raise ValueError(f"{source} is neither a model folder nor a zip archive (or the zip is damaged).")
                _safe_extract(source, tmp / "unzipped")
                root = _find_package_root(tmp / "unzipped")
            else:
                root = _find_package_root(source)
            if progress is not None:
                progress(1, IMPORT_STEPS)
            try:
                package, target = _stage_and_swap(root, tmp, cache, expected_id, source, progress)
            except OSError as e:  # a full disk names the model's folder in the cache
                explained = explain_write_error(e, cache / (expected_id or root.name))
                if explained is e:
                    raise
                raise explained from e
        except (ValueError, OSError) as e:
            if source.is_file():  # name the archive, not the temporary folder it was unpacked into
                raise type(e)(str(e).replace(str(tmp / "unzipped"), f"{source} (archive)")) from e
            raise
    if (bundled_models_dir() / package.id).is_dir():
        logger.info("Imported model '%s' overrides the bundled model with the same id.", package.id)
    logger.info("Imported model '%s' (version %s) into %s", package.id, package.version, target)
    return ModelPackage(target)


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def imported_models_size() -> int:
    """Bytes the imported-models cache holds (what :func:`remove_imported_models` would free)."""
    cache = _imported_models_dir_if_known()
    return _folder_size(cache) if cache is not None and cache.is_dir() else 0


def _stage_and_swap(root: Path, tmp: Path, cache: Path, expected_id: str | None, source: Path,
                    progress: ImportProgress | None = None):
    """Copy a verified package into ``tmp/staged``, check its weights fit, then swap it into the cache."""
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if (root / name).is_symlink():
            raise ValueError(f"Refusing to import {root}: {name} is a symbolic link; give the file itself.")
    extras = [p for p in root.iterdir() if p.name not in (CONFIG_NAME, WEIGHTS_NAME) and p.is_file()
              and not p.is_symlink() and package_member_limit(p.name) is not None]
    _check_package_files([(p.name, p.stat().st_size) for p in (root / CONFIG_NAME, root / WEIGHTS_NAME, *extras)
                          if p.is_file()], source)
    package = ModelPackage(root)
    if expected_id is not None and package.id != expected_id:
        raise ValueError(f"{source} holds model '{package.id}', not '{expected_id}': nothing was imported.")
    package.verify()
    if progress is not None:
        progress(2, IMPORT_STEPS)
    staged = tmp / "staged"
    staged.mkdir()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copy2(root / name, staged / name)
    for extra in root.iterdir():  # model card, readme, licence, card figures
        if extra.is_symlink():
            logger.warning("Not importing %s: it is a symbolic link (links are never followed).", extra)
        elif extra in extras:
            shutil.copy2(extra, staged / extra.name)
    staged_package = ModelPackage(staged)
    staged_package.verify()  # the copy itself
    if progress is not None:
        progress(3, IMPORT_STEPS)
    staged_package.check_weights_fit()  # before the swap: a bad package never replaces a good one
    if progress is not None:
        progress(4, IMPORT_STEPS)
    target = cache / package.id
    _swap_folder(staged, target)
    return package, target


def remove_imported_model(model_id: str) -> int:
    """Delete one imported (or downloaded) model from the cache; bundled models are never touched.

    Returns:
        The bytes freed.

    Raises:
        FileNotFoundError: no imported model has this id (the message lists those that do).
        ValueError: ``model_id`` is not a valid model id.
    """
    if not isinstance(model_id, str) or not ID_PATTERN.fullmatch(model_id):
        raise ValueError(f"{model_id!r} is not a model id (letters, digits, '.', '_' or '-').")
    cache = imported_models_dir()
    folder = cache / model_id
    if folder.is_symlink() or not (folder / CONFIG_NAME).is_file():
        present = sorted(p.name for p in cache.iterdir() if (p / CONFIG_NAME).is_file()) if cache.is_dir() else []
        raise FileNotFoundError(f"No imported model {model_id!r} in {cache} (imported: {present or 'none'}); "
                                "bundled models cannot be removed.")
    freed = _folder_size(folder)
    shutil.rmtree(folder)
    logger.debug("Removed imported model '%s' from %s (%.1f MB)", model_id, cache, freed / 1e6)
    return freed


def remove_imported_models() -> list[str]:
    """Delete every imported model package from the per-user cache.

    Only folders holding a model.json (model packages) are deleted, plus leftovers of this module's own
    interrupted imports (hidden ``.import-*`` / ``.<id>.old-*`` / ``.<id>.tmp-*`` folders); anything
    else in the cache folder is left in place and reported with a warning.

    Returns:
        The ids (folder names) removed.
    """
    cache = imported_models_dir()
    removed, kept = [], []
    if cache.is_dir():
        for folder in sorted(cache.iterdir()):
            if folder.is_dir() and not folder.is_symlink() and (folder / CONFIG_NAME).is_file():
                shutil.rmtree(folder)
                if not folder.name.startswith("."):
                    removed.append(folder.name)
            elif folder.is_dir() and not folder.is_symlink() and _LEFTOVER_PATTERN.match(folder.name):
                shutil.rmtree(folder, ignore_errors=True)
            else:
                kept.append(folder.name)
    logger.info("Removed %d imported model(s) from %s", len(removed), cache)
    if kept:
        logger.warning(
            "Left %d item(s) in %s that are not model packages (no %s): %s", len(kept), cache, CONFIG_NAME,
            ", ".join(kept),
        )
    return removed
