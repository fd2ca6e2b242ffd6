"""How far to trust each segment: a confidence figure per segment and a "needs review" flag.

The confidence of a segment is the mean, over the pixels the model labels with it, of the largest
class probability there (softmax: the maximum over classes; sigmoid: the probability itself), on
the model's slice grid before post-processing. A segment whose confidence is below model.json
``confidence.threshold`` (calibrated on the validation split by ``tools/calibrate_confidence.py`` so
that the flag marks the cases with poor Dice; ``docs/INFERENCE.md``) or that is empty is flagged
"needs review".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ConfidenceTally", "ConfidenceRule", "SegmentReport", "Segmentation", "REPORT_SUFFIX"]

#: The JSON report written beside an output file: ``case.seg.nrrd`` -> ``case.seg.report.json``.
REPORT_SUFFIX = ".report.json"


class ConfidenceTally:
    """Sums of the largest class probability per predicted label, batch by batch.

    Args:
        num_classes: K of the model (1 for a sigmoid model).
        activation: ``"softmax"`` or ``"sigmoid"``.
    """

    def __init__(self, num_classes: int, activation: str):
        self.sigmoid = activation == "sigmoid"
        self.size = 2 if self.sigmoid else int(num_classes)
        self.sums = np.zeros(self.size, dtype=np.float64)
        self.counts = np.zeros(self.size, dtype=np.int64)

    def add(self, probabilities: np.ndarray) -> None:
        """Count float32 (B, K, H, W) probabilities (K = 1 for sigmoid)."""
        if self.sigmoid:
            p = probabilities[:, 0]
            label = (p > 0.5).astype(np.int64)
            top = np.where(label == 1, p, 1.0 - p)
        else:
            label = probabilities.argmax(axis=1)
            top = probabilities.max(axis=1)
        self.sums += np.bincount(label.ravel(), weights=top.ravel(), minlength=self.size)[: self.size]
        self.counts += np.bincount(label.ravel(), minlength=self.size)[: self.size]

    def confidence(self) -> dict[int, float | None]:
        """Label value (>= 1) -> mean largest probability in [0, 1], or None for an empty segment."""
        return {k: (float(self.sums[k] / self.counts[k]) if self.counts[k] else None) for k in range(1, self.size)}


@dataclass(frozen=True)
class ConfidenceRule:
    """model.json ``confidence``: the threshold below which a segment needs review (None: not calibrated)."""

    threshold: float | None = None
    measure: str = "mean_max_probability"

    @classmethod
    def from_dict(cls, raw: dict | None, source: str = "model.json") -> "ConfidenceRule":
        """Raises ValueError naming ``source`` and the field."""
        if not raw:
            return cls()
        threshold = raw.get("threshold") if isinstance(raw, dict) else raw
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not math.isfinite(threshold) or not 0.0 < threshold <= 1.0):
            raise ValueError(f"{source}: field 'confidence.threshold' must be a number in (0, 1], got {threshold!r}.")
        measure = raw.get("measure", "mean_max_probability")
        if measure != "mean_max_probability":
            raise ValueError(f"{source}: field 'confidence.measure' must be 'mean_max_probability', got {measure!r}.")
        return cls(None if threshold is None else float(threshold), measure)

    def review_reason(self, confidence: float | None) -> str | None:
        """Why a segment with this confidence needs review, or None."""
        if confidence is None:
            return "not found"
        if self.threshold is not None and confidence < self.threshold:
            return f"low confidence ({confidence:.3f} < {self.threshold:.3f})"
        return None


@dataclass(frozen=True)
class SegmentReport:
    """One segment of a result: label value, name, size, confidence and the review flag."""

    label_value: int
    name: str
    voxels: int
    size_mm: float  # volume in mm^3 (3D) or area in mm^2 (2D)
    confidence: float | None
    review_reason: str | None

    @property
    def needs_review(self) -> bool:
        return self.review_reason is not None

    def to_dict(self, dimension: int) -> dict:
        unit = "volume_ml" if dimension == 3 else "area_mm2"
        size = self.size_mm / 1000.0 if dimension == 3 else self.size_mm
        return {"label_value": self.label_value, "name": self.name, "voxels": self.voxels, unit: round(size, 3),
                "confidence": None if self.confidence is None else round(self.confidence, 4),
                "needs_review": self.needs_review, "reason": self.review_reason}


@dataclass(frozen=True)
class Segmentation:
    """A prediction: the labelmap and what to tell the reader about it.

    ``labels``: uint8 SimpleITK image on the input's grid. ``segments``: one
    :class:`SegmentReport` per foreground class of the model. ``warnings``: sentences about the
    input or the result (an unusual photo, a segment that fills the image).
    """

    labels: object
    model: str
    version: str
    mode: str
    passes: str
    threshold: float | None
    segments: tuple = ()
    warnings: tuple = field(default_factory=tuple)

    @property
    def needs_review(self) -> list:
        """The segments flagged for review."""
        return [s for s in self.segments if s.needs_review]

    def report(self) -> dict:
        """The JSON report (see ``docs/CONTRACTS.md``)."""
        dimension = self.labels.GetDimension()
        return {"model": self.model, "version": self.version, "mode": self.mode, "passes": self.passes,
                "confidence_measure": "mean_max_probability", "confidence_threshold": self.threshold,
                "segments": [s.to_dict(dimension) for s in self.segments], "warnings": list(self.warnings)}


def segment_reports(labels, classes, confidence: dict, rule: ConfidenceRule) -> tuple:
    """:class:`SegmentReport` of each foreground class of a uint8 labelmap image."""
    import SimpleITK as sitk

    array = sitk.GetArrayViewFromImage(labels)
    counts = np.bincount(array.ravel(), minlength=256)
    voxel = float(np.prod(labels.GetSpacing()))
    out = []
    for entry in classes:
        k = entry.label_value
        value = confidence.get(k) if counts[k] else None
        out.append(SegmentReport(k, entry.name, int(counts[k]), float(counts[k]) * voxel, value,
                                 rule.review_reason(value)))
    return tuple(out)
