"""How far to trust each segment: model.json ``confidence``, the threshold of the "needs review" flag.

The confidence of a segment is the mean, over the pixels the model labels with it, of the largest
class probability there (see :mod:`AttentionMambaSegLib.inference.result`). A segment whose confidence
is below ``confidence.by_mode[mode]`` (else ``confidence.threshold``; calibrated per speed mode on the
validation split by ``tools/measure_inference.py --write-card`` so that the flag marks the cases with
poor Dice; ``docs/INFERENCE.md``) or that is empty is flagged "needs review".
"""

from __future__ import annotations

from dataclasses import dataclass

from .numbers import is_number

__all__ = ["ConfidenceRule"]


@dataclass(frozen=True)
class ConfidenceRule:
    """model.json ``confidence``: the threshold below which a segment needs review (None: not calibrated),
    and the thresholds calibrated for each speed mode (``by_mode``)."""

    threshold: float | None = None
    measure: str = "mean_max_probability"
    by_mode: tuple = ()

    @classmethod
    def from_dict(cls, raw: dict | None, source: str = "model.json") -> ConfidenceRule:
        """Raises ValueError naming ``source`` and the field."""
        if not raw:
            return cls()
        if not isinstance(raw, dict):
            raise ValueError(
                f"{source}: field 'confidence' must be an object such as {{\"threshold\": 0.9}}, got {raw!r}."
            )
        threshold = _threshold(raw.get("threshold"), source, "confidence.threshold")
        measure = raw.get("measure", "mean_max_probability")
        if measure != "mean_max_probability":
            raise ValueError(f"{source}: field 'confidence.measure' must be 'mean_max_probability', got {measure!r}.")
        by_mode = raw.get("by_mode") or {}
        if not isinstance(by_mode, dict):
            raise ValueError(
                f"{source}: field 'confidence.by_mode' must be an object (mode -> threshold), got {by_mode!r}."
            )
        modes = tuple((str(k), _threshold(v, source, f"confidence.by_mode.{k}")) for k, v in by_mode.items())
        return cls(threshold, measure, modes)

    def for_mode(self, mode: str) -> ConfidenceRule:
        """The rule with the threshold calibrated for ``mode`` (this one's where none was)."""
        threshold = dict(self.by_mode).get(mode, self.threshold)
        return ConfidenceRule(threshold, self.measure, self.by_mode)

    def review_reason(self, confidence: float | None, voxels: int = 1) -> str | None:
        """Why a segment with this confidence and size needs review, or None."""
        if voxels == 0:
            return "not found"
        if confidence is not None and self.threshold is not None and confidence < self.threshold:
            return f"low confidence ({confidence:.4f} < {self.threshold:.4f})"
        return None


def _threshold(value, source: str, field: str) -> float | None:
    if value is None:
        return None
    if not is_number(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"{source}: field '{field}' must be a number in (0, 1], got {value!r}.")
    return float(value)
