"""The result of a prediction: the labelmap, a confidence figure and a "needs review" flag per segment.

The confidence of a segment is the mean, over the pixels the model labels with it, of the largest
class probability there (softmax: the maximum over classes; sigmoid: the probability itself), on
the model's slice grid before post-processing (:class:`ConfidenceTally`). A segment whose confidence is
below the threshold of the model's :class:`~AttentionMambaSegLib.card.ConfidenceRule` (model.json
``confidence``) or that is empty is flagged "needs review" (:func:`segment_reports`); the
:class:`Segmentation` holds the labels, the segments and the warnings, and writes the JSON report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..card.confidence_rule import ConfidenceRule

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = ["ConfidenceTally", "SegmentReport", "Segmentation", "segment_reports", "REPORT_SUFFIX"]

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
        return {
            "label_value": self.label_value,
            "name": self.name,
            "voxels": self.voxels,
            unit: size,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "needs_review": self.needs_review,
            "reason": self.review_reason,
        }


@dataclass(frozen=True)
class Segmentation:
    """A prediction: the labelmap and what to tell the reader about it.

    ``labels``: uint8 SimpleITK image on the input's grid. ``segments``: one
    :class:`SegmentReport` per foreground class of the model. ``warnings``: sentences about the
    input or the result (an unusual photo, an input far outside what the model was trained on, a
    segment that fills the image). ``timing``: the measured and the estimated seconds
    (:meth:`~.timing.RunTimer.record`), empty when not timed.
    """

    labels: sitk.Image
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
        return {
            "model": self.model,
            "version": self.version,
            "mode": self.mode,
            "passes": self.passes,
            "confidence_measure": "mean_max_probability",
            "confidence_threshold": self.threshold,
            "segments": [s.to_dict(dimension, pixels) for s in self.segments],
            "warnings": list(self.warnings),
            **({"time": dict(self.timing)} if self.timing else {}),
        }


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
        out.append(
            SegmentReport(
                k,
                entry.name,
                int(counts[k]),
                float(counts[k]) * voxel,
                value,
                rule.review_reason(value, int(counts[k])),
            )
        )
    return tuple(out)
