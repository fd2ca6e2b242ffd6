"""``attention-mamba-seg segment``: segment image files or DICOM folders with a model package."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``segment`` subcommand."""
    parser = subparsers.add_parser(
        "segment",
        help="segment images with a model",
        description=(
            "Segment 2D/3D images (NIfTI, NRRD, MHA, PNG, JPEG, or a DICOM series folder). The output "
            "format follows the OUTPUT extension: .seg.nrrd (3D Slicer segmentation with names, colours "
            "and terminology), .nii.gz / .nii / .nrrd / .mha (uint8 labelmap on the input grid), .png (2D: 0 and 255 "
            "for one class, else a palette PNG in the class colours), .dcm (a "
            "DICOM Segmentation referencing a DICOM series input, for PACS; needs highdicom). "
            "With several inputs (or a folder of images) OUTPUT is a folder, created when missing; outputs are "
            "named after the inputs without the channel suffix _0000, and summary.csv lists each input's "
            "segment volumes and review flags. Beside each output, NAME.report.json gives each segment's volume "
            "(mL; area in mm2 for 2D, in px for a photograph), confidence and whether it needs review."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, DICOM folder, or folder of image files")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="output file, or a folder (created when missing; write out/ for one input)",
    )
    parser.add_argument("--model", required=True, help="model id (see `models list`) or model folder")
    add_prediction_options(parser)
    _add_window_and_output_options(parser)
    _add_input_options(parser)
    _add_run_options(parser)
    parser.set_defaults(func=run)
    return parser


def _add_window_and_output_options(parser: argparse.ArgumentParser) -> None:
    """The sliding window, the file type written into an output folder, and replacing outputs."""
    parser.add_argument(
        "--window",
        type=positive_int,
        default=None,
        metavar="PIXELS",
        help="sliding-window size at the model's spacing, a multiple of 32 (default: the model's inference_patch_size)",
    )
    parser.add_argument(
        "--output-format",
        default="seg.nrrd",
        choices=["seg.nrrd", "nii.gz", "nii", "nrrd", "mha", "png", "dicom-seg"],
        help="file type written into an output folder (default seg.nrrd; dicom-seg: a DICOM "
        "Segmentation .dcm of each DICOM series input)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing output files (an input is never replaced)"
    )


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    """How the inputs are read and where they are segmented, and how progress is shown."""
    parser.add_argument(
        "--nifti-transform",
        choices=("qform", "sform"),
        default=None,
        help="for a NIfTI input whose qform and sform disagree: the one that places the image "
        "(default: such a file is refused, naming both)",
    )
    parser.add_argument(
        "--progress-format",
        default="bar",
        choices=["bar", "jsonl"],
        help="bar (default): a progress bar on stderr; jsonl: one JSON object per line on "
        "stdout for programs that run this command (events: device, progress, log, "
        "written, error; see AttentionMambaSegLib.slicer.child_process)",
    )
    parser.add_argument(
        "--roi",
        default=None,
        metavar="ROI",
        help="segment only inside this box: a Slicer markups ROI file (.mrk.json, in the "
        "coordinate system it states) or CX,CY,CZ,SX,SY,SZ: centre in RAS mm (as Slicer shows "
        "coordinates) and size in mm (write --roi=-10,... when the first number is negative); the labels "
        "are zero outside it (3D images)",
    )
    parser.add_argument(
        "--series",
        default=None,
        metavar="CHOICE",
        help="for a DICOM folder with several series: its number in the listing, its "
        "SeriesInstanceUID or part of its SeriesDescription (default: the model's modality, "
        "original before derived, then the most files; the log lists them all)",
    )


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """A modality check overridden, outline overlays, and going on past a failing input."""
    parser.add_argument(
        "--force",
        action="store_true",
        help="segment even an image of another modality than the model's (e.g. a CT with an "
        "MR model); the result is then not to be trusted",
    )
    parser.add_argument(
        "--overlay",
        action="store_true",
        help="also write NAME_overlay.png: the input (a photograph or 2D image) with each segment's "
        "outline in its class colour",
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="with an output folder: a failing input is reported and the others are still "
        "segmented, with a summary at the end (always so under torchrun, where each "
        "process segments its share of the inputs)",
    )


def add_prediction_options(parser: argparse.ArgumentParser) -> None:
    """The options of every command that runs the network: --device, --mode, --no-tta, --batch-size."""
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--mode",
        choices=("fast", "accurate"),
        default=None,
        help="fast: fewer network passes; accurate: 4 flips (default: the model's choice for the "
        "device, see 'models info')",
    )
    parser.add_argument(
        "--no-tta",
        dest="tta",
        action="store_false",
        default=None,
        help="no flip test-time augmentation, whatever the mode",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="slices per forward pass (default: 1 on a CPU, 4 on a GPU)",
    )


def inference_settings(args: argparse.Namespace, **more):
    """The :class:`~AttentionMambaSegLib.inference.InferenceSettings` of the options of
    :func:`add_prediction_options` (--device, --mode, --no-tta, --batch-size), with ``more`` settings."""
    from ..inference import InferenceSettings

    flags = {"device": args.device, "mode": args.mode, "tta": args.tta, "batch_size": getattr(args, "batch_size", None)}
    return InferenceSettings(**{**flags, **more})


def _segment_settings(args: argparse.Namespace, **more):
    """The settings of every ``segment`` flag; ``--roi`` is read here (a bad one fails before any work)."""
    settings = inference_settings(
        args,
        window=args.window,
        force=args.force,
        output_format=args.output_format,
        overwrite=args.overwrite,
        overlay=args.overlay,
        nifti_transform=args.nifti_transform,
        roi=args.roi or None,
        **more,
    )
    return settings.replace(roi=settings.region_of_interest())


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (the error names the value, not this function)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Run ``segment``; returns the exit code."""
    if args.progress_format == "jsonl":
        return _run_jsonl(args)
    from ._progress import Bar

    bars: list[Bar] = []

    def progress_factory(name: str):
        bars.append(Bar("slice", desc=name))
        return bars[-1]

    try:
        written = _segment(args, progress_factory)
    finally:
        for bar in bars:
            bar.close()
    for path in written:
        print(path)
    return 0


def _segment(args: argparse.Namespace, progress_factory) -> list:
    from ..registry import ensure_model

    if args.keep_going or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _segment_archive(args, progress_factory)
    from ..inference import segment_files

    model = ensure_model(args.model)  # a registry model that is not installed yet is downloaded first
    inputs = expand_inputs(args.inputs)
    folder_of_images = inputs != [Path(text) for text in args.inputs]
    output = args.output
    if folder_of_images and not Path(output).suffix and not Path(output).is_file():
        output = os.path.join(output, "")  # a folder of images is a batch: OUTPUT is a folder, with summary.csv
    settings = _segment_settings(args, summary=True if folder_of_images else None)
    return segment_files(inputs, output, model, settings, progress_factory=progress_factory, series=args.series)


def _run_jsonl(args: argparse.Namespace) -> int:
    """``--progress-format jsonl``: every message as one JSON line on stdout (the Slicer module reads them)."""
    from ..slicer.child_process import emit_event, jsonl_events

    def progress_factory(name: str):
        def progress(done: int, total: int) -> None:
            emit_event("progress", input=name, done=int(done), total=int(total), unit="slices")

        return progress

    with jsonl_events():
        written = _segment(args, progress_factory)
    from ..inference.file_runner import report_path_for

    for path in written:
        emit_event("written", path=str(path.resolve()), report=str(report_path_for(path).resolve()))
    return 0


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Inputs with each folder of image files (no DICOM) replaced by its image files, sorted by name."""
    from ..images import IMAGE_EXTENSIONS, path_extension

    expanded = []
    for text in inputs:
        path = Path(text)
        files = (
            sorted(
                p
                for p in path.iterdir()
                if p.is_file() and path_extension(p) in IMAGE_EXTENSIONS and path_extension(p) != ".dcm"
            )
            if path.is_dir()
            else []
        )
        expanded.extend(files or [path])
    return expanded


def _segment_archive(args: argparse.Namespace, progress_factory) -> list:
    """Each rank (or the only process) segments its share of the inputs; rank 0 prints the summary.

    Raises:
        RuntimeError: some inputs failed (after every other input was written and the summary printed).
    """
    import torch

    from .. import distributed
    from ..inference import segment_archive
    from ..inference.file_runner import SUMMARY_NAME, write_summary
    from ..outputs import check_output_path
    from ..registry import ensure_model

    ctx = distributed.setup(args.device)
    try:
        inputs = expand_inputs(args.inputs)
        summary = Path(args.output) / SUMMARY_NAME if len(inputs) > 1 else None
        if summary is not None:  # before any work, on every rank (so that all of them stop)
            check_output_path(summary, overwrite=args.overwrite, inputs=inputs, create_folder=True)
        if ctx.distributed and not str(distributed.device_for(ctx, args.device)).startswith("cuda"):
            local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))  # the CPU cores split between ranks
        if ctx.is_main:
            ensure_model(args.model)  # a registry model is downloaded once, by rank 0
        distributed.broadcast_object(None)  # the others wait for it
        model = ensure_model(args.model)
        settings = _segment_settings(args, device=distributed.device_for(ctx, args.device))
        written, failed = segment_archive(
            inputs[ctx.rank :: ctx.world_size],
            args.output,
            model,
            settings,
            progress_factory=progress_factory,
            series=args.series,
        )
        results = distributed.all_gather_objects((written, failed))
    finally:
        distributed.teardown()
    all_written = [w for part in results for w in part[0]]
    all_failed = [f for part in results for f in part[1]]
    if ctx.is_main:
        print(
            f"segmented {len(all_written)} of {len(inputs)} inputs"
            + (f", {len(all_failed)} failed:" if all_failed else ""),
            file=sys.stderr,
        )
        for source, error in sorted(all_failed):
            print(f"  FAILED {source}: {error}", file=sys.stderr)
        if summary is not None and all_written:
            write_summary(sorted(all_written), summary, overwrite=args.overwrite, inputs=inputs)
    if all_failed:
        raise RuntimeError(
            f"{len(all_failed)} of {len(inputs)} inputs failed: "
            + "; ".join(f"{Path(s).name} ({e})" for s, e in sorted(all_failed))
        )
    return [Path(p) for _, p in sorted(all_written)] if ctx.is_main else []
