"""The model card in words: the few lines of a model chooser and the full card of ``models info``.

Everything here reads a :class:`~.model_card.ModelCard` (model.json): the licence, the validation
figures (clean and under the shift suite), the speed modes, the classes, the data the model was
trained and validated on and its limits, and the training steps, oldest first.
"""

from __future__ import annotations

from .model_card import ModelCard
from .numbers import is_number

__all__ = ["describe", "licence_text", "summary", "validation_dice"]


def licence_text(card: ModelCard) -> str:
    """The licence of the weights, as model.json states it ("" when it states none)."""
    return str(card.licence or "")


def validation_dice(card: ModelCard) -> tuple[float | None, bool]:
    """(mean validation Dice, with flip TTA) from model.json metrics: the TTA figure where recorded."""
    for key, tta in (("val_tta", True), ("val", False)):
        value = (card.metrics.get(key) or {}).get("mean_dice")
        if is_number(value):
            return float(value), tta
    return None, False


def summary(card: ModelCard) -> str:
    """A few lines for a model chooser: licence, validation Dice, the shift suite, what it was not
    validated on (the card's ``limits``)."""
    dice, tta = validation_dice(card)
    figure = (
        (f"validation Dice {dice:.3f}" + (" (with flip TTA)" if tta else ""))
        if dice is not None
        else "no validation figure recorded"
    )
    text = f"Licence: {licence_text(card) or 'not stated'}. {figure[0].upper()}{figure[1:]}."
    suite = card.metrics.get("shift_suite") or {}
    if suite.get("shift_mean") is not None:
        text += f" Under site-like changes (colour, scale, noise...): {suite['shift_mean']:.3f}."
    limits = card.limits
    if limits.get("needs"):
        text += f" Needs {limits['needs']}."
    if limits.get("not_validated_on"):
        value = limits["not_validated_on"]
        text += " Not validated on: " + ("; ".join(value) if isinstance(value, list) else str(value)) + "."
    return text


def describe(card: ModelCard, weights_path) -> str:
    """The model card, short and human-readable (``models info``; the Slicer panel's details).

    Task, classes, licence, the data it was trained and validated on and its limits, validation
    figures (clean and, where measured, under the shift suite and on external data), and how it
    was trained, one line per step. ``weights_path``: the model.safetensors file, named on the last line.
    """
    channels = ", ".join(card.channel_names or []) or f"{card.in_channels} channel(s)"
    lines = [
        f"{card.id} {card.version}: {'segmentation' if card.task is None else card.task}",
        f"  modality      {'not stated' if card.modality is None else card.modality} ({channels})",
        f"  licence       {licence_text(card) or 'not stated'}",
    ]
    unit = "px" if card.normalization.get("type") == "rgb" else "mm"  # photographs: pixels
    spacing = (
        " x ".join(f"{float(v):g}" for v in card.target_spacing) + f" {unit}"
        if card.target_spacing
        else "the input's own spacing"
    )
    window = " x ".join(str(v) for v in card.inference_patch_size)
    lines.append(
        f"  input         2D slices at {spacing}{' a pixel' if unit == 'px' else ''}, slicing in the "
        f"{'patient axes' if card.slicing == 'canonical' else 'acquisition plane'}; "
        f"sliding windows of {window} px"
    )
    lines += _describe_modes(card)
    lines.append("  classes")
    for entry in card.foreground_classes:
        code = f"  ({entry.type.scheme} {entry.type.value} {entry.type.meaning})" if entry.type else ""
        lines.append(f"    {entry.label_value:3d}  {entry.name}  rgb{tuple(entry.color)}{code}")
    lines += _describe_figures(card.metrics, unit)
    limits = card.limits
    for key, title in (
        ("needs", "needs"),
        ("trained_on", "trained on"),
        ("validated_on", "validated on"),
        ("not_validated_on", "not validated on"),
        ("external", "external figures"),
    ):
        value = limits.get(key)
        if value:
            lines.append(f"  {title:<13} " + ("; ".join(value) if isinstance(value, list) else str(value)))
    steps = list(card.training.get("earlier_training") or [])
    lines.append("  training      oldest first; each step's weights started the next")
    lines.extend(f"    {_describe_step(step)}" for step in steps)
    lines.append(f"    {_describe_step(_this_step(card))}")
    if card.training.get("command"):
        lines.append(f"  command       {card.training['command']}")
    lines.append(f"  weights       {weights_path} (SHA-256 {str(card.sha256 or 'missing')[:16]}...)")
    return "\n".join(lines)


def _describe_modes(card: ModelCard) -> list[str]:
    """The speed modes, their measured validation Dice and time, the CPU default and the review threshold."""
    modes = card.speed_modes
    measured = {
        name: (card.inference.get("modes") or {}).get(name, {}).get("measured") or {} for name in ("fast", "accurate")
    }
    lines = []
    for name in ("fast", "accurate"):
        m = measured[name]
        figures = (
            f": validation Dice {m['mean_dice']:.4f}, {m['seconds_per_case']:.1f} s a case"
            if m.get("mean_dice") is not None
            else ""
        )
        where = [w for w, used in (("CPU", modes.cpu_mode == name), ("GPU", name == "accurate")) if used]
        default = f" (default on {' and '.join(where)})" if where else ""
        lines.append(f"  mode {name:<8} {modes.plan(name).describe()}{figures}{default}")
    rule = card.confidence_rule
    by_mode = ", ".join(
        f"{mode} {rule.for_mode(mode).threshold:.4f}"
        for mode in ("fast", "accurate")
        if rule.for_mode(mode).threshold is not None
    )
    lines.append(
        "  review        "
        + (
            f"segments with confidence below the mode's threshold ({by_mode}) and empty "
            "segments are flagged 'needs review'"
            if by_mode
            else "empty segments are flagged 'needs review'"
        )
    )
    return lines


def _this_step(card: ModelCard) -> dict:
    """The current version's own training step, in the form of an ``earlier_training`` entry."""
    t = card.training
    val = card.metrics.get("val") or {}
    return {
        "version": card.version,
        "sha256": card.sha256,
        "time": t.get("time"),
        "epochs": t.get("epochs_completed", t.get("epochs")),
        "iterations_per_epoch": t.get("iterations_per_epoch"),
        "batch_size": t.get("batch_size"),
        "patch_size": list(card.patch_size),
        "target_spacing": list(card.target_spacing) if card.target_spacing else None,
        "val_mean_dice": val.get("mean_dice"),
        "val_cases": val.get("cases"),
    }


def _describe_figures(metrics: dict, unit: str = "mm") -> list[str]:
    """The validation lines of the card: per-case Dice (with and without TTA) and the shift suite; HD95 in
    ``unit`` (mm, or px for photographs)."""
    lines = []
    for key in ("val", "val_tta"):
        m = metrics.get(key)
        if isinstance(m, dict) and m.get("mean_dice") is not None:
            per_class = ", ".join(f"{k} {v:.3f}" for k, v in (m.get("dice") or {}).items())
            hd = f", HD95 {m['mean_hd95_mm']:.1f} {unit}" if m.get("mean_hd95_mm") is not None else ""
            lines.append(
                f"  validation    Dice {m['mean_dice']:.3f} on {m.get('cases', '?')} cases "
                f"({'with' if m.get('tta') else 'without'} flip TTA{hd})" + (f": {per_class}" if per_class else "")
            )
    suite = metrics.get("shift_suite")
    if isinstance(suite, dict) and suite.get("shifts"):
        shifts = ", ".join(f"{k} {v:.3f}" for k, v in suite["shifts"].items())
        lines.append(
            f"  shift suite   Dice {suite['shift_mean']:.3f} mean under site-like shifts ({shifts}; clean "
            f"{suite['clean']:.3f}, {suite.get('cases', '?')} cases)"
        )
    return lines


def _describe_step(step: dict) -> str:
    """One line for a step of ``training.earlier_training``: version, weights, budget, validation Dice."""

    def g(key, fmt="{}"):
        return fmt.format(step[key]) if step.get(key) is not None else "?"

    patch = "x".join(str(v) for v in step["patch_size"]) if step.get("patch_size") else "?"
    spacing = "x".join(f"{float(v):g}" for v in step["target_spacing"]) if step.get("target_spacing") else "?"
    return (
        f"{g('version'):8} {str(step.get('sha256') or '')[:8] or '-':8} {g('time')}: {g('epochs')} epochs x "
        f"{g('iterations_per_epoch')} steps x {g('batch_size')} crops {patch} at {spacing} mm; val mean Dice "
        f"{g('val_mean_dice', '{:.4f}')} ({g('val_cases')} cases)"
    )
