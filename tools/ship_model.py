"""Evaluate a trained run and ship its model package into ``AttentionMambaSeg/Resources/Models/<id>``.

Usage:
    python tools/ship_model.py RUN_DIR DATASET [--tta] [--window PIXELS] [--largest-component LABEL ...]
                               [--reference-cases 2] [--fp32-cases 4] [--max-cases N] [--also-tta] [--force]

1. Scores the float16 package (RUN_DIR/model) on the validation split (Dice and HD95 per class, each
   case's own spacing; with --tta the paper's 4-flip averaging) and writes ``val_metrics.csv`` and the
   box plot in RUN_DIR; with --also-tta it scores the split again with TTA (``val_metrics_tta.csv``).
2. Scores the float32 weights of the same epoch (RUN_DIR/checkpoint_best.pt) and the float16 package
   on the first ``--fp32-cases`` validation cases without TTA: the Dice change from storing float16.
3. Records in model.json: ``metrics.val`` (per class mean/sd; ``metrics.val_tta`` with --also-tta),
   ``metrics.float16_vs_float32`` and
   ``metrics.reference_cases`` (per-case Dice without TTA on the first ``--reference-cases`` validation
   cases, which Testing/test_bundled_models.py reproduces) and, with --window, ``inference_patch_size``
   and, with --largest-component, ``postprocessing`` (every score above then uses that sliding window
   and post-processing), then copies the package (weights and
   model.json only) to the bundled models folder, atomically.
4. A bundled model of the same id that scored higher on the same validation cases (same TTA setting) is
   not replaced unless ``--force``: the scored model.json is then left in RUN_DIR/model_scored.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

import AttentionMambaSegLib  # noqa: F401  (first: it sets torch's OpenMP wait policy)
from AttentionMambaSegLib.datasets import load_dataset_info, split_cases
from AttentionMambaSegLib.evaluation import evaluate, format_summary
from AttentionMambaSegLib.inference import InferenceSettings
from AttentionMambaSegLib.package import bundled_models_dir, load_model_package, sha256_of_file


def per_case_dice(summary: dict) -> dict:
    out: dict = {}
    for row in summary["per_case"]:
        out.setdefault(row["case"], {})[row["class"]] = round(float(row["dice"]), 6)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("dataset", type=Path)
    p.add_argument("--tta", action="store_true", help="4-flip TTA for the validation metrics")
    p.add_argument(
        "--also-tta",
        action="store_true",
        help="score the validation split a second time with 4-flip TTA (recorded as metrics.val_tta)",
    )
    p.add_argument("--reference-cases", type=int, default=2)
    p.add_argument("--fp32-cases", type=int, default=4)
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help="sliding window for inference (pixels, multiple of 32), recorded as inference_patch_size",
    )
    p.add_argument(
        "--largest-component",
        type=int,
        nargs="+",
        default=None,
        metavar="LABEL",
        help="post-process: keep the largest connected component of these label values "
        "(recorded as postprocessing.largest_component)",
    )
    p.add_argument("--max-cases", type=int, default=None, help="score only the first N validation cases")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the bundled model even if it scored higher on the same validation cases",
    )
    args = p.parse_args(argv)

    package = load_model_package(args.run_dir / "model")
    if args.window:
        package.card = replace(package.card, inference_patch_size=(args.window, args.window))
    if args.largest_component:
        package.card = replace(package.card, postprocessing={"largest_component": sorted(set(args.largest_component))})
    info = load_dataset_info(args.dataset)
    val_cases = split_cases(info, "val", 0)
    cases = val_cases[: args.max_cases] if args.max_cases else val_cases
    summary = evaluate(
        package,
        args.dataset,
        InferenceSettings(device="cpu", tta=args.tta),
        cases=cases,
        output=args.run_dir / "val_metrics.csv",
    )
    print(format_summary(summary))
    command = "python " + " ".join([Path(sys.argv[0]).as_posix()] + [str(a) for a in (argv or sys.argv[1:])])

    def record(s: dict, tta: bool) -> dict:
        return {
            "split": "val" if not args.max_cases else f"first {len(cases)} val cases",
            "cases": s["cases"],
            "tta": tta,
            "mean_dice": round(s["mean_dice"], 4),
            "mean_hd95_mm": round(s["mean_hd95"], 2),
            "per_class": {k: {m: round(float(v), 4) for m, v in d.items()} for k, d in s["per_class"].items()},
            "command": command,
        }

    # Keep a bundled model that scored higher on the same cases (decided before the slower scores below).
    new_val = record(summary, bool(args.tta))
    bundled_json = bundled_models_dir() / package.card.id / "model.json"
    if bundled_json.exists() and not args.force:
        old_val = load_model_package(bundled_json.parent).card.metrics.get("val") or {}
        same = (old_val.get("cases"), old_val.get("tta"), old_val.get("split")) == (
            new_val["cases"],
            new_val["tta"],
            new_val["split"],
        )
        if same and old_val.get("mean_dice", -1.0) > new_val["mean_dice"]:
            scored = args.run_dir / "model_scored.json"
            scored.write_text(
                json.dumps(
                    {**package.card.to_dict(), "metrics": {**package.card.metrics, "val": new_val}},
                    indent=2,
                    ensure_ascii=False,
                )
                + "\n",
                encoding="utf-8",
            )
            print(
                f"not shipped: the bundled {package.card.id} scored {old_val['mean_dice']:.4f} on the same "
                f"{new_val['cases']} cases, this run {new_val['mean_dice']:.4f} (--force replaces it anyway); "
                f"scores in {scored}"
            )
            return 1
    summary_tta = None
    if args.also_tta and not args.tta:
        summary_tta = evaluate(
            package,
            args.dataset,
            InferenceSettings(device="cpu", tta=True),
            cases=cases,
            output=args.run_dir / "val_metrics_tta.csv",
        )
        print("with 4-flip TTA:")
        print(format_summary(summary_tta))

    # float16 (shipped) vs float32 (trained) weights, same epoch, no TTA
    sub = val_cases[: args.fp32_cases]
    s16 = evaluate(package, args.dataset, InferenceSettings(device="cpu", tta=False), cases=sub)
    state = torch.load(args.run_dir / "checkpoint_best.pt", map_location="cpu", weights_only=True)["model"]
    net32 = package.build_network("cpu").float()
    net32.load_state_dict(state)
    package32 = load_model_package(args.run_dir / "model")
    package32.card = replace(
        package32.card,
        inference_patch_size=package.card.inference_patch_size,
        postprocessing=package.card.postprocessing,
    )
    package32.build_network = lambda device="cpu": net32.to(device).eval()
    s32 = evaluate(package32, args.dataset, InferenceSettings(device="cpu", tta=False), cases=sub)
    delta = 100 * (s16["mean_dice"] - s32["mean_dice"])
    print(
        f"float16 vs float32 on {len(sub)} validation cases (no TTA): mean Dice {100 * s16['mean_dice']:.2f} vs "
        f"{100 * s32['mean_dice']:.2f} % ({delta:+.3f} points)"
    )

    ref = evaluate(
        package, args.dataset, InferenceSettings(device="cpu", tta=False), cases=val_cases[: args.reference_cases]
    )
    config = package.card.to_dict()
    metrics = dict(config.get("metrics") or {})
    metrics["val"] = new_val
    if summary_tta is not None:
        metrics["val_tta"] = record(summary_tta, True)
    metrics["float16_vs_float32"] = {
        "cases": sub,
        "tta": False,
        "mean_dice_float16": round(s16["mean_dice"], 5),
        "mean_dice_float32": round(s32["mean_dice"], 5),
        "difference_points": round(delta, 4),
    }
    metrics["reference_cases"] = {"tta": False, "dice": per_case_dice(ref)}
    config["metrics"] = metrics

    target = bundled_models_dir() / config["id"]
    with tempfile.TemporaryDirectory(dir=bundled_models_dir()) as tmp:
        tmp = Path(tmp) / config["id"]
        tmp.mkdir()
        shutil.copy2(package.path / "model.safetensors", tmp / "model.safetensors")
        assert sha256_of_file(tmp / "model.safetensors") == config["sha256"]
        (tmp / "model.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    print(f"shipped {config['id']} to {target}")
    load_model_package(config["id"]).verify()
    return 0


if __name__ == "__main__":
    sys.exit(main())
