"""Training checkpoints: written atomically, read with ``torch.load(weights_only=True)`` (plain types only)."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import torch

__all__ = ["load_checkpoint", "save_checkpoint", "rng_state", "set_rng_state", "CHECKPOINT_LATEST", "CHECKPOINT_BEST"]

logger = logging.getLogger(__name__)

CHECKPOINT_LATEST = "checkpoint_latest.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"


def rng_state() -> dict:
    state: dict[str, torch.Tensor | list[torch.Tensor]] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(obj):
    """``obj`` with numpy scalars/arrays, paths and sets turned into types ``torch.load(weights_only=True)`` accepts."""
    if type(obj) is dict:  # state_dicts (OrderedDict, with _metadata) are kept as they are
        return {_plain(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, (set, frozenset)):
        return [_plain(v) for v in sorted(obj, key=repr)]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def save_checkpoint(obj, path: Path) -> None:
    """Write ``obj`` (plain types and tensors) to ``path`` through a temporary file: never a partial file."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(_plain(obj), tmp)
    os.replace(tmp, path)


def _unpickle_reason(error: BaseException) -> str:
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(error).__name__


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a training checkpoint safely (``torch.load(weights_only=True)``: tensors and plain types only).

    Raises:
        ValueError: the file is empty, truncated or not a checkpoint (the message names it).
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(
            f"checkpoint {path} is empty (0 bytes), probably from an interrupted copy; delete it and "
            "start again without --resume, or restore it from a backup"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"checkpoint {path} ({size} bytes) is corrupt or not a checkpoint of this program "
            f"({_unpickle_reason(e)}); delete it and start again without --resume, or restore "
            "it from a backup"
        ) from e
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError, OSError) as e:
        raise ValueError(
            f"checkpoint {path} ({size} bytes) is corrupt or truncated ({_unpickle_reason(e)}); "
            "delete it and start again without --resume, or restore it from a backup"
        ) from e
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"{path} is not a training checkpoint of this program (no 'model' entry)")
    return checkpoint
