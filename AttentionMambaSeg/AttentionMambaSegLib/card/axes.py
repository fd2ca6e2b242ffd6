"""Orientation codes of model.json (``axes_code``): three letters, one of each pair L/R, P/A, S/I."""

from __future__ import annotations

__all__ = ["AXIS_PAIRS", "validate_axes_code"]

#: The letter pairs of an orientation code; each position takes one letter of each pair.
AXIS_PAIRS = ({"L", "R"}, {"P", "A"}, {"S", "I"})


def validate_axes_code(axes_code: str) -> str:
    """Check a three-letter orientation code such as ``"LPS"`` or ``"RAS"``.

    Args:
        axes_code: one letter from each of the pairs L/R, P/A, S/I, in any order (upper or lower case).
            The letter of each position names the direction in which that index axis increases
            (ITK/DICOM convention: ``"LPS"`` = i towards the patient's left, j posterior, k superior).

    Returns:
        The code in upper case.

    Raises:
        ValueError: if the code is not three letters with one from each pair.
    """
    code = str(axes_code).upper()
    if len(code) != 3 or any(sum(c in pair for c in code) != 1 for pair in AXIS_PAIRS):
        raise ValueError(
            f"Invalid axes code {axes_code!r}: expected three letters with one from each of L/R, P/A "
            "and S/I (for example 'LPS' or 'RAS'). Fix 'axes_code' in model.json."
        )
    return code
