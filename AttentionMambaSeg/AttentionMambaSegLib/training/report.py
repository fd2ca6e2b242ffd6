"""The run's report: the per-epoch log (CSV) and the training curves (PNG)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

__all__ = ["write_log", "plot_curves"]


def write_log(history: list[dict], path: Path) -> None:
    if not history:
        return
    fields = list(history[0].keys())
    for row in history[1:]:
        fields.extend(k for k in row if k not in fields)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], label="train loss (deep supervision, 9 outputs)")
    ax1.plot(epochs, [r["train_loss_fused"] for r in history], label="train loss (fused output)")
    ax1.plot(epochs, [r["val_loss"] for r in history], label="val loss (fused output)")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    ax2.plot(epochs, [r["val_dice_mean"] for r in history], label="mean", linewidth=2)
    for key in history[0]:
        if key.startswith("val_dice_") and key != "val_dice_mean":
            ax2.plot(epochs, [r[key] for r in history], label=key[len("val_dice_") :], linewidth=1)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation Dice (pooled over slices)")
    ax2.set_ylim(0, 1)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
