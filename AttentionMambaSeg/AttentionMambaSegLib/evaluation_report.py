"""What an evaluation writes and prints: the summary tables, the per-case CSV and the box plots.

The summaries come from :func:`~AttentionMambaSegLib.evaluation.evaluate` and
:func:`~AttentionMambaSegLib.evaluation.evaluate_shift_suite`; the files are written under the output rule
of :mod:`~AttentionMambaSegLib.outputs` (a temporary file, checked, then renamed).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

__all__ = ["format_shift_suite", "format_summary", "write_csv", "plot_boxes", "png_readable"]

logger = logging.getLogger(__name__)


def format_shift_suite(result: dict) -> str:
    """Human-readable table of :func:`~AttentionMambaSegLib.evaluation.evaluate_shift_suite`: mean Dice clean
    and per shift."""
    lines = [
        f"model {result['model']} {result.get('version', '')} on {result['cases']} case(s) of {result['dataset']} "
        f"({result['split']}, TTA {'on' if result['tta'] else 'off'}), {result['suite']} shift suite",
        f"{'':<14} {'mean Dice':>10}  change",
        f"{'clean':<14} {result['clean']:>10.4f}",
    ]
    for name, dice in result["shifts"].items():
        lines.append(f"{name:<14} {dice:>10.4f}  {result['descriptions'][name]}")
    lines.append(f"{'shift mean':<14} {result['shift_mean']:>10.4f}")
    return "\n".join(lines)


def format_summary(summary: dict) -> str:
    """Human-readable table: mean and sd per class, and the mean over classes."""
    lines = [
        f"model {summary.get('model', '?')} on {summary['cases']} case(s) of {summary.get('dataset', '?')} "
        f"({summary.get('split', '?')}, TTA {'on' if summary['tta'] else 'off'})",
        f"{'class':<28} {'Dice mean':>10} {'sd':>8} {'HD95 mm':>10} {'sd':>8}",
    ]
    for name, v in summary["per_class"].items():
        lines.append(
            f"{name:<28} {v['dice_mean']:>10.4f} {v['dice_sd']:>8.4f} {v['hd95_mean']:>10.2f} {v['hd95_sd']:>8.2f}"
        )
    lines.append(f"{'mean of classes':<28} {summary['mean_dice']:>10.4f} {'':>8} {summary['mean_hd95']:>10.2f}")
    lines.append(f"({summary['conventions']})")
    if "label_values_found" in summary:
        lines.append(f"label values found in the references: {summary['label_values_found']}")
    not_scored = summary.get("label_values_not_scored") or {}
    if not_scored:
        lines.append(
            "not predicted by the model, so in no figure above: "
            + ", ".join(f"label value {v} ({n} case(s))" for v, n in not_scored.items())
        )
    return "\n".join(lines)


def write_csv(summary: dict, path: Path, *, overwrite: bool = False, inputs=()) -> None:
    """The per-case table as CSV, under the output rule (:mod:`.outputs`)."""
    import io as text_io

    from .outputs import write_text_output

    fields = [
        "case",
        "class",
        "label_value",
        "dice",
        "hd95_mm",
        "pred_voxels",
        "ref_voxels",
        "confidence",
        "needs_review",
        "seconds",
    ]
    f = text_io.StringIO(newline="")
    f.write(
        f"# model {summary.get('model', '?')}, dataset {summary.get('dataset', '?')}, "
        f"split {summary.get('split', '?')}, "
        f"TTA {'on' if summary['tta'] else 'off'}, mode {summary.get('mode', '?')}\n"
    )
    f.write(
        "# Dice = 2|P and G| / (|P| + |G|); HD95 = 95th percentile of the pooled symmetric surface distances, "
        "in mm with each case's own spacing\n"
    )
    f.write(f"# empty masks: {summary['conventions']}\n")
    if summary.get("label_values_not_scored"):
        f.write(f"# label values not predicted by the model, in no row: {summary['label_values_not_scored']}\n")
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for row in summary["per_case"]:
        writer.writerow({k: (f"{row.get(k):.6f}" if isinstance(row.get(k), float) else row.get(k)) for k in fields})
    write_text_output(path, f.getvalue(), overwrite=overwrite, inputs=inputs)
    logger.info("Wrote per-case metrics %s", path)


def plot_boxes(summary: dict, path: Path, *, overwrite: bool = False, inputs=()) -> None:
    """Box plots of Dice and HD95 per class as PNG, under the output rule (:mod:`.outputs`)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .outputs import write_output

    names = list(summary["per_class"])
    dice = [[r["dice"] for r in summary["per_case"] if r["class"] == n] for n in names]
    hd = [[r["hd95_mm"] for r in summary["per_case"] if r["class"] == n] for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(4 + 1.6 * len(names), 4))
    ax1.boxplot(dice)
    ax1.set_xticks(range(1, len(names) + 1), names, rotation=20, fontsize=8)
    ax1.set_ylabel("Dice")
    ax1.set_ylim(0, 1.02)
    ax2.boxplot(hd)
    ax2.set_xticks(range(1, len(names) + 1), names, rotation=20, fontsize=8)
    ax2.set_ylabel("HD95 (mm)")
    fig.suptitle(f"{summary.get('model', '')}: {summary['cases']} case(s), {summary.get('split', '')}", fontsize=9)
    fig.tight_layout()
    try:
        with write_output(path, overwrite=overwrite, inputs=inputs, verify=png_readable) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    logger.info("Wrote box plots %s", path)


def png_readable(path: Path) -> None:
    """Read a written PNG to its end (raises on a truncated file)."""
    from PIL import Image

    with Image.open(path) as png:
        png.load()
