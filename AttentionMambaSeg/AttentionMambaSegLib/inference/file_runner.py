"""Files in, files out: output naming, checks before any inference, atomic writes, archives."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import SimpleITK as sitk

from ..outputs import same_file
from .checks import check_input_image
from .predictor import Predictor, window_size
from .result import REPORT_SUFFIX
from .settings import InferenceSettings
from .sliding_window import ProgressCallback

__all__ = [
    "output_path_for",
    "overlay_path_for",
    "segment_files",
    "segment_archive",
    "report_path_for",
    "write_report",
    "write_summary",
    "SUMMARY_NAME",
]

#: The summary of a run with several inputs, in the output folder (:func:`write_summary`).
SUMMARY_NAME = "summary.csv"
#: nnU-Net's channel suffix of a single-channel image (``case_0000.nii.gz``), left out of output names.
CHANNEL_SUFFIX = "_0000"

logger = logging.getLogger(__name__)


def output_path_for(input_path, output, output_format: str = "seg.nrrd", many: bool = False):
    """Where the segmentation of ``input_path`` goes.

    Args:
        input_path: image file or DICOM folder.
        output: a file path (one input), or a folder: an existing one, one written with a trailing
            separator (``out/``), or, with several inputs, a path without an output extension (a folder
            that does not exist yet is created before the first output is written).
        output_format: extension (without the leading dot) used inside an output folder.
        many: several inputs (``output`` must then be a folder).

    Returns:
        ``pathlib.Path`` of the output file. Inside a folder it is named after the input without its
        extension and without nnU-Net's channel suffix ``_0000`` (``case_0000.nii.gz`` -> ``case.seg.nrrd``).

    Raises:
        ValueError: an empty output path, several inputs but ``output`` is a file (or a file name), or an
            unknown format.
    """

    from .. import images

    text = str(output)
    if not text.strip():
        raise ValueError("The output path is empty: give an output file (e.g. scan.seg.nrrd) or a folder.")
    output = Path(output)
    ext = _format_extension(output_format)
    names_a_file = output.exists() and not output.is_dir()
    folder = output.is_dir() or (
        not names_a_file
        and (
            text.endswith(("/", "\\"))
            or (many and images.path_extension(output) not in images.OUTPUT_EXTENSIONS + (".dcm",))
        )
    )
    if folder:
        source = Path(input_path)
        name = source.name
        if not name or name in (".", ".."):  # "." or "..": name the output after the folder itself
            name = source.resolve().name or "segmentation"
        in_ext = images.path_extension(source) if source.is_file() else ""
        stem = name[: len(name) - len(in_ext)] if in_ext else name
        if stem.endswith(CHANNEL_SUFFIX) and len(stem) > len(CHANNEL_SUFFIX):
            stem = stem[: -len(CHANNEL_SUFFIX)]
        return output / f"{stem}{ext}"
    if many:
        what = "is a file" if names_a_file else "is a file name"
        raise ValueError(
            f"With several inputs the output must be a folder (created when missing); {output} {what}. "
            "Give a folder, e.g. -o results/."
        )
    return output


def overlay_path_for(output) -> Path:
    """The outline picture beside an output file: ``case.seg.nrrd`` -> ``case_overlay.png``."""
    from ..images import path_extension

    output = Path(output)
    return output.with_name(output.name[: len(output.name) - len(path_extension(output))] + "_overlay.png")


def _format_extension(output_format: str) -> str:
    """The file extension of an ``--output-format`` (``dicom-seg`` -> ``.dcm``).

    Raises:
        ValueError: an unknown format.
    """
    from .. import images
    from ..dicom_seg import DICOM_SEG_EXTENSION, DICOM_SEG_FORMAT

    if output_format.lstrip(".").lower() == DICOM_SEG_FORMAT:
        return DICOM_SEG_EXTENSION
    ext = "." + output_format.lstrip(".").lower()
    if ext not in images.OUTPUT_EXTENSIONS:
        raise ValueError(
            f"Unknown output format {output_format!r}: use one of "
            f"{', '.join(images.OUTPUT_EXTENSIONS)} or {DICOM_SEG_FORMAT}."
        )
    return ext


def _check_input_for_output(image: sitk.Image, src, dst, package, force: bool = False, overlay: bool = False) -> None:
    """Refuse, before any inference, an input the model or the output format cannot take."""
    from .. import images

    check_input_image(image, package, warn=False, force=force)  # the prediction checks again and warns
    size = image.GetSize()
    volume = image.GetDimension() == 3 and not (1 in size and sum(n > 1 for n in size) <= 2)
    if images.path_extension(dst) == ".png" and volume:
        raise ValueError(
            f"Input {src} is a 3D volume of size {size}, but the output {dst.name} is a PNG (2D only). "
            "Write .seg.nrrd, .nii.gz, .nrrd or .mha instead."
        )
    if overlay and volume:
        raise ValueError(
            f"Input {src} is a 3D volume of size {size}: --overlay draws the outline on 2D images "
            "(photographs, single slices). Leave out --overlay and open the .seg.nrrd in 3D Slicer."
        )


def _plan_outputs(inputs: list, output, settings: InferenceSettings) -> tuple[list, Path | None]:
    """The output path of every input (:func:`output_path_for`) and of the summary (None: no summary).

    Raises:
        ValueError: as :func:`output_path_for`.
    """
    outputs = [output_path_for(p, output, settings.output_format, len(inputs) > 1) for p in inputs]
    summary = len(inputs) > 1 if settings.summary is None else settings.summary
    return outputs, (outputs[0].parent / SUMMARY_NAME if summary else None)


def _check_outputs(inputs: list, outputs: list, summary_path: Path | None, settings: InferenceSettings) -> None:
    """Check the planned outputs: inputs exist, outputs writable (their folder may be created), none replaces
    an input, no two inputs share an output name.

    Raises:
        FileNotFoundError, FileExistsError, PermissionError, ValueError: naming the path.
    """
    from .. import images, outputs as output_rule
    from ..dicom_seg import DICOM_SEG_EXTENSION, check_dicom_seg_input, require_highdicom
    from ..images import OUTPUT_EXTENSIONS

    overwrite = settings.overwrite
    for src in inputs:
        if not src.exists():
            raise FileNotFoundError(f"Input {src} does not exist.")
    first: dict[str, Path] = {}
    for src, dst in zip(inputs, outputs):
        other = first.setdefault(str(dst.absolute()).lower(), src)
        if other is not src:
            raise ValueError(
                f"Inputs {other} and {src} would both be written to {dst} (outputs are named after the "
                f"inputs, without the channel suffix {CHANNEL_SUFFIX}): rename one, or segment them "
                "into different output folders."
            )
    for dst in outputs:
        for src in inputs:
            if same_file(src, dst):
                raise ValueError(f"Output {dst} would overwrite the input image {src}; choose another output path.")
        output_rule.check_output_path(
            dst,
            allowed=OUTPUT_EXTENSIONS + (DICOM_SEG_EXTENSION,),
            overwrite=overwrite,
            inputs=inputs,
            create_folder=True,
        )
        if settings.overlay:
            output_rule.check_output_path(
                overlay_path_for(dst), allowed=(".png",), overwrite=overwrite, inputs=inputs, create_folder=True
            )
    if summary_path is not None:
        output_rule.check_output_path(
            summary_path, allowed=(".csv",), overwrite=overwrite, inputs=inputs, create_folder=True
        )
    for src, dst in zip(inputs, outputs):
        if images.path_extension(dst) == DICOM_SEG_EXTENSION:
            check_dicom_seg_input(src)  # a DICOM SEG references a DICOM series
            require_highdicom()
    if len({str(p.resolve()).lower() for p in outputs}) != len(outputs):
        raise ValueError("Several inputs map to the same output name; segment them into different folders.")
    reports = [report_path_for(dst) for dst in outputs]
    for report in reports:
        output_rule.check_output_path(
            report, allowed=(".json",), overwrite=overwrite, inputs=inputs, create_folder=True
        )
    if len({str(p.resolve()).lower() for p in reports}) != len(reports):
        raise ValueError(
            "Several outputs would share one report (NAME.report.json: they differ only in their "
            "extension); give them different names or folders."
        )


def _read_input(src, package, settings: InferenceSettings, series: str | None) -> sitk.Image:
    """One input image or DICOM series, read as :func:`~AttentionMambaSegLib.images.read_image` reads it."""
    from ..images import read_image

    return read_image(src, series=series, modality=package.card.modality, nifti_transform=settings.nifti_transform)


def _check_inputs(inputs: list, outputs: list, package, settings: InferenceSettings, series: str | None) -> dict:
    """Read and check every input before the first inference, so a bad input late in the list does not fail the
    run after hours of work.

    Returns:
        ``{0: image}`` for a single input (kept for the run); ``{}`` with several (each is read again).

    Raises:
        ValueError: an input the model or the output format cannot take (naming it when there are several);
            the errors of reading it.
    """
    many = len(inputs) > 1
    images: dict[int, sitk.Image] = {}
    for i, (src, dst) in enumerate(zip(inputs, outputs, strict=True)):
        image = _read_input(src, package, settings, series)
        try:
            _check_input_for_output(image, src, dst, package, settings.force, settings.overlay)
        except ValueError as e:
            raise ValueError(f"Input {src}: {e}" if many else str(e)) from e
        if not many:
            images[i] = image
        del image
    return images


def segment_files(
    inputs,
    output,
    model,
    settings: InferenceSettings | None = None,
    *,
    progress_factory: Callable[[str], ProgressCallback] | None = None,
    cancel: threading.Event | None = None,
    predictor: Predictor | None = None,
    series: str | None = None,
) -> list:
    """Segment image files / DICOM folders and write the results (the ``segment`` subcommand).

    Every output path and every input (readable, 2D/3D, channels, spacing, format) is checked before
    any inference; each file is written under the output rule of :mod:`~AttentionMambaSegLib.outputs`
    (never over an input, never replacing a file without ``settings.overwrite``, checked complete, created
    exclusively), so an interrupted or failed run leaves only complete outputs and earlier files intact.
    One :class:`~.predictor.Predictor` segments them all (the network is built once). Beside each
    output goes its report (:func:`report_path_for`): the confidence and review flag of each segment
    and the warnings (:meth:`~.result.Segmentation.report`).

    Args:
        inputs: image paths or DICOM folders.
        output: output file (one input; its extension picks the format: ``.seg.nrrd``, ``.nii.gz``,
            ``.nii``, ``.nrrd``, ``.mha``, ``.png`` (0/255 for one class, else a palette PNG in the class
            colours), or ``.dcm``: a DICOM Segmentation of a DICOM series folder,
            :func:`~AttentionMambaSegLib.dicom_seg.write_dicom_seg`) or a folder (:func:`output_path_for`
            names the outputs). A missing output folder, or the missing folder of an output file, is
            created once every input has been checked.
        model: model id or package folder (or a loaded ModelPackage).
        settings: an :class:`~.settings.InferenceSettings` (None: the defaults). ``device``, ``tta``,
            ``batch_size``, ``window``, ``mode``, ``force``: see :class:`~.predictor.Predictor`;
            ``output_format``: extension of outputs written into a folder (``dicom-seg``: ``.dcm``);
            ``overwrite``: replace existing output files (never an input); ``roi``: applied to every input
            (labels zero outside it); ``nifti_transform``: for NIfTI inputs whose qform and sform disagree,
            ``"qform"`` or ``"sform"`` (:func:`~AttentionMambaSegLib.images.read_image`), None refuses them;
            ``overlay``: also write ``NAME_overlay.png``, the input with each segment's outline in its class
            colour, beside each output (2D inputs, :func:`~AttentionMambaSegLib.masks.write_outline_overlay`);
            ``summary``: write :data:`SUMMARY_NAME` in the output folder (:func:`write_summary`), None: when
            there are several inputs.
        progress_factory: ``progress_factory(input_name)``: the progress callback of one input (a CLI bar).
        cancel: threading.Event; a cancelled run writes nothing more and returns what was written.
        predictor: a :class:`~.predictor.Predictor` of this model to use (for callers that segment input
            after input); then ``device``, ``tta``, ``batch_size``, ``window`` and ``mode`` are its own.
        series: for DICOM folders, which series (:func:`~AttentionMambaSegLib.dicom.choose_dicom_series`).

    Returns:
        Output paths written, in input order (each with its report beside it).

    Raises:
        FileExistsError: an output file exists and ``overwrite`` is False (raised before inference), or
            another process created it while this one was writing.
        FileNotFoundError, PermissionError, ValueError, RuntimeError: as raised by reading, checking
            the outputs, inference and writing; nothing partial is left behind. A failure after some
            outputs were written logs which ones.
    """
    from ..outputs import make_output_folder
    from ..package import load_model_package

    settings = InferenceSettings() if settings is None else settings
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise ValueError("No input images given.")
    package = predictor.package if predictor is not None else load_model_package(model)
    if predictor is None:
        window_size(package.card, settings.window)  # a bad window fails before any input is read
    outputs, summary_path = _plan_outputs(inputs, output, settings)
    _check_outputs(inputs, outputs, summary_path, settings)
    images = _check_inputs(inputs, outputs, package, settings, series)
    if predictor is None:
        predictor = Predictor(package, settings)
    for folder in dict.fromkeys(dst.parent for dst in outputs):  # every input is checked: the folders may be made
        make_output_folder(folder)
    written = _run(inputs, outputs, images, predictor, settings, series, progress_factory, cancel)
    if summary_path is not None and written:
        write_summary(
            [(src, dst) for src, dst in zip(inputs, written)], summary_path, overwrite=settings.overwrite, inputs=inputs
        )
    return written


def _run(
    inputs: list,
    outputs: list,
    images: dict,
    predictor: Predictor,
    settings: InferenceSettings,
    series: str | None,
    progress_factory,
    cancel,
) -> list:
    """Segment the checked inputs one by one and write each output with its report; the outputs written.

    Raises:
        the errors of reading, inference and writing, after logging the outputs written before the failure.
    """
    roi = settings.region_of_interest()
    written: list[Path] = []
    for i, (src, dst) in enumerate(zip(inputs, outputs, strict=True)):
        try:
            image = images.pop(i) if i in images else _read_input(src, predictor.package, settings, series)
            progress = progress_factory(src.name) if progress_factory else None
            result = predictor.segment(image, progress=progress, cancel=cancel, roi=roi)
            if result is None:
                logger.info("Cancelled; %d of %d outputs written.", len(written), len(inputs))
                break
            _write_outputs(result, image, src, dst, predictor.package, settings, series, inputs)
        except BaseException:
            if written:
                logger.error(
                    "Failed on input %s; outputs written before the failure: %s",
                    src,
                    ", ".join(str(p) for p in written),
                )
            raise
        written.append(dst)
    return written


def _write_outputs(
    result,
    image: sitk.Image,
    src: Path,
    dst: Path,
    package,
    settings: InferenceSettings,
    series: str | None,
    inputs: list,
) -> None:
    """The segmentation of one input, its report and (``settings.overlay``) its outline overlay.

    An output is never left without its report, nor beside an earlier run's report.
    """
    from .. import dicom, writers
    from ..dicom_seg import DICOM_SEG_EXTENSION, write_dicom_seg
    from ..images import path_extension

    overwrite = settings.overwrite
    report = report_path_for(dst)
    replaced = dst.exists()
    if path_extension(dst) == DICOM_SEG_EXTENSION:
        series_files = dicom.choose_dicom_series(dicom.list_dicom_series(src), series, package.card.modality).files
        write_dicom_seg(
            result.labels,
            dst,
            package.card.class_dicts,
            series_files,
            segments=result.segments,
            algorithm_name=package.id,
            algorithm_version=package.card.version,
            overwrite=overwrite,
            inputs=inputs,
        )
    else:
        writers.write_labelmap(
            result.labels,
            dst,
            package.card.class_dicts,
            flagged=[s.label_value for s in result.needs_review],
            overwrite=overwrite,
            inputs=inputs,
        )
    try:
        write_report(result, dst, src, overwrite=overwrite, inputs=inputs)
        if settings.overlay:
            from ..masks import write_outline_overlay

            picture = write_outline_overlay(
                image,
                result.labels,
                package.card.class_dicts,
                overlay_path_for(dst),
                overwrite=overwrite,
                inputs=inputs,
            )
            logger.info("Wrote outline overlay %s", picture)
    except BaseException:
        if replaced:  # an earlier run's report never sits beside this run's output
            report.unlink(missing_ok=True)
        else:  # an output without its report is not left behind
            dst.unlink(missing_ok=True)
        raise


_SIZE_COLUMNS = {
    "volume_ml": "volume (mL)",
    "area_mm2": "area (mm2)",
    "area_px": "area (px)",
    "volume_voxels": "volume (voxels)",
}


def write_summary(results, path, *, overwrite: bool = False, inputs=()) -> Path:
    """Write the summary CSV of a run with several inputs, from the report beside each output.

    One row per input, in the order given. Columns: ``input``, ``output``; for each segment (by name, in
    the order they first appear) its size (``NAME volume (mL)`` in 3D, ``NAME area (mm2)`` in 2D,
    ``NAME area (px)`` for a photograph, which has no physical pixel size), ``NAME confidence`` and
    ``NAME needs review`` (``yes`` / ``no``); then ``needs review`` (``yes`` when any segment does),
    ``reasons`` (``name: reason; ...``) and ``warnings`` (the report's warnings, ``; ``-separated).

    Args:
        results: ``[(input, output)]`` of the outputs written (each with its report, :func:`report_path_for`).
        path: the ``.csv`` to write (under the output rule).
        overwrite, inputs: as :func:`write_report`.

    Returns:
        ``path``.

    Raises:
        FileNotFoundError: a report is missing; FileExistsError, OSError: as
        :func:`~AttentionMambaSegLib.outputs.write_output`.
    """
    import csv
    import io as text_io

    from ..outputs import write_text_output

    rows, columns = [], ["input", "output"]

    def column(name: str) -> str:
        if name not in columns:
            columns.append(name)
        return name

    for source, output in results:
        report = json.loads(report_path_for(output).read_text(encoding="utf-8"))
        row = {"input": str(source), "output": str(output)}
        reasons = []
        for segment in report.get("segments", []):
            name = segment["name"]
            unit = next((k for k in _SIZE_COLUMNS if k in segment), None)
            if unit is not None:
                row[column(f"{name} {_SIZE_COLUMNS[unit]}")] = segment[unit]
            row[column(f"{name} confidence")] = "" if segment.get("confidence") is None else segment["confidence"]
            row[column(f"{name} needs review")] = "yes" if segment.get("needs_review") else "no"
            if segment.get("needs_review"):
                reasons.append(f"{name}: {segment.get('reason')}")
        row["needs review"] = "yes" if reasons else "no"
        row["reasons"] = "; ".join(reasons)
        row["warnings"] = "; ".join(report.get("warnings", []))
        rows.append(row)
    columns += ["needs review", "reasons", "warnings"]
    text = text_io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text_output(path, text.getvalue(), overwrite=overwrite, inputs=inputs, allowed=(".csv",))
    logger.info("Wrote summary %s (%d inputs)", path, len(rows))
    return Path(path)


def report_path_for(output) -> Path:
    """The report beside an output file: ``case.seg.nrrd`` -> ``case.report.json`` (any labelmap extension)."""
    from ..images import path_extension

    output = Path(output)
    return output.with_name(output.name[: len(output.name) - len(path_extension(output))] + REPORT_SUFFIX)


def write_report(result, output, source, *, overwrite: bool = False, inputs=()) -> Path:
    """Write ``result.report()`` (with the input and output paths) beside ``output``, under the output rule.

    Args:
        result: a :class:`~.result.Segmentation`.
        output: the segmentation file the report describes.
        source: the input it was made from (never overwritten).
        overwrite: replace an earlier report.
        inputs: further files the report must not replace.

    Returns:
        The report's path (:func:`report_path_for`).

    Raises:
        FileExistsError: the report exists and ``overwrite`` is False; OSError: see
        :func:`~AttentionMambaSegLib.outputs.write_output`.
    """
    from ..outputs import write_text_output

    path = report_path_for(output)
    report = {"input": str(source), "output": str(output), **result.report()}
    write_text_output(
        path, json.dumps(report, indent=1) + "\n", overwrite=overwrite, inputs=[source, *inputs], allowed=(".json",)
    )
    return path


def segment_archive(
    inputs,
    output_folder,
    model,
    settings: InferenceSettings | None = None,
    *,
    progress_factory: Callable[[str], ProgressCallback] | None = None,
    series: str | None = None,
) -> tuple[list, list]:
    """Segment many inputs one by one into a folder; a failing input is reported and the others go on.

    Under ``torchrun`` each rank calls this with its share of the inputs (see ``segment`` in the CLI).

    Args:
        inputs: image paths or DICOM folders.
        output_folder: a folder (created when missing; outputs are named after the inputs, :func:`output_path_for`).
        model: model id, folder or ModelPackage.
        settings: an :class:`~.settings.InferenceSettings`, as for :func:`segment_files` (``device`` may be a
            ``torch.device``); no summary is written here (``summary`` is not read).
        progress_factory, series: as for :func:`segment_files`.

    Returns:
        ``(written, failed)``: ``[(input, output path)]`` and ``[(input, "ErrorType: message")]``.

    Raises:
        ValueError: ``output_folder`` is a file.
    """
    from ..outputs import make_output_folder

    settings = InferenceSettings() if settings is None else settings
    if Path(output_folder).exists() and not Path(output_folder).is_dir():
        raise ValueError(f"Output {output_folder} must be a folder when segmenting many inputs; it is a file.")
    make_output_folder(output_folder)
    predictor = Predictor(model, settings)
    each = settings.replace(summary=False)
    written: list[tuple[str, str]] = []
    failed: list[tuple[str, str]] = []
    for source in inputs:
        try:
            paths = segment_files(
                [source],
                output_folder,
                predictor.package,
                each,
                progress_factory=progress_factory,
                predictor=predictor,
                series=series,
            )
        except Exception as e:  # noqa: BLE001 - reported with the input's name; the other inputs go on
            logger.error("Input %s failed: %s", source, e)
            failed.append((str(source), f"{type(e).__name__}: {e}"))
            continue
        written.extend((str(source), str(p)) for p in paths)
    return written, failed
