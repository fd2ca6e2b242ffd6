"""How far to trust each segment: a confidence figure per segment and a "needs review" flag.

The confidence of a segment is the mean, over the pixels the model labels with it, of the largest
class probability there (softmax: the maximum over classes; sigmoid: the probability itself), on
the model's slice grid before post-processing. A segment whose confidence is below model.json
``confidence.by_mode[mode]`` (else ``confidence.threshold``; calibrated per speed mode on the
validation split by ``tools/measure_inference.py --write-card`` so that the flag marks the cases with
poor Dice; ``docs/INFERENCE.md``) or that is empty is flagged "needs review".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..model_card import _is_number

__all__ = ["ConfidenceTally", "ConfidenceRule", "SegmentReport", "Segmentation", "REPORT_SUFFIX"]

#: The JSON report written beside an output file: ``case.seg.nrrd`` -> ``case.report.json``.
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
    """model.json ``confidence``: the threshold below which a segment needs review (None: not calibrated),
    and the thresholds calibrated for each speed mode (``by_mode``)."""

    threshold: float | None = None
    measure: str = "mean_max_probability"
    by_mode: tuple = ()

    @classmethod
    def from_dict(cls, raw: dict | None, source: str = "model.json") -> "ConfidenceRule":
        """Raises ValueError naming ``source`` and the field."""
        if not raw:
            return cls()
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: field 'confidence' must be an object such as {{\"threshold\": 0.9}}, "
                             f"got {raw!r}.")
        threshold = _threshold(raw.get("threshold"), source, "confidence.threshold")
        measure = raw.get("measure", "mean_max_probability")
        if measure != "mean_max_probability":
            raise ValueError(f"{source}: field 'confidence.measure' must be 'mean_max_probability', got {measure!r}.")
        by_mode = raw.get("by_mode") or {}
        if not isinstance(by_mode, dict):
            raise ValueError(f"{source}: field 'confidence.by_mode' must be an object (mode -> threshold), got {by_mode!r}.")
        modes = tuple((str(k), _threshold(v, source, f"confidence.by_mode.{k}")) for k, v in by_mode.items())
        return cls(threshold, measure, modes)

    def for_mode(self, mode: str) -> "ConfidenceRule":
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
    if not _is_number(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"{source}: field '{field}' must be a number in (0, 1], got {value!r}.")
    return float(value)


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

    def size(self, dimension: int, pixels: bool = False) -> tuple[str, float]:
        """``(unit, value)``: ``("volume_ml", mL)`` in 3D, ``("area_mm2", mm2)`` in 2D, ``("area_px", pixels)``
        for an image without a physical pixel size (a photograph:
        :func:`~AttentionMambaSegLib.images.has_physical_spacing`)."""
        if pixels:
            return "area_px" if dimension == 2 else "volume_voxels", float(self.voxels)
        if dimension == 3:
            return "volume_ml", self.size_mm / 1000.0
        return "area_mm2", self.size_mm

    def size_text(self, labels) -> str:
        """The size for the log: "12.3 mL", "456 mm2" or "7890 px" (``labels``: the result's SimpleITK labelmap)."""
        from ..images import has_physical_spacing

        unit, value = self.size(labels.GetDimension(), not has_physical_spacing(labels))
        return {"volume_ml": f"{value:.1f} mL", "area_mm2": f"{value:.0f} mm2"}.get(unit, f"{value:.0f} px")

    def to_dict(self, dimension: int, pixels: bool = False) -> dict:
        """The report entry; the size under the key of :meth:`size` (``volume_ml``, ``area_mm2`` or ``area_px``)."""
        unit, size = self.size(dimension, pixels)
        size = int(size) if pixels else round(size, 3)
        return {"label_value": self.label_value, "name": self.name, "voxels": self.voxels, unit: size,
                "confidence": None if self.confidence is None else round(self.confidence, 4),
                "needs_review": self.needs_review, "reason": self.review_reason}


@dataclass(frozen=True)
class Segmentation:
    """A prediction: the labelmap and what to tell the reader about it.

    ``labels``: uint8 SimpleITK image on the input's grid. ``segments``: one
    :class:`SegmentReport` per foreground class of the model. ``warnings``: sentences about the
    input or the result (an unusual photo, an input far outside what the model was trained on, a
    segment that fills the image). ``timing``: the measured and the estimated seconds
    (:meth:`~.timing.RunTimer.record`), empty when not timed.
    """

    labels: object
    model: str
    version: str
    mode: str
    passes: str
    threshold: float | None
    segments: tuple = ()
    warnings: tuple = field(default_factory=tuple)
    timing: dict = field(default_factory=dict)

    @property
    def needs_review(self) -> list:
        """The segments flagged for review."""
        return [s for s in self.segments if s.needs_review]

    def report(self) -> dict:
        """The JSON report (see ``docs/CONTRACTS.md``)."""
        from ..images import has_physical_spacing

        dimension = self.labels.GetDimension()
        pixels = not has_physical_spacing(self.labels)
        return {"model": self.model, "version": self.version, "mode": self.mode, "passes": self.passes,
                "confidence_measure": "mean_max_probability", "confidence_threshold": self.threshold,
                "segments": [s.to_dict(dimension, pixels) for s in self.segments], "warnings": list(self.warnings),
                **({"time": dict(self.timing)} if self.timing else {})}


def segment_reports(labels, classes, confidence: dict, rule: ConfidenceRule) -> tuple:
    """:class:`SegmentReport` of each foreground class of a uint8 labelmap image."""
    import SimpleITK as sitk

    array = sitk.GetArrayViewFromImage(labels)
    counts = np.bincount(array.ravel(), minlength=256)
    voxel = float(np.prod(labels.GetSpacing()))
    out = []
    for entry in classes:
        k = entry.label_value
        value = confidence.get(k) if counts[k] else None  # None also where only resampling made the label
        out.append(SegmentReport(k, entry.name, int(counts[k]), float(counts[k]) * voxel, value,
                                 rule.review_reason(value, int(counts[k]))))
    return tuple(out)
