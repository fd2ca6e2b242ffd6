"""``attention-mamba-seg evaluate``: per-case Dice and HD95 of a model on a dataset.

Calls :func:`~AttentionMambaSegLib.evaluation.evaluate`, or
:func:`~AttentionMambaSegLib.evaluation.evaluate_shift_suite` (``--shift-suite``), or
:func:`~AttentionMambaSegLib.evaluation.score_label_files` for one prediction file.
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``evaluate`` subcommand."""
    p = subparsers.add_parser(
        "evaluate",
        help="score a model on a labelled dataset (Dice, HD95 per case and class)",
        description="Predict every case of a split with the model and report Dice and HD95 (mm) per case and class.",
    )
    p.add_argument("dataset", metavar="DATASET", nargs="?", help="nnU-Net v2 raw dataset folder")
    p.add_argument(
        "--model",
        help="model id or model folder (model.json + model.safetensors); needed with DATASET; "
        "with --prediction, optional: its class names and label values",
    )
    p.add_argument(
        "--prediction",
        metavar="FILE",
        help="score this labelmap file against --label (no model needed): any format segment writes "
        "(.seg.nrrd, .nii.gz, .nii, .nrrd, .mha, .png)",
    )
    p.add_argument("--label", metavar="FILE", help="the reference labelmap of --prediction (same grid)")
    p.add_argument("--split", choices=("val", "train", "all"), default="val", help="cases to score (default val)")
    p.add_argument("--fold", type=int, default=0, help="fold of splits_final.json (default 0)")
    p.add_argument("--output", default=None, metavar="CSV", help="per-case CSV (box plots go next to it as .png)")
    p.add_argument(
        "--mode",
        choices=("fast", "accurate"),
        default=None,
        help="speed mode (default: the model's for the device; see 'models info')",
    )
    p.add_argument(
        "--no-tta",
        dest="tta",
        action="store_false",
        default=None,
        help="no flip test-time augmentation, whatever the mode",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="slices per forward pass (default: 1 on a CPU, 4 on a GPU)"
    )
    p.add_argument(
        "--window",
        type=int,
        default=None,
        metavar="PIXELS",
        help="sliding-window size, a multiple of 32 (default: the model's inference_patch_size)",
    )
    p.add_argument(
        "--shift-suite",
        action="store_true",
        help="also score the cases under the site-like shifts of the model's kind (dermoscopy: colour cast, "
        "scale, vignette, blur; MRI: bias field, contrast, noise, coarser resolution); 5 evaluations",
    )
    p.add_argument(
        "--max-cases",
        type=int,
        default=None,
        metavar="N",
        help="score only the first N cases of the split (a quicker estimate)",
    )
    p.add_argument("--json", default=None, metavar="FILE", help="write the summary (or the shift-suite table) as JSON")
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing --output / --json files (an input is never replaced)"
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate with a tqdm bar over cases and print the summary; returns the exit code."""
    from ..evaluation import evaluate, evaluate_shift_suite, format_shift_suite, format_summary
    from ._progress import Bar
    from .segment import inference_settings

    if args.prediction or args.label:
        return _score_files(args)
    if not args.dataset or not args.model:
        raise SystemExit(
            "error: give DATASET and --model (score a model on a dataset), or --prediction FILE and "
            "--label FILE (score one prediction)"
        )
    _check_outputs(args, [args.dataset])
    settings = inference_settings(args, window=args.window, overwrite=args.overwrite)
    progress = Bar("case", fractional=True)

    try:
        if args.shift_suite:
            if args.output is not None or args.window is not None:
                raise SystemExit(
                    "error: --shift-suite writes no per-case CSV and uses the model's window: "
                    "leave out --output and --window (use --json FILE for the table)"
                )
            summary = evaluate_shift_suite(
                args.model,
                args.dataset,
                settings,
                split=args.split,
                fold=args.fold,
                cases=_first_cases(args),
                progress=progress,
            )
        else:
            summary = evaluate(
                args.model,
                args.dataset,
                settings,
                split=args.split,
                fold=args.fold,
                cases=_first_cases(args),
                output=args.output,
                progress=progress,
            )
    finally:
        progress.close()
    assert summary is not None  # evaluated without a cancel event
    print(format_shift_suite(summary) if args.shift_suite else format_summary(summary))
    _write_json(args, summary, [args.dataset])
    return 0


def _check_outputs(args: argparse.Namespace, inputs: list) -> None:
    """Before any work: --output (and its box plot) and --json may be written (never over an input)."""
    from pathlib import Path

    from ..outputs import check_output_path

    paths = [Path(args.json)] if args.json else []
    if getattr(args, "output", None) and not args.prediction:
        paths += [Path(args.output), Path(args.output).with_suffix(".png")]
    for path in paths:
        check_output_path(path, overwrite=args.overwrite, inputs=inputs)


def _write_json(args: argparse.Namespace, data, inputs: list) -> None:
    """``--json FILE``: ``data`` as JSON, under the output rule; "Wrote" only once it is in place."""
    if not args.json:
        return
    import logging

    from ..outputs import write_text_output

    write_text_output(args.json, json.dumps(data, indent=1) + "\n", overwrite=args.overwrite, inputs=inputs)
    logging.getLogger(__name__).info("Wrote %s", args.json)


def _first_cases(args: argparse.Namespace):
    """The first ``--max-cases`` case ids of the split, or None for all of them."""
    if args.max_cases is None:
        return None
    from ..datasets import load_dataset_info, split_cases

    if args.max_cases < 1:
        raise SystemExit("error: --max-cases must be at least 1")
    return split_cases(load_dataset_info(args.dataset), args.split, args.fold)[: args.max_cases]


def _score_files(args: argparse.Namespace) -> int:
    """``--prediction P --label L [--model M]``: Dice and HD95 per class (by name) and their mean."""
    from ..evaluation import format_file_scores, score_label_files

    if not (args.prediction and args.label) or args.dataset:
        raise SystemExit(
            "error: --prediction and --label go together, without DATASET (--model is optional: it names the classes)"
        )
    if args.output:
        raise SystemExit(
            "error: --output writes the per-case CSV of a dataset evaluation; with --prediction and "
            "--label use --json FILE"
        )
    inputs = [args.prediction, args.label]
    _check_outputs(args, inputs)
    model = None
    if args.model:
        from ..registry import ensure_model

        model = ensure_model(args.model)
    result = score_label_files(args.prediction, args.label, model)
    print(format_file_scores(result))
    _write_json(args, result, inputs)
    return 0
