"""Model packages: a folder with ``model.json`` (what the model is) and ``model.safetensors`` (weights).

A package describes itself, as an nnU-Net results folder does, so inference needs nothing else: the
classes (names, colours, label values, SNOMED CT terminology), the normalisation, the orientation
and spacing the slices were trained at, the patch size, training provenance and metrics.

Safety: weights are stored as float16 safetensors (never a pickle, so a downloaded model cannot run
code), and the file's SHA-256 recorded in model.json is checked before any weight is loaded and before
a package is imported. Bundled models live in ``AttentionMambaSeg/Resources/Models/<id>/``; imported
models in a per-user cache (:mod:`.model_store`: import, removal, the cache folder). Listing models needs
neither platformdirs nor torch: bundled models are always listed. An imported model with the id of a
bundled one takes precedence.

model.json's fields and their checks: :mod:`.card`; a package's settings are read from
:attr:`ModelPackage.card` only.

Label values: network output channel k is label value k (softmax); a sigmoid model writes label 1.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .card import ModelCard, description
from .outputs import explain_write_error

logger = logging.getLogger(__name__)

__all__ = [
    "ModelIntegrityError",
    "ModelPackage",
    "build_architecture",
    "bundled_models_dir",
    "list_models",
    "load_model_package",
    "register_architecture",
    "save_model_package",
    "sha256_of_file",
    "swap_folder",
    "validate_config",
]

CONFIG_NAME = "model.json"
WEIGHTS_NAME = "model.safetensors"
_ARCHITECTURES: dict[str, Callable[..., Any]] = {}


class ModelIntegrityError(ValueError):
    """The weights file does not match the SHA-256 recorded in model.json (corrupted or tampered)."""


def bundled_models_dir() -> Path:
    """Folder of the models shipped with the extension: ``AttentionMambaSeg/Resources/Models``."""
    return Path(__file__).resolve().parent.parent / "Resources" / "Models"


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
    """Check a model.json dict and fill in defaults (:meth:`~.card.ModelCard.from_dict`).

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
        card: model.json as a :class:`~AttentionMambaSegLib.card.ModelCard`, defaults filled in: the one
            place a package's settings are read from.
        id, version, in_channels, num_classes, classes: read-only views of the card (below; the classes as
            ``ClassEntry`` objects are ``card.foreground_classes``).

    Example:
        >>> package = load_model_package("cardiac-acdc")  # doctest: +SKIP
        >>> network = package.build_network("cpu")        # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, config: dict | None = None):
        """Read and check the model.json of the package in ``path`` (or the model.json object ``config``).

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
        self.card: ModelCard = ModelCard.from_dict(config, source)

    @property
    def id(self) -> str:
        """The model id (model.json ``id``, the folder name of an imported model)."""
        return self.card.id

    @property
    def version(self) -> str:
        """The model version (model.json ``version``, as text)."""
        return self.card.version

    @property
    def in_channels(self) -> int:
        """C, image components the network expects (1 grey, 3 RGB)."""
        return self.card.in_channels

    @property
    def num_classes(self) -> int:
        """K, network output channels (incl. background for softmax; 1 for sigmoid)."""
        return self.card.num_classes

    @property
    def classes(self) -> list[dict]:
        """Foreground classes (label_value >= 1) as model.json objects ``{label_value, name, color, ...}``."""
        return [c.to_dict() for c in self.card.foreground_classes]

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
        expected = self.card.sha256
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
                name=e.name,
            ) from e

        with torch.device("meta"):
            reference = build_architecture(self.card).state_dict()
        try:
            with safe_open(str(self.weights_path), framework="pt") as f:
                stored = {
                    name: (tuple(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype()) for name in f.keys()
                }
        except Exception as e:  # safetensors raises its own error types for a malformed header
            raise ValueError(
                f"Model '{self.id}': {self.weights_path} is not a readable safetensors file ({type(e).__name__}: {e})."
            ) from e
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
            raise ValueError(
                f"Model '{self.id}': the weights do not fit the '{self.card.architecture}' "
                f"network of model.json ({len(problems)} problems: {'; '.join(problems[:5])})."
            )

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
        network = build_architecture(self.card)
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
                f"'{self.card.architecture}' network described by model.json: {e}"
            ) from e
        network = network.to(torch.device(device) if isinstance(device, str) else device)
        network.eval()
        return network

    @property
    def licence(self) -> str:
        """The licence of the weights, as model.json states it ("" when it states none)."""
        return description.licence_text(self.card)

    @property
    def licence_needs_acceptance(self) -> bool:
        """True unless the licence is a known permissive one (a model without a licence statement needs it too).

        Non-commercial (``NC``) and research-only licences, and unknown ones, must be accepted by the user
        before the model is used.
        """
        text = self.licence.lower()
        if (
            not text
            or "nc" in re.findall(r"[a-z]+", text)
            or any(word in text for word in ("non-commercial", "noncommercial", "not be used commercially", "research"))
        ):
            return True
        return not any(word in text for word in ("cc by", "cc0", "apache", "mit", "bsd"))

    def validation_dice(self) -> tuple[float | None, bool]:
        """(mean validation Dice, with flip TTA) from model.json metrics: the TTA figure where recorded."""
        return description.validation_dice(self.card)

    def summary(self) -> str:
        """A few lines for a model chooser: licence, validation Dice, the shift suite, what it was not
        validated on (the card's ``limits``)."""
        return description.summary(self.card)

    def describe(self) -> str:
        """The model card, short and human-readable (``models info``; the Slicer panel's details).

        Task, classes, licence, the data it was trained and validated on and its limits, validation
        figures (clean and, where measured, under the shift suite and on external data), and how it
        was trained, one line per step. ``models info --json`` prints the raw model.json instead.
        """
        return description.describe(self.card, self.weights_path)


def build_architecture(card: ModelCard):
    """The untrained network a card describes (``architecture``, ``architecture_kwargs``), on torch's default device.

    Raises:
        ValueError: an architecture this version does not know, or keyword arguments it does not take.
    """
    name = card.architecture
    kwargs = dict(card.architecture_kwargs)
    if name in _ARCHITECTURES:
        factory = _ARCHITECTURES[name]
    elif name == "AttentionMamba":
        from .model import AttentionMamba as factory
    else:
        raise ValueError(
            f"Model '{card.id}': unknown architecture {name!r}; this version knows "
            f"{['AttentionMamba', *sorted(_ARCHITECTURES)]}. Update AttentionMambaSeg."
        )
    try:
        return factory(card.in_channels, card.num_classes, **kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"Model '{card.id}': cannot build the {name!r} network with architecture_kwargs "
            f"{kwargs}: {e}. Fix 'architecture_kwargs' in model.json."
        ) from e


def _is_path_like(text: str) -> bool:
    return os.sep in text or "/" in text or text.endswith(".zip") or Path(text).exists()


def load_model_package(model: str | os.PathLike | ModelPackage) -> ModelPackage:
    """Find and load a model package by id or path; a :class:`ModelPackage` is returned as it is.

    This is the one conversion of "a model" into a package: every function that takes a ``model`` argument
    calls it. An object that is not a path but has a ``card`` (a package-like stand-in) is returned as it is.

    Ids are looked up among imported models first, then bundled ones. Weights are verified later,
    when the network is built.

    Args:
        model: a model id (``"cardiac-acdc"``), a folder holding model.json, the path of its model.json or
            model.safetensors, or a :class:`ModelPackage`.

    Returns:
        The :class:`ModelPackage`.

    Raises:
        FileNotFoundError: no such folder or id (the message lists the available ids).
        ValueError: invalid model.json, or a .zip path (import it first).
        TypeError: ``model`` is neither a path, an id nor a package.
    """
    if isinstance(model, ModelPackage):
        return model
    if not isinstance(model, (str, os.PathLike)):
        if hasattr(model, "card"):
            return model
        raise TypeError(f"A model is a model id, a model folder or a ModelPackage; got {type(model).__name__}.")
    from .model_store import imported_models_dir_if_known  # the store builds on this module: imported here

    text = str(model)
    if isinstance(model, Path) or _is_path_like(text):
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
                f"{path} is a file, not a model folder: give the folder that holds {CONFIG_NAME} and {WEIGHTS_NAME}."
            )
        if not path.is_dir():
            raise FileNotFoundError(f"Model folder {path} does not exist.")
        return ModelPackage(path)
    for root in (imported_models_dir_if_known(), bundled_models_dir()):
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
    from .model_store import imported_models_dir_if_known  # the store builds on this module: imported here

    found: dict[str, ModelPackage] = {}
    for root in (bundled_models_dir(), imported_models_dir_if_known()):
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
        swap_folder(tmp, folder)
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


def swap_folder(new: Path, target: Path) -> None:
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
