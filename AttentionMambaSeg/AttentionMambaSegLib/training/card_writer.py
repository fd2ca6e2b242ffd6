"""The model card a run writes: classes and their terminology, licence, lineage, metrics."""

from __future__ import annotations

import copy
import logging
import re

from ..datasets import DatasetInfo

__all__ = ["default_classes", "training_lineage", "summary_to_metrics", "model_licence", "KNOWN_DATASETS"]

logger = logging.getLogger(__name__)

#: model.json "task" / "modality" of the shipped datasets.
KNOWN_DATASETS: dict[str, dict] = {
    "ACDC": {"task": "cardiac cine-MRI segmentation (short axis): RV, LV myocardium, LV", "modality": "MR"},
    "Hippocampus": {"task": "hippocampus segmentation on T1 MRI crops: anterior, posterior", "modality": "MR"},
    "PH2": {"task": "skin lesion segmentation on dermoscopy photographs", "modality": "dermoscopy (RGB)"},
}


#: Colours of labels without terminology: pairwise at least terminology.MIN_COLOR_DISTANCE apart.
_FALLBACK_COLORS = [
    [128, 174, 128],
    [241, 214, 145],
    [0, 151, 206],
    [216, 101, 79],
    [183, 156, 220],
    [250, 210, 80],
    [60, 60, 200],
    [200, 60, 160],
    [20, 120, 60],
    [120, 70, 30],
    [90, 200, 200],
]


def default_classes(info: DatasetInfo, activation: str, reference_classes: list[dict] | None = None) -> list[dict]:
    """model.json "classes" for a dataset: names, colours, SNOMED CT codes.

    Each label's entry comes from, in this order: the dataset's own ``dataset.json`` block
    ``"label_terminology": {label name: {"name", "color", "snomed"}}``; the class of ``reference_classes``
    (the ``--init-from`` model) with the same ``dataset_label``; else the label's name, a palette colour
    and no codes, with a warning. The dataset's folder name plays no part.

    Args:
        info: the dataset.
        activation: "softmax" (one class per foreground label value) or "sigmoid" (label value 1).
        reference_classes: model.json classes of the model training starts from, or None.

    Returns:
        one dict per foreground class: label_value, name, dataset_label, color, snomed {category, type, ...}.

    Raises:
        ValueError: an invalid ``label_terminology`` entry (naming it), or classes that are not distinct.
    """
    from ..terminology import ClassEntry, read_classes

    by_label = {c.get("dataset_label"): c for c in reference_classes or [] if c.get("dataset_label")}
    classes = []
    for i, (label_name, value) in enumerate(info.foreground_labels.items()):
        known = info.label_terminology.get(label_name) or by_label.get(label_name)
        if known is None:
            logger.warning(
                "no terminology for label '%s' of dataset %s: its segments get a name and colour but no "
                "SNOMED CT codes; add a 'label_terminology' block to its dataset.json (or edit the model.json "
                "written)",
                label_name,
                info.root,
            )
            known = {"name": label_name, "color": _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)]}
        entry = {
            "label_value": int(value),
            "name": known.get("name", label_name),
            "dataset_label": label_name,
            "color": known.get("color"),
            "snomed": copy.deepcopy(known.get("snomed")),
        }
        classes.append(ClassEntry.from_dict(entry, f"dataset.json label_terminology.{label_name}").to_dict())
    read_classes(classes, f"classes of dataset {info.root}")  # distinct codes and colours
    if activation == "sigmoid" and len(classes) != 1:
        raise ValueError(f"a sigmoid model has one foreground class; dataset {info.name} has {len(classes)}")
    return classes


def training_lineage(source) -> dict:
    """Where a continued model's weights came from, for its model.json ``training`` block.

    A run started with ``--init-from`` reproduces only from that package's weights, so the new package
    records the source (``initialised_from``: id, version, SHA-256 of its weights) and the source's own
    training, appended to the lineage the source already carries (``earlier_training``, oldest first:
    version, command, steps, time, selection and validation mean Dice of each step).

    Args:
        source: the loaded ``ModelPackage`` the run started from.

    Returns:
        ``{"initialised_from": {...}, "earlier_training": [...]}``.
    """
    card = source.card
    t = card.training
    val = card.metrics.get("val") or {}
    step = {
        "version": card.version,
        "sha256": card.sha256,
        "command": t.get("command"),
        "epochs": t.get("epochs_completed", t.get("epochs")),
        "iterations_per_epoch": t.get("iterations_per_epoch"),
        "batch_size": t.get("batch_size"),
        "patch_size": list(card.patch_size),
        "target_spacing": list(card.target_spacing) if card.target_spacing is not None else None,
        "time": t.get("time"),
        "selected_epoch": t.get("selected_epoch"),
        "val_mean_dice": val.get("mean_dice"),
        "val_cases": val.get("cases"),
    }
    return {
        "initialised_from": {"id": card.id, "version": card.version, "sha256": card.sha256},
        "earlier_training": list(t.get("earlier_training") or []) + [{k: v for k, v in step.items() if v is not None}],
    }


def summary_to_metrics(summary: dict) -> dict:
    """The model.json "metrics" entry of an :func:`evaluation.evaluate` summary (means per class)."""
    per_class = summary["per_class"]
    return {
        "cases": summary["cases"],
        "tta": summary["tta"],
        "dice": {name: round(v["dice_mean"], 4) for name, v in per_class.items()},
        "hd95_mm": {name: round(v["hd95_mean"], 3) for name, v in per_class.items()},
        "mean_dice": round(summary["mean_dice"], 4),
        "mean_hd95_mm": round(summary["mean_hd95"], 3),
        "conventions": summary["conventions"],
    }


def model_licence(info: DatasetInfo) -> str:
    """The licence line of a model trained on ``info``: a non-commercial (NC) or research-use-only
    data licence is carried over to the weights and said so."""
    licence = info.licence or "unknown"
    if "NC" in re.split(r"[^A-Z0-9]+", licence.upper()) or "research use" in licence.lower():
        return f"{licence}: the weights derive from {info.name} data and may not be used commercially"
    return f"{licence} (licence of the training data, {info.name})"
