"""Ventricular function of a whole cine: every frame segmented, ED/ES chosen, figures and files written.

:func:`analyse_cine` segments each frame with one :class:`~AttentionMambaSegLib.inference.Predictor`
(the network built once; the slices of a frame go through it in batches of ``batch_size``), then
:func:`function_from_labelmaps` turns the labelmaps into the figures of :mod:`.function`: it needs no
network, so labelmaps edited by hand give their figures through it. :func:`write_cardiac_outputs`
writes ``function.json``, the ED and ES labelmaps (every frame's on request) and the volume-time curve.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from .cine import Cine, check_same_grid
from .function import (
    CardiacLabels,
    VentricularFunction,
    choose_ed_es,
    format_function_table,
    frame_volumes,
    plausibility_warnings,
    stack_coverage_warnings,
    ventricular_function,
)

__all__ = [
    "CardiacAnalysis",
    "analyse_cine",
    "check_cardiac_outputs",
    "function_from_labelmaps",
    "write_cardiac_outputs",
    "FUNCTION_FILE",
    "CURVE_FILE",
    "SOURCES",
]

logger = logging.getLogger(__name__)

FUNCTION_FILE = "function.json"
CURVE_FILE = "volume_curve.png"
#: Where the definitions come from (written into function.json).
SOURCES = {
    "definitions": "ACDC challenge: Bernard et al., IEEE TMI 37(11):2514-2525, 2018, doi:10.1109/TMI.2018.2837502 "
    "(volume = voxel count x voxel volume; EF = (EDV - ESV) / EDV; LV mass = 1.05 g/mL x "
    "myocardial volume at ED)",
    "body_surface_area": "Mosteller, N Engl J Med 317(17):1098, 1987: sqrt(height_cm x weight_kg / 3600)",
}


@dataclass(frozen=True)
class CardiacAnalysis:
    """The result of a cine: labelmaps, per-frame volumes, the figures, and what to check.

    Attributes:
        labelmaps: uint8 SimpleITK labelmaps, one per frame, on the cine's grid.
        volumes: :class:`~.function.FrameVolumes` of each frame (mL).
        function: :class:`~.function.VentricularFunction` (frame numbers from 1).
        structures: per structure (``"LV"``, ``"RV"``, ``"MYO"``): name, label value, the segment report
            at ED and ES (volume, confidence, needs_review, reason) and ``needs_review`` (at either).
        warnings: sentences (plausibility, segments to review, input warnings).
        model: ``{"id", "version", "mode", "passes"}`` of the model that segmented the frames (empty for
            labelmaps given by hand).
    """

    labelmaps: tuple
    volumes: tuple
    function: VentricularFunction
    structures: dict
    warnings: tuple
    model: dict = field(default_factory=dict)
    flagged: tuple = ()  # per frame: the label values flagged for review

    @property
    def ed_index(self) -> int:
        return self.function.ed_frame - 1

    @property
    def es_index(self) -> int:
        return self.function.es_frame - 1

    def report(self, source: str = "") -> dict:
        """The content of ``function.json``."""
        return {
            "input": source,
            **({"model": self.model} if self.model else {}),
            "frames": len(self.labelmaps),
            **self.function.to_dict(),
            "units": {
                "volume": "mL",
                "mass": "g",
                "ejection_fraction": "%",
                "bsa": "m2",
                "indexed": "per m2 of body surface area",
                "frames": "numbered from 1",
            },
            "structures": self.structures,
            "volume_curve": [
                {"frame": i + 1, "lv_ml": round(v.lv_ml, 2), "rv_ml": round(v.rv_ml, 2), "myo_ml": round(v.myo_ml, 2)}
                for i, v in enumerate(self.volumes)
            ],
            "warnings": list(self.warnings),
            "sources": SOURCES,
        }

    def table(self) -> str:
        """The printed table: the figures, then structures to review and warnings."""
        lines = [format_function_table(self.function)]
        for key, s in self.structures.items():
            if s["needs_review"]:
                lines.append(
                    f"needs review: {s['name']} ({key}): "
                    + "; ".join(f"{phase} {s[phase]['reason']}" for phase in ("ed", "es") if s[phase].get("reason"))
                )
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _slice_array_axis(image: sitk.Image) -> int:
    """The numpy array axis (of ``GetArrayFromImage``, (K, J, I)) along which the stack is cut."""
    from ..slicing import choose_slice_axis

    return 2 - choose_slice_axis(image)


def function_from_labelmaps(
    labelmaps: Sequence[sitk.Image],
    structures: CardiacLabels,
    ed: int | None = None,
    es: int | None = None,
    height_cm: float | None = None,
    weight_kg: float | None = None,
    segmentations: Sequence | None = None,
    names: dict | None = None,
    extra_warnings: Sequence[str] = (),
    model_info: dict | None = None,
) -> CardiacAnalysis:
    """The figures of a cine from its labelmaps (no network: labelmaps edited by hand work the same).

    Args:
        labelmaps: one integer labelmap per frame, 3D, on one grid (spacing in mm).
        structures: the RV, MYO and LV label values (:meth:`~.function.CardiacLabels.from_classes`).
        ed, es: 0-based ED/ES frame indices; None: the largest / smallest LV cavity volume.
        height_cm, weight_kg: for the indexed figures (Mosteller BSA).
        segmentations: the predictor's :class:`~AttentionMambaSegLib.inference.result.Segmentation`
            of each frame, for the confidence and review flag of each structure (None: not known).
        names: label value -> segment name (default "LV cavity", ...).
        extra_warnings: sentences to pass on (e.g. the predictor's input warnings).
        model_info: the model's id, version, mode and passes, stored in function.json (``model``).

    Returns:
        :class:`CardiacAnalysis`.

    Raises:
        ValueError: no labelmaps, frames on different grids, ED/ES outside the cine, bad height/weight.
    """
    if not labelmaps:
        raise ValueError("No labelmaps given: one per frame is needed.")
    check_same_grid(labelmaps, "labelmaps")
    spacing = labelmaps[0].GetSpacing()
    arrays = [sitk.GetArrayViewFromImage(m) for m in labelmaps]
    volumes = tuple(frame_volumes(a, spacing, structures) for a in arrays)
    ed_i, es_i = choose_ed_es([v.lv_ml for v in volumes], ed, es)
    function = ventricular_function(volumes[ed_i], volumes[es_i], ed_i + 1, es_i + 1, height_cm, weight_kg)
    warnings = list(extra_warnings)
    warnings += stack_coverage_warnings(arrays[ed_i] == structures.lv, _slice_array_axis(labelmaps[0]))
    warnings += plausibility_warnings(function, [v.lv_ml for v in volumes])
    report = _structure_report(volumes, structures, (ed_i, es_i), segmentations, names or {})
    warnings += _review_warnings(report)
    flagged = (
        tuple(tuple(s.label_value for s in seg.needs_review) for seg in segmentations)
        if segmentations
        else tuple(() for _ in labelmaps)
    )
    return CardiacAnalysis(
        tuple(labelmaps), volumes, function, report, tuple(dict.fromkeys(warnings)), model_info or {}, flagged
    )


def _structure_report(
    volumes: Sequence, structures: CardiacLabels, ed_es: tuple[int, int], segmentations: Sequence | None, names: dict
) -> dict:
    """function.json "structures": per structure (LV, RV, MYO) its name, label value and, at ED and ES, the
    frame, volume, confidence and review flag (the segmentation's, when known)."""
    default_names = {structures.lv: "LV cavity", structures.rv: "RV cavity", structures.myo: "LV myocardium"}
    report = {}
    for key, value in (("LV", structures.lv), ("RV", structures.rv), ("MYO", structures.myo)):
        phases = {}
        for phase, i in zip(("ed", "es"), ed_es):
            volume = getattr(volumes[i], f"{key.lower()}_ml")
            entry = {
                "frame": i + 1,
                "volume_ml": round(volume, 2),
                "confidence": None,
                "needs_review": False,
                "reason": None,
            }
            if segmentations is not None:
                s = next((s for s in segmentations[i].segments if s.label_value == value), None)
                if s is not None:
                    entry.update(
                        confidence=None if s.confidence is None else round(s.confidence, 4),
                        needs_review=s.needs_review,
                        reason=s.review_reason,
                    )
            phases[phase] = entry
        report[key] = {
            "name": names.get(value, default_names[value]),
            "label_value": value,
            **phases,
            "needs_review": phases["ed"]["needs_review"] or phases["es"]["needs_review"],
        }
    return report


def _review_warnings(report: dict) -> list[str]:
    """One sentence per structure flagged for review, with the reasons at ED and ES."""
    warnings = []
    for s in report.values():
        if s["needs_review"]:
            warnings.append(
                f"Segment '{s['name']}' needs review: "
                + "; ".join(f"{phase.upper()} {s[phase]['reason']}" for phase in ("ed", "es") if s[phase]["reason"])
                + "."
            )
    return warnings


def analyse_cine(
    cine: Cine,
    predictor,
    ed: int | None = None,
    es: int | None = None,
    height_cm: float | None = None,
    weight_kg: float | None = None,
    progress: Callable[[float, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> CardiacAnalysis | None:
    """Segment every frame of a cine and compute the ventricular function.

    Args:
        cine: the frames (:func:`~.cine.read_cine`); its ``ed``/``es`` (two volumes given as ED then ES)
            are used unless ``ed``/``es`` are given.
        predictor: a :class:`~AttentionMambaSegLib.inference.Predictor` of a cardiac model (RV, MYO and
            LV classes, :meth:`~.function.CardiacLabels.from_classes`); its mode, flips and batch size apply.
        ed, es: 0-based ED/ES frame indices; None: the cine's, else the largest / smallest LV cavity.
        height_cm, weight_kg: for the figures indexed to body surface area.
        progress: ``progress(done_frames, total_frames)`` with a fractional ``done`` (slices of the
            current frame), called after every batch.
        cancel: ``threading.Event``; when set, the run stops before the next batch and returns None.

    Returns:
        :class:`CardiacAnalysis`, or None when cancelled.

    Raises:
        ValueError: a model without the three structures (checked before any frame is segmented), an
            input the model refuses (:func:`~AttentionMambaSegLib.inference.check_input_image`), ED/ES
            outside the cine, bad height/weight.
    """
    from ..inference import check_input_image

    package = predictor.package
    structures = CardiacLabels.from_classes(package.card.foreground_classes, f"model '{package.id}'")
    n = len(cine.frames)
    for name, value in (("ED", ed), ("ES", es)):
        if value is not None and not 0 <= value < n:
            raise ValueError(f"The {name} frame {value + 1} is outside the cine (frames 1..{n}).")
    check_input_image(cine.frames[0], package, warn=False, force=predictor.force)  # before the first frame
    results = []
    for t, frame in enumerate(cine.frames):

        def frame_progress(done, total, t=t):
            if progress is not None:
                progress(t + (done / total if total else 1.0), n)

        result = predictor.segment(frame, progress=frame_progress, cancel=cancel)
        if result is None:
            logger.info("Cancelled after %d of %d frames.", t, n)
            return None
        results.append(result)
    warnings = [w for r in results for w in r.warnings]
    names = {c.label_value: c.name for c in package.card.foreground_classes}
    model = {
        "id": package.id,
        "version": package.card.version,
        "mode": predictor.mode,
        "passes": predictor.plan.describe(),
    }
    return function_from_labelmaps(
        [r.labels for r in results],
        structures,
        ed if ed is not None else cine.ed,
        es if es is not None else cine.es,
        height_cm,
        weight_kg,
        segmentations=results,
        names=names,
        extra_warnings=warnings,
        model_info=model,
    )


def _output_paths(folder: Path, frames: int, output_format: str, all_frames: bool) -> dict:
    ext = "." + output_format.lstrip(".")
    paths = {
        "function": folder / FUNCTION_FILE,
        "curve": folder / CURVE_FILE,
        "ed": folder / f"ED{ext}",
        "es": folder / f"ES{ext}",
    }
    if all_frames:
        width = max(2, len(str(frames)))
        paths.update({f"frame{t}": folder / "frames" / f"frame{t + 1:0{width}d}{ext}" for t in range(frames)})
    return paths


def check_cardiac_outputs(
    folder: str | os.PathLike,
    frames: int,
    output_format: str = "seg.nrrd",
    all_frames: bool = False,
    overwrite: bool = False,
    inputs: Sequence = (),
) -> dict:
    """The output paths of :func:`write_cardiac_outputs`, checked before any work.

    Returns:
        name -> path (``function``, ``curve``, ``ed``, ``es``, and ``frame0``... with ``all_frames``).

    Raises:
        ValueError: an unknown format, or ``folder`` is a file.
        FileNotFoundError: the folder's parent does not exist.
        FileExistsError: an output exists and ``overwrite`` is False.
        PermissionError: the folder is not writable.
    """
    from .. import images, outputs

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"Output {folder} is a file; the cardiac command writes into a folder (-o OUT_FOLDER).")
    if not folder.exists() and not folder.parent.is_dir():
        raise FileNotFoundError(f"Cannot create the output folder {folder}: {folder.parent} does not exist.")
    if "." + output_format.lstrip(".") not in images.OUTPUT_EXTENSIONS or output_format == "png":
        raise ValueError(f"Unknown labelmap format {output_format!r}: use seg.nrrd, nii.gz, nii, nrrd or mha.")
    paths = _output_paths(folder, frames, output_format, all_frames)
    for path in paths.values():  # never over an input; the folder writable or creatable
        outputs.check_output_path(path, overwrite=True, inputs=inputs, create_folder=True)
    if not overwrite:
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing:
            raise FileExistsError(
                f"Output(s) already exist: {', '.join(existing[:4])}"
                f"{' ...' if len(existing) > 4 else ''}; pass --overwrite (overwrite=True) to "
                "replace them, or choose another folder."
            )
    return paths


def write_cardiac_outputs(
    analysis: CardiacAnalysis,
    folder: str | os.PathLike,
    classes: Sequence,
    source: str = "",
    output_format: str = "seg.nrrd",
    all_frames: bool = False,
    overwrite: bool = False,
    inputs: Sequence = (),
) -> dict:
    """Write ``function.json``, the ED and ES labelmaps, every frame's with ``all_frames``, and the curve.

    Layout of ``folder`` (created when missing; its parent must exist)::

        function.json          the figures, per-structure confidence and review flags, per-frame volumes
        ED.seg.nrrd, ES.seg.nrrd   the labelmaps of the ED and ES frames (``output_format``)
        volume_curve.png       LV and RV cavity volume per frame, ED and ES marked
        frames/frameNN.seg.nrrd    every frame (``all_frames``)

    Each file is written under the output rule (:mod:`~AttentionMambaSegLib.outputs`: never over an input,
    never replacing a file without ``overwrite``, never partial); function.json comes last.

    Args:
        analysis: :func:`analyse_cine` or :func:`function_from_labelmaps`.
        folder: the output folder.
        classes: the model's classes (names, colours, terminology of the ``.seg.nrrd`` segments).
        source: the input, recorded in function.json.
        output_format: ``seg.nrrd`` (default), ``nii.gz``, ``nii``, ``nrrd`` or ``mha``.
        all_frames: also write every frame's labelmap.
        overwrite: replace existing files.
        inputs: the input files and folders (never written over).

    Returns:
        name -> written path (keys as :func:`check_cardiac_outputs`).

    Raises:
        FileExistsError, FileNotFoundError, PermissionError, ValueError: see :func:`check_cardiac_outputs`.
    """
    from .. import outputs, writers
    from .plot import write_volume_curve

    paths = check_cardiac_outputs(folder, len(analysis.labelmaps), output_format, all_frames, overwrite, inputs)
    paths["function"].parent.mkdir(exist_ok=True)
    if all_frames:
        paths["frame0"].parent.mkdir(exist_ok=True)
    classes = [c.to_dict() if hasattr(c, "to_dict") else c for c in classes]
    written = {}
    for key, index in (("ed", analysis.ed_index), ("es", analysis.es_index)):
        written[key] = writers.write_labelmap(
            analysis.labelmaps[index],
            paths[key],
            classes,
            flagged=analysis.flagged[index],
            overwrite=overwrite,
            inputs=inputs,
        )
    if all_frames:
        for t, labelmap in enumerate(analysis.labelmaps):
            written[f"frame{t}"] = writers.write_labelmap(
                labelmap, paths[f"frame{t}"], classes, flagged=analysis.flagged[t], overwrite=overwrite, inputs=inputs
            )
    written["curve"] = write_volume_curve(
        [v.lv_ml for v in analysis.volumes],
        [v.rv_ml for v in analysis.volumes],
        analysis.function.ed_frame,
        analysis.function.es_frame,
        paths["curve"],
        title=Path(source.split(" + ")[0]).name if source else "",
        overwrite=overwrite,
    )
    report = analysis.report(source)
    report["outputs"] = {k: str(p) for k, p in written.items() if not k.startswith("frame")}
    if all_frames:
        report["outputs"]["frames"] = str(paths["frame0"].parent)
    outputs.write_text_output(
        paths["function"], json.dumps(report, indent=1) + "\n", overwrite=overwrite, inputs=inputs, allowed=(".json",)
    )
    written["function"] = paths["function"]
    logger.info("Wrote %s", paths["function"])
    return written
