"""Measure a model's speed-mode candidates on its validation split; write the choice into model.json.

Usage:
    python tools/measure_inference.py MODEL DATASET --plan NAME=WINDOW,FLIPS[,crop] ... [--max-cases N]
        [--json OUT.json] [--write-card FAST_NAME ACCURATE_NAME] [--threads N]

Each ``--plan`` is one candidate (:class:`~AttentionMambaSegLib.card.PassPlan`): WINDOW is
``sliding`` or ``slice``, FLIPS 1, 2 or 4, ``crop`` adds the foreground crop. Every candidate scores
the same validation cases with the model's post-processing (Dice per class, each case's own
spacing) and times the prediction of each case on this machine (``--threads`` CPU threads). With
``--write-card`` the two named candidates become the model's ``fast`` and ``accurate`` modes in its
bundled model.json: ``inference.modes`` with their measured Dice and seconds, ``cpu_mode`` (``fast``
when its Dice is within 0.01 of ``accurate``), ``largest_slice`` (the largest padded slice of the
validation cases), and ``confidence`` (the threshold of :func:`calibrate` for each mode, on its
per-case confidence and Dice; ``threshold`` is the CPU mode's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

import AttentionMambaSegLib  # noqa: F401  (first: it sets torch's OpenMP wait policy)
from AttentionMambaSegLib import slicing
from AttentionMambaSegLib.card import FAST_DEFAULT_TOLERANCE, PassPlan
from AttentionMambaSegLib.datasets import load_dataset_info, read_case, split_cases
from AttentionMambaSegLib.evaluation import evaluate
from AttentionMambaSegLib.inference import InferenceSettings, Predictor
from AttentionMambaSegLib.package import bundled_models_dir, load_model_package

#: Cases whose Dice is below this quantile of the validation Dice (all segments pooled) count as poor.
POOR_QUANTILE = 0.10
#: The threshold flags at most this share of the validation segments (a flag on most results means nothing).
MAX_FLAGGED_SHARE = 0.20


def parse_plan(text: str) -> tuple[str, PassPlan]:
    """``NAME=WINDOW,FLIPS[,crop]`` -> (name, PassPlan)."""
    name, _, spec = text.partition("=")
    parts = spec.split(",")
    if not name or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "crop"):
        raise SystemExit(f"error: --plan {text!r}: expected NAME=WINDOW,FLIPS[,crop], e.g. fast=slice,1,crop")
    return name, PassPlan(parts[0], int(parts[1]), len(parts) == 3)


def largest_slice(package, dataset, case_ids) -> list[int]:
    """The largest (H, W) slice of the cases on the model's grid, padded to multiples of 32."""
    info = load_dataset_info(dataset)
    card = package.card
    largest = [32, 32]
    for case_id in case_ids:
        image, _ = read_case(info, case_id)
        geometry = slicing.SliceSource(image, card.target_spacing, card.axes_code, card.normalization).geometry
        largest = [max(a, -(-b // 32) * 32) for a, b in zip(largest, geometry.slice_shape)]
    return largest


def calibrate(rows: list[dict]) -> dict:
    """The confidence threshold that best separates poor segments from good ones (Youden's J), among
    those that flag at most :data:`MAX_FLAGGED_SHARE` of the segments.

    Args:
        rows: per-case rows of :func:`~AttentionMambaSegLib.evaluation.evaluate` (dice, confidence).

    Returns:
        ``{"threshold", "poor_dice_below", "pairs", "poor", "flagged", "sensitivity", "specificity"}``;
        threshold None when no segment is poor.
    """
    dice = np.array([r["dice"] for r in rows], dtype=np.float64)
    confidence = np.array([-1.0 if r["confidence"] is None else r["confidence"] for r in rows])
    poor_below = float(np.quantile(dice, POOR_QUANTILE))
    poor = dice < poor_below
    best = (-1.0, None)
    for t in np.unique(confidence[confidence >= 0]):
        flagged = confidence < t
        if flagged.mean() > MAX_FLAGGED_SHARE:
            break
        tpr = flagged[poor].mean() if poor.any() else 0.0
        fpr = flagged[~poor].mean() if (~poor).any() else 0.0
        if tpr - fpr > best[0]:
            best = (tpr - fpr, float(t))
    threshold = best[1] if poor.any() else None
    flagged = confidence < threshold if threshold is not None else confidence < 0
    return {
        "threshold": None if threshold is None else round(threshold, 4),
        "poor_dice_below": round(poor_below, 4),
        "pairs": int(dice.size),
        "poor": int(poor.sum()),
        "flagged": int(flagged.sum()),
        "sensitivity": round(float(flagged[poor].mean()), 3) if poor.any() else None,
        "specificity": round(float((~flagged[~poor]).mean()), 3) if (~poor).any() else None,
    }


def measure(package, dataset, plans: dict, case_ids: list, threads: int) -> dict:
    torch.set_num_threads(threads)
    results = {}
    for name, plan in plans.items():
        predictor = Predictor(package, InferenceSettings(device="cpu"), passes=plan)
        started = time.perf_counter()
        summary = evaluate(package, dataset, cases=case_ids, predictor=predictor)
        results[name] = {
            "plan": plan.__dict__,
            "passes": plan.describe(),
            "mean_dice": round(summary["mean_dice"], 4),
            "seconds_per_case": round(summary["seconds_mean"], 2),
            "per_class": {k: round(v["dice_mean"], 4) for k, v in summary["per_class"].items()},
            "rows": summary["per_case"],
        }
        print(
            f"{name:>12}: {plan.describe():<60} Dice {summary['mean_dice']:.4f}  {summary['seconds_mean']:.2f} s/case "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    return results


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the platform's name for it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_card(package, results: dict, fast: str, accurate: str, largest: list, command: str, cases: int) -> Path:
    path = bundled_models_dir() / package.id / "model.json"
    card = json.loads(path.read_text(encoding="utf-8"))
    machine = f"{cpu_name()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}"
    modes = {}
    for mode, name in (("fast", fast), ("accurate", accurate)):
        plan = dict(results[name]["plan"])
        plan["measured"] = {
            "mean_dice": results[name]["mean_dice"],
            "seconds_per_case": results[name]["seconds_per_case"],
        }
        modes[mode] = plan
    close = results[accurate]["mean_dice"] - results[fast]["mean_dice"] <= FAST_DEFAULT_TOLERANCE
    cpu_mode = "fast" if close else "accurate"
    card["inference"] = {
        "modes": modes,
        "cpu_mode": cpu_mode,
        "largest_slice": largest,
        "measurements": {
            "split": "val",
            "cases": cases,
            "machine": machine,
            "date": date.today().isoformat(),
            "command": command,
            "candidates": {
                k: {"passes": v["passes"], "mean_dice": v["mean_dice"], "seconds_per_case": v["seconds_per_case"]}
                for k, v in results.items()
            },
        },
    }
    calibration = {mode: calibrate(results[name]["rows"]) for mode, name in (("fast", fast), ("accurate", accurate))}
    card["confidence"] = {
        "measure": "mean_max_probability",
        "threshold": calibration[cpu_mode]["threshold"],
        "by_mode": {mode: c["threshold"] for mode, c in calibration.items()},
        "calibration": {"cases": cases, **calibration},
    }
    tmp = path.with_name(".model.json.tmp")
    tmp.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    load_model_package(path.parent)  # the card still reads
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("dataset")
    parser.add_argument("--plan", action="append", required=True, metavar="NAME=WINDOW,FLIPS[,crop]")
    parser.add_argument("--max-cases", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    parser.add_argument("--write-card", nargs=2, metavar=("FAST", "ACCURATE"), default=None)
    parser.add_argument(
        "--from-json",
        default=None,
        metavar="FILE",
        help="take the measurements from a --json file of an earlier run of the same plans",
    )
    args = parser.parse_args(argv)
    package = load_model_package(args.model)
    plans = dict(parse_plan(p) for p in args.plan)
    case_ids = split_cases(load_dataset_info(args.dataset), "val", 0)[: args.max_cases]
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        results, largest = {k: saved["results"][k] for k in plans}, saved["largest_slice"]
    else:
        results = measure(package, args.dataset, plans, case_ids, args.threads)
        largest = largest_slice(package, args.dataset, case_ids)
    print(f"largest padded slice: {largest}")
    if args.json and not args.from_json:
        Path(args.json).write_text(
            json.dumps({"largest_slice": largest, "results": results}, indent=1), encoding="utf-8"
        )
    if args.write_card:
        command = "python tools/measure_inference.py " + " ".join(
            [package.id, f"$DATASETS/{Path(args.dataset).name}"]
            + [f"--plan {p}" for p in args.plan]
            + (["--max-cases", str(args.max_cases)] if args.max_cases else [])
            + ["--write-card", *args.write_card]
        )
        print(f"written: {write_card(package, results, *args.write_card, largest, command, len(case_ids))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
