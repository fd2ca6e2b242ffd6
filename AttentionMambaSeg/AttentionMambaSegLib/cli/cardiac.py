"""``attention-mamba-seg cardiac``: ventricular function (EDV, ESV, SV, EF, LV mass) from a cine."""

from __future__ import annotations

import argparse
import sys

from .segment import add_prediction_options, inference_settings, positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``cardiac`` subcommand."""
    parser = subparsers.add_parser(
        "cardiac",
        help="ventricular function from a short-axis cine",
        description=(
            "Segment every frame of a short-axis cardiac cine and report the ventricular function: LV and RV "
            "end-diastolic and end-systolic volumes, stroke volumes and ejection fractions, and the LV myocardial "
            "mass (ACDC definitions, Bernard et al., IEEE TMI 2018). INPUT is a 4D cine (NIfTI with a time axis, a "
            ".seq.nrrd sequence, or a DICOM folder with several temporal positions per slice location), or several "
            "3D volumes in time order; two volumes are the ED and the ES frame, in that order. ED and ES are "
            "otherwise the frames of largest and smallest LV cavity volume, unless --ed and --es name them. "
            "OUT_FOLDER receives function.json, the ED and ES labelmaps, volume_curve.png (and frames/ with "
            "--all-frames); the table is printed."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="4D cine file or DICOM cine folder, or 3D volumes")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT_FOLDER",
        help="output folder (created when missing; its parent must exist)",
    )
    parser.add_argument(
        "--model",
        default="cardiac-acdc",
        help="a cardiac model with RV, LV myocardium and LV classes (default cardiac-acdc)",
    )
    parser.add_argument(
        "--ed",
        type=positive_int,
        default=None,
        metavar="N",
        help="end-diastolic frame number, counted from 1 (default: largest LV cavity volume)",
    )
    parser.add_argument(
        "--es",
        type=positive_int,
        default=None,
        metavar="N",
        help="end-systolic frame number, counted from 1 (default: smallest LV cavity volume)",
    )
    parser.add_argument(
        "--height-cm",
        type=float,
        default=None,
        metavar="CM",
        help="patient height in cm (with --weight-kg: values indexed to body surface area, Mosteller)",
    )
    parser.add_argument("--weight-kg", type=float, default=None, metavar="KG", help="patient weight in kg")
    parser.add_argument("--all-frames", action="store_true", help="also write the labelmap of every frame")
    parser.add_argument(
        "--output-format",
        default="seg.nrrd",
        choices=["seg.nrrd", "nii.gz", "nii", "nrrd", "mha"],
        help="file type of the labelmaps (default seg.nrrd)",
    )
    add_prediction_options(parser)
    parser.add_argument(
        "--series",
        default=None,
        metavar="CHOICE",
        help="for a DICOM folder with several series: its number, UID or part of its description",
    )
    parser.add_argument(
        "--force", action="store_true", help="segment even an image of another modality than the model's"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing files in OUT_FOLDER")
    parser.add_argument(
        "--progress-format",
        default="bar",
        choices=["bar", "jsonl"],
        help="bar (default): a progress bar on stderr; jsonl: JSON lines on stdout (events: "
        "device, progress (unit frames), log, written, error)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``cardiac``; returns the exit code."""
    if (args.height_cm is None) != (args.weight_kg is None):
        raise ValueError(
            "Give both --height-cm and --weight-kg (for the values indexed to body surface area), or neither."
        )
    if args.progress_format == "jsonl":
        from ..slicer.child_process import emit_event, jsonl_events

        def progress(done, total):
            emit_event("progress", done=round(float(done), 3), total=int(total), unit="frames")

        with jsonl_events():
            written, analysis = _cardiac(args, progress)
        emit_event("written", path=str(written["function"].resolve()), folder=str(written["function"].parent.resolve()))
        return 0
    from ._progress import Bar

    bar = Bar("frame", desc="frames", fractional=True)
    try:
        written, analysis = _cardiac(args, bar)
    finally:
        bar.close()
    print(analysis.table())
    print(
        f"Wrote {written['function'].parent}{'/' if not str(written['function'].parent).endswith('/') else ''}: "
        + ", ".join(p.name for k, p in written.items() if not k.startswith("frame"))
        + (" and frames/" if args.all_frames else ""),
        file=sys.stderr,
    )
    return 0


def _cardiac(args: argparse.Namespace, progress):
    from .. import clinical
    from ..inference import Predictor
    from ..registry import ensure_model

    model = ensure_model(args.model)
    cine = clinical.read_cine(args.inputs, series=args.series, modality=model.card.modality)
    clinical.CardiacLabels.from_classes(model.card.foreground_classes, f"model '{model.id}'")
    clinical.check_cardiac_outputs(
        args.output, len(cine.frames), args.output_format, args.all_frames, args.overwrite, inputs=args.inputs
    )
    predictor = Predictor(model, inference_settings(args, force=args.force))
    analysis = clinical.analyse_cine(
        cine,
        predictor,
        ed=None if args.ed is None else args.ed - 1,
        es=None if args.es is None else args.es - 1,
        height_cm=args.height_cm,
        weight_kg=args.weight_kg,
        progress=progress,
    )
    assert analysis is not None  # analysed without a cancel event
    written = clinical.write_cardiac_outputs(
        analysis,
        args.output,
        model.card.foreground_classes,
        source=cine.source,
        output_format=args.output_format,
        all_frames=args.all_frames,
        overwrite=args.overwrite,
        inputs=args.inputs,
    )
    return written, analysis
