"""How to run a model: one frozen object that the CLI, the file runner, evaluation and Slicer share.

The CLI builds an :class:`InferenceSettings` from its flags (``segment``, ``evaluate``, ``demo``), the
Slicer job from its widgets; :class:`~AttentionMambaSegLib.inference.predictor.Predictor`, the file and
archive runners, :func:`~AttentionMambaSegLib.evaluation.evaluate` and the MRML path read it. ``None``
means "the model's own setting" (model.json, read through its card). See docs/INFERENCE.md.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["InferenceSettings"]


@dataclass(frozen=True)
class InferenceSettings:
    """The settings of one inference run (frozen: derive changed copies with :meth:`replace`).

    Attributes:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``
            (:func:`~AttentionMambaSegLib.devices.select_device`), or a ``torch.device`` (used as given).
        mode: speed mode name (``"fast"`` or ``"accurate"``); None: the model's default mode.
        tta: 4-flip test-time augmentation; None: as the mode says.
        batch_size: slices per forward pass; None: chosen from the device's memory.
        window: sliding window (H, W) in pixels, or one int for a square; None: the model's
            ``inference_patch_size``.
        roi: a :class:`~AttentionMambaSegLib.inference.roi.RegionOfInterest`, the ``--roi`` text
            (six numbers, RAS mm) or a Slicer ROI file path; None: the whole image.
        force: run even when the input checks warn that the image does not match the model.
        output_format: ``seg.nrrd``, ``nii.gz``, ``nii``, ``nrrd``, ``mha``, ``png`` (photographs) or
            ``dicom-seg``.
        overwrite: replace existing output files (never done otherwise).
        overlay: also write a PNG overlay of the result next to each output.
        summary: write the per-run summary JSON; None: when more than one input is segmented.
        nifti_transform: NIfTI header rule (``"qform"``/``"sform"``) when the two disagree; None: refuse.
    """

    device: Any = "auto"
    mode: str | None = None
    tta: bool | None = None
    batch_size: int | None = None
    window: Sequence[int] | int | None = None
    roi: Any = None
    force: bool = False
    output_format: str = "seg.nrrd"
    overwrite: bool = False
    overlay: bool = False
    summary: bool | None = None
    nifti_transform: str | None = None

    def replace(self, **changes: Any) -> InferenceSettings:
        """A copy with ``changes`` applied (``dataclasses.replace``).

        Raises:
            TypeError: an unknown setting name.
        """
        return dataclasses.replace(self, **changes)

    def region_of_interest(self):
        """:attr:`roi` as a :class:`~AttentionMambaSegLib.inference.roi.RegionOfInterest`, or None.

        Text ending in ``.json`` or naming a file is read as a Slicer markups ROI file
        (:meth:`~AttentionMambaSegLib.inference.roi.RegionOfInterest.from_markups_file`); other text as six
        numbers, centre and size in RAS mm (:meth:`~AttentionMambaSegLib.inference.roi.RegionOfInterest.from_text`).

        Raises:
            ValueError: text that is neither; FileNotFoundError, ValueError: an unreadable markups file.
        """
        if not isinstance(self.roi, (str, os.PathLike)):
            return self.roi
        text = os.fspath(self.roi)
        if not text:
            return None
        from .roi import RegionOfInterest

        if text.lower().endswith(".json") or Path(text).is_file():
            return RegionOfInterest.from_markups_file(text)
        return RegionOfInterest.from_text(text)
