"""``attention-mamba-seg train``: train Attention-Mamba on an nnU-Net v2 raw dataset.

Every option is a field of :class:`~AttentionMambaSegLib.training.TrainingConfig` of the same name (the one list of
settings); the command builds the config and calls :func:`~AttentionMambaSegLib.training.train`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import threading


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="train a model on an nnU-Net v2 raw dataset",
        description="Train Attention-Mamba (arXiv 2402.02286) on one fold of an nnU-Net v2 raw dataset with the "
        "paper's recipe; the model package is written to OUTPUT/model.",
    )
    _add_data_arguments(p)
    _add_schedule_arguments(p)
    _add_model_arguments(p)
    _add_network_arguments(p)
    p.set_defaults(func=run)
    return p


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The dataset, the run folder and the fold."""
    p.add_argument(
        "dataset", metavar="DATASET", help="dataset folder (dataset.json, imagesTr, labelsTr, splits_final.json)"
    )
    p.add_argument(
        "--output", required=True, metavar="DIR", help="run folder (checkpoints, logs, curves; package in DIR/model)"
    )
    p.add_argument("--fold", type=int, default=0, help="fold of splits_final.json (default 0)")


def _add_schedule_arguments(p: argparse.ArgumentParser) -> None:
    """Epochs, crops, optimiser, time budget, validation, and stopping and resuming."""
    p.add_argument("--epochs", type=int, default=150, help="epochs (default 150; an upper bound under --time-budget)")
    p.add_argument(
        "--patch", dest="patch_size", type=int, default=192, help="crop size in pixels, multiple of 32 (default 192)"
    )
    p.add_argument("--batch-size", type=int, default=24, help="crops per step (default 24)")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate (default 5e-4)")
    p.add_argument("--weight-decay", type=float, default=5e-2, help="AdamW weight decay (default 5e-2)")
    p.add_argument(
        "--time-budget",
        dest="time_budget_minutes",
        type=float,
        default=None,
        metavar="MINUTES",
        help="fit the whole run into this many wall-clock minutes",
    )
    p.add_argument(
        "--iterations-per-epoch", type=int, default=None, help="steps per epoch (default: one pass, or the budget's)"
    )
    p.add_argument(
        "--val-slices", type=int, default=None, help="validation slices per epoch (default: all, or the budget's)"
    )
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint_latest.pt")
    p.add_argument("--stop-after-epoch", type=int, default=None, help="stop after this many epochs (resume later)")
    p.add_argument(
        "--package-on-stop",
        action="store_true",
        help="with --stop-after-epoch: write the model package of the best epoch so far",
    )


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The device, the seed and the model package's id and version."""
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--seed", type=int, default=1290, help="random seed (default 1290, the paper's)")
    p.add_argument("--model-id", default=None, help="model.json id (default <dataset>-attention-mamba)")
    p.add_argument("--model-version", default="1.0.0", help="model.json version (default 1.0.0)")


def _add_network_arguments(p: argparse.ArgumentParser) -> None:
    """The network's output, geometry, starting weights, precision and augmentation, and the final evaluation."""
    p.add_argument(
        "--activation",
        choices=("auto", "softmax", "sigmoid"),
        default="auto",
        help="output activation (auto: sigmoid for one foreground label, else softmax)",
    )
    p.add_argument(
        "--axes-code", default="LPS", help="orientation volumes are reoriented to before slicing (default LPS)"
    )
    p.add_argument("--backbone-checkpoint", default=None, help="pretrained deep-stem ResNet-18 weights (optional)")
    p.add_argument(
        "--target-spacing",
        type=float,
        nargs=2,
        default=None,
        metavar=("ROW", "COL"),
        help="in-plane spacing slices are resampled to (mm; pixels for photos); default: the "
        "--init-from model's, else the median of the data",
    )
    p.add_argument(
        "--init-from",
        default=None,
        metavar="MODEL",
        help="start from this model package's weights (id or folder) instead of random ones",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 autocast (faster on GPUs and CPUs with AVX-512 BF16 or AMX; emulated and much slower on "
        "other CPUs)",
    )
    p.add_argument(
        "--augmentation",
        choices=("paper", "site"),
        default="paper",
        help="paper: rotation, flips, zoom, gamma (the paper's); site: also the colour, contrast, blur, "
        "noise, resolution, vignette, hair and bias-field changes between sites and devices",
    )
    p.add_argument(
        "--no-final-evaluation",
        dest="final_evaluation",
        action="store_false",
        help="skip the per-case evaluation of the final model on the validation cases",
    )


def run(args: argparse.Namespace) -> int:
    """Run training with a tqdm progress bar; returns the exit code."""
    from dataclasses import fields

    from ..training import ConfigError, TrainingConfig, train
    from ._progress import Bar

    bar = Bar("step")

    def progress(done: int, total: int, info: dict) -> None:
        bar(done, total)
        bar.describe(f"epoch {info['epoch']}/{info['epochs']}", loss=f"{info['loss']:.4f}", lr=f"{info['lr']:.2e}")

    settings = {f.name: getattr(args, f.name) for f in fields(TrainingConfig) if hasattr(args, f.name)}
    settings["command"] = "attention-mamba-seg " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        config = TrainingConfig(**settings)
    except ConfigError as e:
        raise SystemExit(f"error: {e.for_cli()}") from None
    cancel = threading.Event()
    try:
        package = train(config, progress=progress, cancel=cancel)
    except ConfigError as e:
        raise SystemExit(f"error: {e.for_cli()}") from None
    finally:
        bar.close()
    from .. import distributed

    main_rank = distributed.context().is_main
    distributed.teardown()
    if not main_rank:
        return 0  # rank 0 reports
    if package is None:
        print(
            f"stopped before the end; continue with: attention-mamba-seg train {args.dataset} "
            f"--output {args.output} --resume"
        )
        return 0
    print(f"model package: {package}")
    return 0
