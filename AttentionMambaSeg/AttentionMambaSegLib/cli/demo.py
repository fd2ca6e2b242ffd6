"""``attention-mamba-seg demo``: segment the bundled ACDC validation volume with ``cardiac-acdc``.

Writes ``<case>.seg.nrrd`` (3D Slicer segmentation), its ``<case>.report.json``, ``<case>_labels.nii.gz``
(labelmap) and ``<case>_montage.png`` (slices with the segments overlaid) under the output rule of
:mod:`~AttentionMambaSegLib.outputs` (files of an earlier run are replaced only with ``--overwrite``) and
prints the Dice score of each class against the bundled manual labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..inference.result import Segmentation
    from ..package import ModelPackage

EXAMPLE_CASE = "patient019_frame01"
DEMO_MODEL = "cardiac-acdc"


def examples_dir() -> Path:
    """``AttentionMambaSeg/Resources/Examples``."""
    return Path(__file__).resolve().parents[2] / "Resources" / "Examples"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="segment the bundled cardiac MRI example",
        description="Segment the bundled ACDC validation volume (patient019, end-diastole) with the bundled "
        "cardiac-acdc model; write a .seg.nrrd, a labelmap, a PNG montage and the confidence report.",
    )
    parser.add_argument(
        "--output-dir",
        default="attention-mamba-seg-demo",
        help="folder for the outputs (created; default ./attention-mamba-seg-demo)",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--mode",
        choices=("fast", "accurate"),
        default=None,
        help="speed mode (default: the model's for the device; see 'models info cardiac-acdc')",
    )
    parser.add_argument(
        "--no-tta",
        dest="tta",
        action="store_false",
        default=None,
        help="no flip test-time augmentation, whatever the mode",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the outputs of an earlier demo run in --output-dir"
    )
    parser.add_argument("--model", default=DEMO_MODEL, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit code."""
    import time

    from .. import images, writers
    from ..inference import Predictor
    from ..inference.file_runner import write_report
    from ..outputs import check_output_path
    from ..package import load_model_package
    from ._progress import Bar
    from .montage import write_overlay_montage
    from .segment import inference_settings

    image_path = examples_dir() / f"{EXAMPLE_CASE}_0000.nii.gz"
    label_path = examples_dir() / f"{EXAMPLE_CASE}_label.nii.gz"
    if not image_path.is_file():
        raise FileNotFoundError(f"The bundled example {image_path} is missing; reinstall AttentionMambaSeg.")
    try:
        package = load_model_package(args.model)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"The demo needs the '{args.model}' model, which is not installed: {e}") from e
    names = _output_names(Path(args.output_dir))
    inputs = [image_path, label_path]
    for path in names.values():  # before any work: every output may be written
        check_output_path(path, overwrite=args.overwrite, inputs=inputs)
    image = images.read_image(image_path)
    bar = Bar("slice", desc=EXAMPLE_CASE)

    predictor = Predictor(package, inference_settings(args))
    start = time.perf_counter()
    try:
        result = predictor.segment(image, progress=bar)
    finally:
        bar.close()
    assert result is not None  # segmented without a cancel event
    seconds = time.perf_counter() - start
    labelmap = result.labels
    classes = package.card.class_dicts
    rule = {"overwrite": args.overwrite, "inputs": inputs}
    segmentation = writers.write_seg_nrrd(
        labelmap, names["segmentation"], classes, flagged=[s.label_value for s in result.needs_review], **rule
    )
    written = [
        segmentation,
        write_report(result, segmentation, image_path, **rule),
        writers.write_labelmap(labelmap, names["labels"], **rule),
        write_overlay_montage(image, labelmap, classes, names["montage"], **rule),
    ]
    print(
        f"Segmented {EXAMPLE_CASE} with '{package.id}' {package.version} in {seconds:.1f} s "
        f"(mode {predictor.mode}: {predictor.plan.describe()})"
    )
    if label_path.is_file():
        _print_dice(package, result, label_path)
    for path in written:
        print(path)
    return 0


def _output_names(out: Path) -> dict[str, Path]:
    """The demo's output files in the folder ``out`` (created; an error when it or a parent is a file)."""
    from ..inference.file_runner import report_path_for

    for folder in (out, *out.parents):
        if folder.exists() and not folder.is_dir():
            raise ValueError(
                f"--output-dir {out}: {folder} is a file, not a folder. Give a folder path (it is created if needed)."
            )
    out.mkdir(parents=True, exist_ok=True)
    names = {
        "segmentation": out / f"{EXAMPLE_CASE}.seg.nrrd",
        "labels": out / f"{EXAMPLE_CASE}_labels.nii.gz",
        "montage": out / f"{EXAMPLE_CASE}_montage.png",
    }
    names["report"] = report_path_for(names["segmentation"])
    return names


def _print_dice(package: ModelPackage, result: Segmentation, label_path: Path) -> None:
    """The Dice score and the confidence of each class against the bundled manual labels."""
    import numpy as np
    import SimpleITK as sitk

    from .. import images

    # copies, not views: a view of the temporary ReadImage result would outlive its image
    pred = sitk.GetArrayFromImage(result.labels)
    ref = sitk.GetArrayFromImage(images.read_image(label_path))
    for c in package.classes:
        p, r = pred == c["label_value"], ref == c["label_value"]
        denom = int(p.sum() + r.sum())
        score = 2.0 * np.logical_and(p, r).sum() / denom if denom else 1.0
        segment = next(s for s in result.segments if s.label_value == c["label_value"])
        confidence = "-" if segment.confidence is None else f"{segment.confidence:.3f}"
        print(
            f"  Dice {c['name']:28s} {score:.3f}   confidence {confidence}"
            + (f"   needs review: {segment.review_reason}" if segment.needs_review else "")
        )
