"""The value checks model.json's fields share: finite numbers, integers and patch sizes."""

from __future__ import annotations

import math
from typing import Any, TypeGuard

__all__ = ["is_int", "is_number", "is_patch_size"]


def is_number(value: Any) -> TypeGuard[int | float]:
    """True for a finite int or float (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> TypeGuard[int]:
    """True for an int (a bool is not an integer here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_patch_size(value) -> bool:
    """True for an (H, W) list or tuple of positive integer multiples of 32 (the network's stride)."""
    return (
        isinstance(value, (list, tuple)) and len(value) == 2 and all(is_int(p) and p > 0 and p % 32 == 0 for p in value)
    )
