"""Files in, files out: output naming, checks before any inference, atomic writes, archives."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import SimpleITK as sitk

from .checks import check_input_image
from .confidence import REPORT_SUFFIX
from .predictor import Predictor, window_size
from .sliding_window import ProgressCallback

__all__ = ["output_path_for", "segment_files", "segment_archive", "report_path_for", "write_report"]

logger = logging.getLogger(__name__)


def output_path_for(input_path, output, output_format: str = "seg.nrrd", many: bool = False):
    """Where the segmentation of ``input_path`` goes.

    Args:
        input_path: image file or DICOM folder.
        output: a file path (one input), or an existing folder.
        output_format: extension (without the leading dot) used inside an output folder.
        many: several inputs (``output`` must then be a folder).

    Returns:
        ``pathlib.Path`` of the output file.

    Raises:
        ValueError: an empty output path, several inputs but ``output`` is not an existing folder, or an
            unknown format.
        FileNotFoundError: ``output`` names a folder (ends with a separator) that does not exist.
    """

    from .. import io

    text = str(output)
    if not text.strip():
        raise ValueError("The output path is empty: give an output file (e.g. scan.seg.nrrd) or an existing folder.")
    if text.endswith(("/", "\\")) and not Path(text).is_dir():
        raise FileNotFoundError(f"Output folder {text} does not exist: create it first.")
    output = Path(output)
    ext = "." + output_format.lstrip(".").lower()
    if ext not in io.OUTPUT_EXTENSIONS:
        raise ValueError(f"Unknown output format {output_format!r}: use one of {', '.join(io.OUTPUT_EXTENSIONS)}.")
    if output.is_dir():
        source = Path(input_path)
        name = source.name
        if not name or name in (".", ".."):  # "." or "..": name the output after the folder itself
            name = source.resolve().name or "segmentation"
        in_ext = io.path_extension(source) if source.is_file() else ""
        stem = name[: len(name) - len(in_ext)] if in_ext else name
        return output / f"{stem}{ext}"
    if many:
        if output.exists():
            raise ValueError(f"With several inputs the output must be an existing folder; {output} is a file.")
        raise ValueError(f"With several inputs the output must be an existing folder; {output} is not a folder.")
    return output

def _same_file(a, b) -> bool:
    """True when paths ``a`` and ``b`` name the same file (symlinks, hard links, case-insensitive folders)."""
    ra, rb = a.resolve(), b.resolve()
    if ra == rb or os.path.normcase(str(ra)) == os.path.normcase(str(rb)):
        return True
    if a.exists() and b.exists():
        try:
            # On a case-insensitive file system "Image.nii.gz" exists when "image.nii.gz" does, and
            # samefile sees that they are one file.
            return os.path.samefile(a, b)
        except OSError:
            return False
    return False

def _check_input_for_output(image: sitk.Image, src, dst, package, force: bool = False) -> None:
    """Refuse, before any inference, an input the model or the output format cannot take."""
    from .. import io

    check_input_image(image, package, warn=False, force=force)  # the prediction checks again and warns
    if io.path_extension(dst) == ".png":
        size = image.GetSize()
        if image.GetDimension() == 3 and not (1 in size and sum(n > 1 for n in size) <= 2):
            raise ValueError(
                f"Input {src} is a 3D volume of size {size}, but the output {dst.name} is a PNG (2D only). "
                "Write .seg.nrrd, .nii.gz, .nrrd or .mha instead."
            )

def _plan_outputs(inputs: list, output, output_format: str, overwrite: bool) -> list:
    """The output path of every input, checked: inputs exist, outputs writable, none replaces an input.

    Raises:
        FileNotFoundError, FileExistsError, PermissionError, ValueError: naming the path.
    """
    from .. import io

    outputs = [output_path_for(p, output, output_format, len(inputs) > 1) for p in inputs]
    for src in inputs:
        if not src.exists():
            raise FileNotFoundError(f"Input {src} does not exist.")
    for dst in outputs:
        io.check_output_path(dst, overwrite=overwrite)
        for src in inputs:
            if _same_file(src, dst):
                raise ValueError(f"Output {dst} would overwrite the input image {src}; choose another output path.")
    if len({str(p.resolve()).lower() for p in outputs}) != len(outputs):
        raise ValueError("Several inputs map to the same output name; segment them into different folders.")
    reports = [report_path_for(dst) for dst in outputs]
    for report in reports:
        io.check_output_path(report, allowed=(".json",), overwrite=overwrite)
    if len({str(p.resolve()).lower() for p in reports}) != len(reports):
        raise ValueError("Several outputs would share one report (NAME.report.json: they differ only in their "
                         "extension); give them different names or folders.")
    return outputs


def segment_files(
    inputs,
    output,
    model,
    device="auto",
    tta: bool | None = None,
    batch_size: int | None = None,
    output_format: str = "seg.nrrd",
    progress_factory: Callable[[str], ProgressCallback] | None = None,
    cancel: threading.Event | None = None,
    overwrite: bool = False,
    window: Sequence[int] | int | None = None,
    predictor: Predictor | None = None,
    series: str | None = None,
    force: bool = False,
    roi=None,
    mode: str | None = None,
) -> list:
    """Segment image files / DICOM folders and write the results (the ``segment`` subcommand).

    Every output path and every input (readable, 2D/3D, channels, spacing, format) is checked before
    any inference; each file is written atomically, so an interrupted run leaves only complete outputs.
    One :class:`~.predictor.Predictor` segments them all (the network is built once). Beside each
    output goes its report (:func:`report_path_for`): the confidence and review flag of each segment
    and the warnings (:meth:`~.confidence.Segmentation.report`).

    Args:
        inputs: image paths or DICOM folders.
        output: output file (one input; its extension picks the format: ``.seg.nrrd``, ``.nii.gz``,
            ``.nii``, ``.nrrd``, ``.mha``, ``.png``) or an existing folder.
        model: model id or package folder (or a loaded ModelPackage).
        device, tta, batch_size, window, mode: see :class:`~.predictor.Predictor`.
        output_format: extension used for outputs written into a folder.
        progress_factory: ``progress_factory(input_name)`` returns the progress callback of one input
            (the CLI makes a tqdm bar).
        cancel: threading.Event; a cancelled run writes nothing more and returns what was written.
        overwrite: replace existing output files (never an input).
        series: for DICOM folders, which series (:func:`~AttentionMambaSegLib.io.choose_dicom_series`).
        force: segment images of another modality than the model's (see :func:`~.checks.check_modality`).
        roi: a :class:`~.roi.RegionOfInterest` applied to every input (labels zero outside it).
        predictor: a :class:`~.predictor.Predictor` of this model to use (for callers that segment input
            after input); then ``device``, ``tta``, ``batch_size``, ``window`` and ``mode`` are its own.

    Returns:
        Output paths written, in input order (each with its report beside it).

    Raises:
        FileExistsError: an output file exists and ``overwrite`` is False (raised before inference).
        FileNotFoundError, PermissionError, ValueError, RuntimeError: as raised by reading, checking
            the outputs, inference and writing; nothing partial is left behind. A failure after some
            outputs were written logs which ones.
    """
    from .. import io
    from ..package import ModelPackage, load_model_package

    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise ValueError("No input images given.")
    if predictor is not None:
        package = predictor.package
    else:
        package = model if isinstance(model, ModelPackage) else load_model_package(model)
        window_size(package.config, window)  # a bad window fails before any input is read
    def read(src):
        return io.read_image(src, series=series, modality=package.config.get("modality"))

    many = len(inputs) > 1
    outputs = _plan_outputs(inputs, output, output_format, overwrite)
    # Read and check every input before the first inference, so a bad input late in the list does not
    # fail the run after hours of work. With one input the image is kept; with several it is re-read.
    images: dict[int, sitk.Image] = {}
    for i, (src, dst) in enumerate(zip(inputs, outputs, strict=True)):
        image = read(src)
        try:
            _check_input_for_output(image, src, dst, package, force)
        except ValueError as e:
            raise ValueError(f"Input {src}: {e}" if many else str(e)) from e
        if not many:
            images[i] = image
        del image
    if predictor is None:
        predictor = Predictor(package, device=device, tta=tta, batch_size=batch_size, window=window, force=force,
                              mode=mode)
    written = []
    for i, (src, dst) in enumerate(zip(inputs, outputs, strict=True)):
        try:
            image = images.pop(i) if i in images else read(src)
            progress = progress_factory(src.name) if progress_factory else None
            result = predictor.segment(image, progress=progress, cancel=cancel, roi=roi)
            if result is None:
                logger.info("Cancelled; %d of %d outputs written.", len(written), len(inputs))
                break
            report = report_path_for(dst)
            report.unlink(missing_ok=True)  # an earlier run's report never sits beside this run's output
            io.write_labelmap(result.labels, dst, package.config["classes"],
                              flagged=[s.label_value for s in result.needs_review])
            try:
                write_report(result, dst, src)
            except BaseException:
                dst.unlink(missing_ok=True)  # an output without its report is not left behind
                raise
        except BaseException:
            if written:
                logger.error("Failed on input %s; outputs written before the failure: %s", src,
                             ", ".join(str(p) for p in written))
            raise
        written.append(dst)
    return written

def report_path_for(output) -> Path:
    """The report beside an output file: ``case.seg.nrrd`` -> ``case.report.json`` (any labelmap extension)."""
    from ..io import path_extension

    output = Path(output)
    return output.with_name(output.name[: len(output.name) - len(path_extension(output))] + REPORT_SUFFIX)


def write_report(result, output, source) -> Path:
    """Write ``result.report()`` (with the input and output paths) beside ``output``, atomically."""
    from ..io import atomic_output

    path = report_path_for(output)
    report = {"input": str(source), "output": str(output), **result.report()}
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return path


def segment_archive(
    inputs,
    output_folder,
    model,
    device="auto",
    progress_factory: Callable[[str], ProgressCallback] | None = None,
    **options,
) -> tuple[list, list]:
    """Segment many inputs one by one into a folder; a failing input is reported and the others go on.

    Under ``torchrun`` each rank calls this with its share of the inputs (see ``segment`` in the CLI).

    Args:
        inputs: image paths or DICOM folders.
        output_folder: an existing folder (outputs are named after the inputs).
        model: model id, folder or ModelPackage.
        device: as :class:`~.predictor.Predictor` (a string or ``torch.device``).
        progress_factory: as :func:`segment_files`.
        **options: ``tta``, ``batch_size``, ``output_format``, ``overwrite``, ``window``, ``series``, ``force``,
            ``mode`` of :func:`segment_files`.

    Returns:
        ``(written, failed)``: ``[(input, output path)]`` and ``[(input, "ErrorType: message")]``.

    Raises:
        ValueError: ``output_folder`` is not an existing folder.
    """
    if not Path(output_folder).is_dir():
        raise ValueError(f"Output {output_folder} must be an existing folder when segmenting many inputs.")
    settings = {k: options.pop(k) for k in ("tta", "batch_size", "window", "force", "mode") if k in options}
    predictor = Predictor(model, device=device, **settings)
    written, failed = [], []
    for source in inputs:
        try:
            paths = segment_files([source], output_folder, predictor.package, progress_factory=progress_factory,
                                  predictor=predictor, force=predictor.force, **options)
        except Exception as e:  # reported with the input's name; the other inputs go on
            logger.error("Input %s failed: %s", source, e)
            failed.append((str(source), f"{type(e).__name__}: {e}"))
            continue
        written.extend((str(source), str(p)) for p in paths)
    return written, failed
