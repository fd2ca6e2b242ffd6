"""Evaluation of a model package on a dataset: per case and per class Dice and HD95.

Whole images are predicted exactly as users get them (:func:`inference.predict_volume`: every slice,
sliding window with Gaussian weighting, optional 4-flip test-time augmentation), on each case's own
grid; Dice and HD95 (mm, each case's own spacing; :mod:`metrics`) are computed per case and class,
then averaged over cases, then over classes. Deviation from the authors'
evaluation: no resampling of the prediction before scoring, and no shared spacing.

Empty masks: both empty -> Dice 1, HD95 0; exactly one empty -> Dice 0, HD95 = the image diagonal in
mm. The CSV starts with comment lines (``#``) that say so.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .datasets import load_dataset_info, read_case, split_cases
from .evaluation_report import format_shift_suite, format_summary, plot_boxes, write_csv
from .inference.settings import InferenceSettings
from .metrics import array_spacing, per_class_metrics
from .outputs import check_output_path

__all__ = [
    "evaluate",
    "evaluate_shift_suite",
    "score_files",
    "score_label_files",
    "format_file_scores",
    "format_summary",
    "format_shift_suite",
    "EMPTY_MASK_CONVENTIONS",
]

logger = logging.getLogger(__name__)

EMPTY_MASK_CONVENTIONS = "both masks empty: Dice 1, HD95 0; exactly one empty: Dice 0, HD95 = image diagonal in mm"


def evaluate(
    model,
    dataset: str | os.PathLike,
    settings: InferenceSettings | None = None,
    *,
    split: str = "val",
    fold: int = 0,
    cases: Sequence[str] | None = None,
    output: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    shift=None,
    predictor=None,
) -> dict | None:
    """Predict every case of a split and score it per class.

    Args:
        model: a :class:`~AttentionMambaSegLib.package.ModelPackage`, a model folder or a model id.
        dataset: nnU-Net v2 raw dataset folder.
        settings: an :class:`~AttentionMambaSegLib.inference.InferenceSettings`; None: the defaults with 4-flip
            test-time augmentation (``tta=True``). ``device``, ``mode``, ``tta`` (None: the mode's),
            ``batch_size``, ``window`` as :class:`~AttentionMambaSegLib.inference.Predictor` reads them;
            ``overwrite``: replace an existing ``output`` CSV and box plot (never a file of the dataset).
        split: "val" or "train" (of ``fold`` in splits_final.json) or "all" (every labelled case).
        fold: fold of splits_final.json.
        cases: evaluate these case ids instead of a split.
        output: CSV path for the per-case table (a box plot goes next to it, same name with ``.png``);
            None writes no file.
        progress: ``progress(done, total_cases)``, ``done`` counting cases with a fraction for the
            slices of the case being predicted (called after every batch of slices).
        cancel: when set, stops before the next case and returns None.
        shift: a :class:`~AttentionMambaSegLib.shifts.Shift` applied to every case (image and label)
            before prediction; None scores the cases as they are.
        predictor: an :class:`~AttentionMambaSegLib.inference.Predictor` of the model to use (shared
            between calls); then its own device, flips, batch size, window and mode are used.

    Returns:
        summary dict: ``cases`` (int), ``tta``, ``mode``, ``passes``, ``seconds_mean`` (prediction
        time per case), ``conventions``, ``per_case`` (list of rows: case, class, label_value, dice,
        hd95_mm, pred_voxels, ref_voxels, confidence, needs_review, seconds), ``per_class`` ({class name:
        {dice_mean, dice_sd, hd95_mean, hd95_sd}}), ``mean_dice`` and ``mean_hd95`` (mean over classes of
        the per-class means), ``label_values_found`` (every value > 0 found in the reference labels, or
        listed in dataset.json) and ``label_values_not_scored`` ({value: number of cases holding it} for the
        values the model does not predict, which no figure includes); None when cancelled.

    Raises:
        DatasetError: invalid dataset or split.
        ValueError: the model and dataset do not match (channels, label values); a reference label with
            non-integer values.
        FileNotFoundError: unknown model.
        FileExistsError: ``output`` exists and ``overwrite`` is False (before any prediction).
    """
    from .inference import Predictor
    from .package import load_model_package

    settings = InferenceSettings(tta=True) if settings is None else settings
    package = predictor.package if predictor is not None else load_model_package(model)
    info = load_dataset_info(Path(dataset))
    case_ids = list(cases) if cases is not None else split_cases(info, split, fold)
    if not case_ids:
        raise ValueError(f"no case to evaluate in split {split!r} of {info.root}")
    classes = _classes_to_score(package, info)
    if output is not None:  # before any prediction: the outputs may be written at the end
        for path in (Path(output), Path(output).with_suffix(".png")):
            check_output_path(path, overwrite=settings.overwrite, inputs=[info.root])
    if predictor is None:
        predictor = Predictor(package, settings)
    scored = _score_cases(predictor, info, case_ids, classes, progress, cancel, shift)
    if scored is None:
        return None
    source = {
        "dataset": str(info.root),
        "split": split if cases is None else "cases",
        "shift": None if shift is None else shift.name,
    }
    summary = _case_summary(*scored, classes, predictor, source)
    if output is not None:
        write_csv(summary, Path(output), overwrite=settings.overwrite, inputs=[info.root])
        plot_boxes(summary, Path(output).with_suffix(".png"), overwrite=settings.overwrite, inputs=[info.root])
    return summary


def _case_summary(
    rows: list[dict], seconds: list[float], found: dict[int, int], classes: list[dict], predictor, source: dict
) -> dict:
    """The summary of :func:`evaluate` from the scored cases and ``source`` (dataset, split, shift); warns about
    the label values of the dataset that the model does not predict."""
    package = predictor.package
    summary = _summarise(rows, classes, len(seconds), predictor.tta)
    scored_values = {c["label_value"] for c in classes}
    not_scored = {v: n for v, n in sorted(found.items()) if v not in scored_values}
    if not_scored:
        logger.warning(
            "Label value(s) %s of the dataset are not predicted by model '%s' (it predicts %s) and are "
            "left out of every figure.",
            ", ".join(f"{v} ({n} case(s))" for v, n in not_scored.items()),
            package.id,
            sorted(scored_values),
        )
    summary.update(
        {
            "model": package.id,
            **source,
            "mode": predictor.mode,
            "passes": predictor.plan.describe(),
            "seconds_mean": float(np.mean(seconds)),
            "label_values_found": sorted(found),
            "label_values_not_scored": not_scored,
        }
    )
    return summary


def _score_cases(
    predictor, info, case_ids: list, classes: list[dict], progress, cancel, shift
) -> tuple[list[dict], list[float], dict[int, int]] | None:
    """Predict and score every case: ``(rows, seconds per case, {label value found: cases})``; None when cancelled.

    ``found`` starts with the dataset's own label values (count 0) and counts the cases whose reference label
    holds each value.
    """
    found: dict[int, int] = {int(v): 0 for v in info.foreground_labels.values()}
    rows: list[dict] = []
    seconds = []
    for done, case_id in enumerate(case_ids, 1):
        if cancel is not None and cancel.is_set():
            return None
        image, label = read_case(info, case_id)
        assert label is not None  # read with its label
        if shift is not None:
            image, label = shift.apply(image, label, case_id)

        def slices_done(done_slices: int, total_slices: int, base=done - 1) -> None:
            if progress is not None and total_slices:
                progress(base + done_slices / total_slices, len(case_ids))

        started = time.perf_counter()
        result = predictor.segment(image, progress=slices_done, cancel=cancel)
        if result is None:
            return None
        seconds.append(time.perf_counter() - started)
        segments = {s.label_value: s for s in result.segments}
        for value in _label_values(label, f"the reference label of case {case_id}"):
            found[value] = found.get(value, 0) + 1
        for row in _score_case(case_id, result.labels, label, classes):
            segment = segments[row["label_value"]]
            rows.append(
                {
                    **row,
                    "confidence": segment.confidence,
                    "needs_review": segment.needs_review,
                    "seconds": round(seconds[-1], 2),
                }
            )
        if progress is not None:
            progress(done, len(case_ids))
    return rows, seconds, found


def _label_values(label: sitk.Image, what: str) -> list[int]:
    """The values > 0 of a labelmap, after checking that they are whole numbers.

    Raises:
        ValueError: vector pixels, or values that are not whole numbers (e.g. a probability map or an
            interpolated label), naming ``what`` and an example value.
    """
    if label.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{what} has {label.GetNumberOfComponentsPerPixel()} values per voxel; a labelmap has one.")
    values = np.unique(sitk.GetArrayViewFromImage(label))
    if values.dtype.kind == "f":
        fractional = values[~np.isfinite(values) | (values != np.round(values))]
        if fractional.size:
            raise ValueError(
                f"{what} holds values that are not whole numbers (e.g. {float(fractional[0]):g}; {fractional.size} "
                "distinct such values): it is not a labelmap (a probability map, or a label resampled with linear "
                "interpolation?). Give the labelmap itself, with integer label values."
            )
    if values.size and values.min() < 0:
        raise ValueError(f"{what} holds negative values (down to {values.min():g}); label values are 0 or more.")
    return [int(v) for v in values if v > 0]


def _classes_to_score(package, info) -> list[dict]:
    """The model's foreground classes, after checking that model and dataset match.

    Raises:
        ValueError: other channels, or label values the dataset does not have.
    """
    if package.in_channels != info.num_channels:
        raise ValueError(
            f"model '{package.id}' takes {package.in_channels} channel(s) "
            f"but dataset {info.name} has {info.num_channels}"
        )
    dataset_values = set(info.foreground_labels.values())
    classes = [c for c in package.classes if c["label_value"] >= 1]
    missing = [c["label_value"] for c in classes if c["label_value"] not in dataset_values]
    if missing:
        raise ValueError(
            f"model '{package.id}' predicts label value(s) {missing} that dataset {info.name} does not have "
            f"(dataset labels {info.labels})"
        )
    return classes


def _score_case(case_id: str, prediction: sitk.Image, label: sitk.Image, classes: list[dict]) -> list[dict]:
    """One row per class: Dice, HD95 (mm, the label's spacing) and voxel counts of one case."""
    pred = sitk.GetArrayFromImage(prediction)
    ref = sitk.GetArrayFromImage(label)
    if pred.shape != ref.shape:
        raise ValueError(f"{case_id}: prediction shape {pred.shape} differs from the label's {ref.shape}")
    scores = per_class_metrics(pred, ref, [c["label_value"] for c in classes], array_spacing(label))
    logger.info(
        "%s: %s", case_id, ", ".join(f"{c['name']} Dice {scores[c['label_value']]['dice']:.4f}" for c in classes)
    )
    return [
        {
            "case": case_id,
            "class": c["name"],
            "label_value": c["label_value"],
            "dice": scores[c["label_value"]]["dice"],
            "hd95_mm": scores[c["label_value"]]["hd95"],
            "pred_voxels": scores[c["label_value"]]["pred_voxels"],
            "ref_voxels": scores[c["label_value"]]["ref_voxels"],
        }
        for c in classes
    ]


def evaluate_shift_suite(
    model,
    dataset: str | os.PathLike,
    settings: InferenceSettings | None = None,
    *,
    split: str = "val",
    fold: int = 0,
    cases: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> dict | None:
    """Score a model on the clean cases of a split and under every shift of its suite (:mod:`shifts`).

    Args:
        model: a :class:`~AttentionMambaSegLib.package.ModelPackage`, a model folder or a model id.
        dataset, split, fold, cases, cancel: as for :func:`evaluate`.
        settings: as for :func:`evaluate`; None: the defaults without test-time augmentation (``tta=False``:
            the suite runs 5 evaluations).
        progress: ``progress(done, total)`` over cases x (1 + number of shifts).

    Returns:
        ``{"suite": "dermoscopy" | "mri", "cases", "tta", "clean": mean Dice, "shifts": {name: mean Dice},
        "shift_mean": mean over the shifts, "per_class": {"clean" | name: {class: Dice}},
        "descriptions": {name: text}}``; None when cancelled.

    Raises:
        ValueError: no suite for the model's normalisation; the errors of :func:`evaluate`.
    """
    from .inference import Predictor
    from .package import load_model_package
    from .shifts import suite_for

    settings = InferenceSettings(tta=False) if settings is None else settings
    package = load_model_package(model)
    kind, suite = suite_for(package.card.normalization)
    info = load_dataset_info(Path(dataset))
    case_ids = list(cases) if cases is not None else split_cases(info, split, fold)
    predictor = Predictor(package, settings)
    results: dict[str, dict] = {}
    for run, shift in enumerate((None, *suite)):
        offset = run * len(case_ids)

        def step(done: int, total: int, offset=offset) -> None:
            if progress is not None:
                progress(offset + done, len(case_ids) * (1 + len(suite)))

        summary = evaluate(
            package,
            dataset,
            settings,
            split=split,
            fold=fold,
            cases=case_ids,
            progress=step,
            cancel=cancel,
            shift=shift,
            predictor=predictor,
        )
        if summary is None:
            return None
        name = "clean" if shift is None else shift.name
        results[name] = summary
        logger.info("shift suite: %s mean Dice %.4f", name, summary["mean_dice"])
    shifted = {s.name: results[s.name]["mean_dice"] for s in suite}
    return {
        "suite": kind,
        "model": package.id,
        "version": package.version,
        "dataset": str(info.root),
        "split": split if cases is None else "cases",
        "cases": len(case_ids),
        "tta": bool(settings.tta),
        "clean": results["clean"]["mean_dice"],
        "shifts": shifted,
        "shift_mean": float(np.mean(list(shifted.values()))),
        "per_class": {k: {c: v["dice_mean"] for c, v in r["per_class"].items()} for k, r in results.items()},
        "descriptions": {s.name: s.description for s in suite},
    }


def score_files(prediction, label, label_values: Sequence[int] | None = None) -> dict:
    """Dice and HD95 of one predicted labelmap file against one reference labelmap file.

    Args:
        prediction: labelmap file (``.seg.nrrd``, ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``, ``.png``: every
            format ``segment`` writes; :func:`~AttentionMambaSegLib.masks.read_labelmap`).
        label: the reference labelmap on the same grid.
        label_values: the values to score; default every value > 0 in either file.

    Returns:
        ``{label value: {"dice", "hd95", "pred_voxels", "ref_voxels"}}``, HD95 in mm (the label's spacing;
        pixels for PNG files).

    Raises:
        ValueError: the two files are not on the same grid (size, spacing, origin or direction), one is
            not a 2D/3D single-component labelmap, a ``.seg.nrrd`` with overlapping segments, or one holds
            values that are not whole numbers.
    """
    pred_img, ref_img, _ = _read_pair(prediction, label)
    pred = sitk.GetArrayFromImage(pred_img)
    ref = sitk.GetArrayFromImage(ref_img)
    if label_values is None:
        label_values = sorted(int(v) for v in set(np.unique(pred)) | set(np.unique(ref)) if v > 0)
    return per_class_metrics(pred, ref, list(label_values), array_spacing(ref_img))


def score_label_files(prediction, label, model=None) -> dict:
    """Dice and HD95 per class of one labelmap file against its reference, with class names and the mean.

    Class names come from the model card when ``model`` is given, else from the segment names of a
    ``.seg.nrrd`` (the prediction's first, then the label's), else "label N". With a model, its
    foreground classes are scored (a ``.seg.nrrd``'s segments are matched to them by name) and the
    other values found are listed as not scored; without one, every value > 0 found in either file.

    Args:
        prediction: labelmap file in any format ``segment`` writes (:func:`score_files`).
        label: the reference labelmap file on the same grid.
        model: a :class:`~AttentionMambaSegLib.package.ModelPackage`, model folder or model id, or None.

    Returns:
        ``{"prediction", "label", "model" (id or None), "distance_unit" ("mm", or "px" when a file is a
        PNG, which keeps no pixel size), "classes": [{"label_value", "name", "dice", "hd95", "pred_voxels",
        "ref_voxels"}], "mean_dice", "mean_hd95" (over the classes; None when none was scored),
        "label_values_not_scored", "conventions"}``.

    Raises:
        ValueError, FileNotFoundError: as :func:`score_files` and
            :func:`~AttentionMambaSegLib.masks.read_labelmap` (a segment named as no class of the model).
    """
    from .masks import class_names
    from .outputs import path_extension

    package = None
    if model is not None:
        from .package import load_model_package

        package = load_model_package(model)
    classes = package.card.class_dicts if package is not None else None
    pred_img, ref_img, names = _read_pair(prediction, label, classes)
    pred = sitk.GetArrayFromImage(pred_img)
    ref = sitk.GetArrayFromImage(ref_img)
    found = sorted(int(v) for v in set(np.unique(pred)) | set(np.unique(ref)) if v > 0)
    if package is not None:
        labels = class_names(classes)
    else:
        labels = {v: names["prediction"].get(v) or names["label"].get(v) or f"label {v}" for v in found}
    scores = per_class_metrics(pred, ref, list(labels), array_spacing(ref_img))
    rows = [{"label_value": v, "name": n, **scores[v]} for v, n in labels.items()]
    photo = any(path_extension(p) in _PHOTO_EXTENSIONS for p in (prediction, label))
    return {
        "prediction": str(prediction),
        "label": str(label),
        "model": None if package is None else package.id,
        "distance_unit": "px" if photo else "mm",
        "classes": rows,
        "mean_dice": float(np.mean([r["dice"] for r in rows])) if rows else None,
        "mean_hd95": float(np.mean([r["hd95"] for r in rows])) if rows else None,
        "label_values_not_scored": [v for v in found if v not in labels],
        "conventions": EMPTY_MASK_CONVENTIONS,
    }


def format_file_scores(result: dict) -> str:
    """Human-readable table of :func:`score_label_files`: one row per class (by name) and the mean."""
    unit = result["distance_unit"]
    model = f" (classes of model {result['model']})" if result.get("model") else ""
    lines = [f"{result['prediction']} against {result['label']}{model}"]
    if not result["classes"]:
        lines.append("both labelmaps are empty: nothing to score")
        return "\n".join(lines)
    lines.append(f"{'class':<28} {'value':>5} {'Dice':>8} {'HD95 ' + unit:>9} {'predicted':>10} {'reference':>10}")
    for r in result["classes"]:
        lines.append(
            f"{r['name']:<28} {r['label_value']:>5} {r['dice']:>8.4f} {r['hd95']:>9.2f} "
            f"{r['pred_voxels']:>10} {r['ref_voxels']:>10}"
        )
    lines.append(f"{'mean of classes':<28} {'':>5} {result['mean_dice']:>8.4f} {result['mean_hd95']:>9.2f}")
    lines.append(
        f"(predicted / reference: {'pixels' if unit == 'px' else 'voxels'}; "
        f"{result['conventions'].replace(' in mm', '') if unit == 'px' else result['conventions']})"
    )
    if result.get("label_values_not_scored"):
        lines.append(
            f"label values that are no class of the model, in no figure above: {result['label_values_not_scored']}"
        )
    return "\n".join(lines)


_PHOTO_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _read_pair(prediction, label, classes=None) -> tuple[sitk.Image, sitk.Image, dict]:
    """Both labelmap files read (:func:`~AttentionMambaSegLib.masks.read_labelmap`) and put on one grid.

    A PNG keeps no geometry, so it takes the other file's; a single-slice volume (a ``.seg.nrrd`` of a
    2D image) is compared as 2D; a ``.seg.nrrd`` stored on a part of the other file's grid (3D Slicer may
    crop a segmentation to its extent) is placed back on that grid.

    Returns:
        ``(prediction, label, {"prediction": names, "label": names})``.

    Raises:
        ValueError: not 2D/3D single-component labelmaps, values that are not whole numbers, or grids
            that differ (size, spacing, origin or direction).
    """
    from .masks import read_labelmap
    from .outputs import path_extension

    images, names = {}, {}
    for name, path in (("prediction", prediction), ("label", label)):
        image, found = read_labelmap(path, classes)
        if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() not in (2, 3):
            raise ValueError(
                f"the {name} {path} is not a 2D or 3D labelmap (one value per voxel); export a "
                "labelmap (a segmentation with overlapping segments cannot be scored as one)"
            )
        _label_values(image, f"the {name} {path}")
        images[name], names[name] = image, found
    pred_img, ref_img = images["prediction"], images["label"]
    if pred_img.GetDimension() != ref_img.GetDimension():
        pred_img, ref_img = _as_2d(pred_img), _as_2d(ref_img)
    pred_png, ref_png = (path_extension(p) in _PHOTO_EXTENSIONS for p in (prediction, label))
    if pred_img.GetSize() == ref_img.GetSize() and pred_png != ref_png:  # a PNG takes the other file's geometry
        (pred_img if pred_png else ref_img).CopyInformation(ref_img if pred_png else pred_img)
    for which, path in (("prediction", prediction), ("label", label)):
        if path_extension(path) == ".seg.nrrd" and pred_img.GetSize() != ref_img.GetSize():
            if which == "prediction":
                pred_img = _onto_grid(pred_img, ref_img)
            else:
                ref_img = _onto_grid(ref_img, pred_img)
    for what, a, b in (
        ("size", pred_img.GetSize(), ref_img.GetSize()),
        ("spacing", pred_img.GetSpacing(), ref_img.GetSpacing()),
        ("origin", pred_img.GetOrigin(), ref_img.GetOrigin()),
        ("direction", pred_img.GetDirection(), ref_img.GetDirection()),
    ):
        if len(a) != len(b) or not np.allclose(a, b, atol=1e-4):
            raise ValueError(
                f"the prediction and the label differ in {what} ({a} vs {b}): score them on the same "
                "grid (resample the prediction to the label first)"
            )
    return pred_img, ref_img, names


def _as_2d(image: sitk.Image) -> sitk.Image:
    """A 3D image of one slice as 2D (other images unchanged)."""
    size = image.GetSize()
    if image.GetDimension() == 3 and 1 in size and sum(n > 1 for n in size) <= 2:
        extract = list(size)
        extract[size.index(1)] = 0
        return sitk.Extract(image, extract, [0, 0, 0])
    return image


def _onto_grid(part: sitk.Image, grid: sitk.Image) -> sitk.Image:
    """``part`` placed on ``grid`` (same spacing and direction, whole-voxel offset): zero outside it.

    Returns ``part`` unchanged when the grids do not line up (the caller then reports how they differ)."""
    if (
        part.GetDimension() != grid.GetDimension()
        or not np.allclose(part.GetSpacing(), grid.GetSpacing(), atol=1e-4)
        or not np.allclose(part.GetDirection(), grid.GetDirection(), atol=1e-4)
    ):
        return part
    index = np.asarray(grid.TransformPhysicalPointToContinuousIndex(part.GetOrigin()))
    if not np.allclose(index, np.round(index), atol=1e-3):
        return part
    placed = sitk.Resample(part, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, part.GetPixelID())
    kept, stored = (int(np.count_nonzero(sitk.GetArrayViewFromImage(i))) for i in (placed, part))
    if kept != stored:
        return part  # labels outside the other grid: not the same grid
    return placed


def _summarise(rows: list[dict], classes: list[dict], num_cases: int, tta: bool) -> dict:
    per_class = {}
    for c in classes:
        d = np.array([r["dice"] for r in rows if r["label_value"] == c["label_value"]], dtype=np.float64)
        h = np.array([r["hd95_mm"] for r in rows if r["label_value"] == c["label_value"]], dtype=np.float64)
        per_class[c["name"]] = {
            "dice_mean": float(d.mean()),
            "dice_sd": float(d.std(ddof=1)) if d.size > 1 else 0.0,
            "hd95_mean": float(h.mean()),
            "hd95_sd": float(h.std(ddof=1)) if h.size > 1 else 0.0,
        }
    return {
        "cases": num_cases,
        "tta": bool(tta),
        "conventions": EMPTY_MASK_CONVENTIONS,
        "per_case": rows,
        "per_class": per_class,
        "mean_dice": float(np.mean([v["dice_mean"] for v in per_class.values()])),
        "mean_hd95": float(np.mean([v["hd95_mean"] for v in per_class.values()])),
    }
