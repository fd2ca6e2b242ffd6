"""DICOM Segmentation (SEG) objects: a labelmap of a DICOM series written back as DICOM, for PACS.

:func:`write_dicom_seg` writes a DICOM Segmentation Storage object (SOP class 1.2.840.10008.5.1.4.1.1.66.4)
with highdicom (Herrmann et al., "Highdicom: a Python library for standardized encoding of image
annotations and machine learning model outputs in pathology and radiology", J Digit Imaging 2022):

* it references the source series: its Study Instance UID (the SEG joins the study), the SOP Instance
  UID of every source slice (Referenced Series Sequence and, per frame, the Source Image Sequence) and
  the Frame of Reference UID;
* one binary segment per class of the model: the segment label is the class name, the segmented
  property category and type (with the type modifier and anatomic region where the class has them) are
  the class's SNOMED CT codes (:mod:`.terminology`), the recommended display colour is the class colour
  in CIELab as DICOM stores it, the algorithm is identified by the model's id and version (family
  "Artificial Intelligence", DCM 123110), and the segment description says whether the segment needs
  review (with its confidence and reason);
* the frames lie on the source slices (same rows, columns, positions); only frames that hold a
  segment are stored.

A labelmap read back with :func:`read_dicom_seg_labelmap` equals the written one voxel for voxel.

highdicom is the ``[dicom]`` extra (``pip install "attention-mamba-seg[dicom]"``, or ``pip install highdicom``);
without it :class:`DicomSegDependencyError` says so.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

__all__ = [
    "DICOM_SEG_EXTENSION",
    "DICOM_SEG_FORMAT",
    "DicomSegDependencyError",
    "check_dicom_seg_input",
    "read_dicom_seg_labelmap",
    "require_highdicom",
    "write_dicom_seg",
]

logger = logging.getLogger(__name__)

#: File extension of a written DICOM SEG and the ``--output-format`` name that selects it.
DICOM_SEG_EXTENSION = ".dcm"
DICOM_SEG_FORMAT = "dicom-seg"
#: Series Number of the SEG: the source's plus this offset (as scanners number derived series).
SERIES_NUMBER_OFFSET = 1000


class DicomSegDependencyError(RuntimeError):
    """highdicom (the ``[dicom]`` extra) is not installed; the message says how to install it."""


def require_highdicom():
    """Import highdicom, or raise :class:`DicomSegDependencyError` with the install command."""
    try:
        import highdicom
    except ImportError as e:
        raise DicomSegDependencyError(
            "Writing a DICOM Segmentation needs the highdicom package, which is not installed: "
            'pip install "attention-mamba-seg[dicom]" (or pip install highdicom), then run the command again.'
        ) from e
    return highdicom


def check_dicom_seg_input(source: str | os.PathLike) -> None:
    """Refuse an input a DICOM SEG cannot reference (anything but a DICOM series folder).

    Raises:
        ValueError: ``source`` is a file (NIfTI, NRRD, MHA, a photo, one .dcm file): a DICOM SEG needs the
            source series' UIDs. The message names the fix.
    """
    path = Path(source)
    if not path.is_dir():
        raise ValueError(
            f"DICOM SEG output needs a DICOM series folder as input: {path.name} is a file, which carries no DICOM "
            "series to reference (Study, Series and SOP Instance UIDs). Give the folder of the DICOM series, or "
            "write .seg.nrrd, .nii.gz, .nrrd or .mha instead."
        )


def _code(code):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def _slice_index_of(dataset, labelmap: sitk.Image) -> int:
    """The labelmap's slice (k) that holds a source slice, from its ImagePositionPatient.

    Raises:
        ValueError: the slice is not on the labelmap's grid (another series, or a resampled labelmap).
    """
    position = [float(v) for v in dataset.ImagePositionPatient]
    i, j, k = labelmap.TransformPhysicalPointToContinuousIndex(position)
    nearest = int(round(k))
    size = labelmap.GetSize()
    if (
        abs(i) > 0.01
        or abs(j) > 0.01
        or abs(k - nearest) > 0.01
        or not 0 <= nearest < size[2]
        or (int(dataset.Rows), int(dataset.Columns)) != (size[1], size[0])
    ):
        raise ValueError(
            f"Source slice {dataset.SOPInstanceUID} (position {position}, {dataset.Rows} x {dataset.Columns}) is not a "
            f"slice of the labelmap's grid (size {size}, origin {labelmap.GetOrigin()}): the labelmap must be on the "
            "grid of the DICOM series it was segmented from."
        )
    return nearest


def _read_sources(source_files: Sequence[str | os.PathLike]):
    import pydicom

    datasets = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in source_files]  # headers only
    if not datasets:
        raise ValueError("No source DICOM files given: a DICOM SEG references the slices of its source series.")
    if any(int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise ValueError(
            "The source is a multi-frame (enhanced) DICOM image; DICOM SEG output is written for series "
            "of single-frame slices. Write .seg.nrrd or .nii.gz instead."
        )
    series = {ds.SeriesInstanceUID for ds in datasets}
    if len(series) != 1:
        raise ValueError(f"The source files belong to {len(series)} series; a DICOM SEG references one series.")
    return datasets


def write_dicom_seg(
    labelmap: sitk.Image,
    path: str | os.PathLike,
    classes: Sequence,
    source_files: Sequence[str | os.PathLike],
    *,
    segments: Sequence | None = None,
    algorithm_name: str = "AttentionMambaSeg",
    algorithm_version: str = "",
    series_description: str | None = None,
    overwrite: bool = False,
    inputs: Sequence = (),
) -> Path:
    """Write a binary DICOM Segmentation of a DICOM series, atomically.

    Args:
        labelmap: uint8 (or integer 0..255) 3D labelmap on the source series' grid (as
            :func:`~AttentionMambaSegLib.dicom.read_dicom_series` reads it, (S, H, W) = (K, J, I) in numpy).
        path: destination ending in ``.dcm``.
        classes: the model's classes (model.json dicts or :class:`~.terminology.ClassEntry`); every
            foreground class becomes a segment, numbered 1..N in label-value order. Each needs SNOMED
            CT category and type codes.
        source_files: the DICOM files of the source series (every slice).
        segments: the prediction's segment reports (objects with ``label_value``, ``confidence`` and
            ``review_reason``, e.g. :class:`~.inference.result.SegmentReport`), for the review state
            in each segment's description; None: "review before clinical use" only.
        algorithm_name, algorithm_version: identify the model (e.g. "cardiac-acdc", "1.5.0").
        series_description: SeriesDescription of the SEG (default: "<algorithm_name> segmentation").
        overwrite: replace an existing file at ``path`` (never an input).
        inputs: the files and folders the labelmap was made from (``path`` must not be one of them).

    Returns:
        The written path.

    Raises:
        DicomSegDependencyError: highdicom is not installed.
        ValueError: a 2D or vector labelmap, labels not in ``classes``, a class without codes, source
            files of several series or a multi-frame source, a source slice off the labelmap's grid, a wrong
            extension.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        FileNotFoundError, PermissionError, OSError: see :func:`~AttentionMambaSegLib.images.check_output_path`
            and :func:`~AttentionMambaSegLib.images.atomic_output`.
    """
    from . import images

    hd = require_highdicom()
    path = images.check_output_path(path, allowed=(DICOM_SEG_EXTENSION,), overwrite=overwrite, inputs=inputs)
    if labelmap.GetDimension() != 3 or labelmap.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"A DICOM SEG needs a 3D scalar labelmap, got a {labelmap.GetDimension()}D image with "
            f"{labelmap.GetNumberOfComponentsPerPixel()} component(s)."
        )
    foreground = _coded_foreground(classes)
    labels, lut = _segment_numbers(labelmap, foreground)
    datasets = _read_sources(source_files)
    order = [_slice_index_of(ds, labelmap) for ds in datasets]
    pixels = lut[labels[order]]  # (source slices, rows, columns): segment numbers
    descriptions = _segment_descriptions(hd, foreground, segments, algorithm_name, algorithm_version)
    source = datasets[0]
    seg = _quiet_segmentation(
        hd, datasets, pixels, descriptions, source, algorithm_name, algorithm_version, series_description
    )
    with images.atomic_output(path, overwrite=overwrite, inputs=inputs, verify=_read_back(len(descriptions))) as tmp:
        seg.save_as(str(tmp))
    logger.info(
        "Wrote DICOM SEG %s (%d segments, %d frames, source series %s)",
        path,
        len(descriptions),
        int(seg.NumberOfFrames),
        source.SeriesInstanceUID,
    )
    return path


def _coded_foreground(classes: Sequence) -> list:
    """The foreground :class:`~.terminology.ClassEntry` objects in label-value order (segment n = the n-th).

    Raises:
        ValueError: duplicate label values, codes or colours; a class without SNOMED CT category and type.
    """
    from .terminology import ClassEntry, check_distinct

    entries = sorted(
        (c if isinstance(c, ClassEntry) else ClassEntry.from_dict(c, f"classes[{i}]") for i, c in enumerate(classes)),
        key=lambda c: c.label_value,
    )
    foreground = [c for c in entries if c.label_value != 0]
    check_distinct(foreground)
    uncoded = [c.name for c in foreground if not c.coded]
    if uncoded:
        raise ValueError(
            f"Classes {uncoded} have no SNOMED CT category and type (model.json classes[].snomed); "
            "a DICOM SEG segment must carry them."
        )
    return foreground


def _segment_numbers(labelmap: sitk.Image, foreground: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, lut)``: the labelmap's (K, J, I) array and the uint8 table label value -> segment number.

    Raises:
        ValueError: label values in the labelmap that no class has.
    """
    labels = sitk.GetArrayFromImage(labelmap)
    present = set(np.unique(labels).tolist()) - {0}
    missing = sorted(present - {c.label_value for c in foreground})
    if missing:
        raise ValueError(f"Label values {missing} are in the labelmap but not in the class list.")
    lut = np.zeros(max(256, int(labels.max()) + 1), dtype=np.uint8)
    for number, c in enumerate(foreground, 1):
        lut[c.label_value] = number
    return labels, lut


def _segment_descriptions(hd, foreground: Sequence, segments, algorithm_name: str, algorithm_version: str) -> list:
    """One segment description per foreground class, numbered 1..N, with the algorithm that made it and the
    review state of its segment report (``segments``; None: "review before clinical use" only)."""
    from pydicom.sr.codedict import codes

    from . import __version__

    reports = {s.label_value: s for s in (segments or ())}
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=algorithm_version or __version__
    )
    return [
        _segment_description(hd, number, c, algorithm, algorithm_name, reports.get(c.label_value))
        for number, c in enumerate(foreground, 1)
    ]


def _segment_description(hd, number: int, c, algorithm, algorithm_name: str, report):
    """The highdicom SegmentDescription of segment ``number`` (class ``c``; ``report``: its review state or None)."""
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=c.name[:64],
        segmented_property_category=_code(c.category),
        segmented_property_type=_code(c.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=hd.UID(),
        tracking_id=f"{algorithm_name} label {c.label_value}",
        anatomic_regions=[_code(c.region)] if c.region is not None else None,
        display_color=hd.color.CIELabColor(*_lab(c.color)),
    )
    if c.type_modifier is not None:
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            _code(c.type_modifier)
        ]
    if c.region is not None and c.region_modifier is not None:
        description.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [_code(c.region_modifier)]
    description.SegmentDescription = _review_text(report)[:64]
    return description


def _quiet_segmentation(
    hd, datasets, pixels, descriptions, source, algorithm_name, algorithm_version, series_description
):
    """:func:`_segmentation` without highdicom's INFO log of every copied module or its person-name warning."""
    hd_logger = logging.getLogger("highdicom")  # it logs every module it copies at INFO
    level = hd_logger.level
    hd_logger.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():  # the source's own PatientName, copied as it is, may be a single word
            warnings.filterwarnings(
                "ignore", message=".*unlikely to represent the intended person name", category=UserWarning
            )
            return _segmentation(
                hd, datasets, pixels, descriptions, source, algorithm_name, algorithm_version, series_description
            )
    finally:
        hd_logger.setLevel(level)


def _segmentation(hd, datasets, pixels, descriptions, source, algorithm_name, algorithm_version, series_description):
    from . import __version__

    return hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(getattr(source, "SeriesNumber", 0) or 0) + SERIES_NUMBER_OFFSET,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="AttentionMambaSeg",
        manufacturer_model_name=algorithm_name[:64],
        software_versions=f"AttentionMambaSeg {__version__}",
        device_serial_number="none",
        content_description=f"{algorithm_name} {algorithm_version}".strip()[:64],
        content_label="SEGMENTATION",
        omit_empty_frames=True,
        series_description=(series_description or f"{algorithm_name} segmentation")[:64],
    )


def _read_back(segments: int):
    """A verify function: the written file must read as a DICOM SEG with ``segments`` segments."""

    def verify(tmp: Path) -> None:
        import pydicom

        ds = pydicom.dcmread(str(tmp))
        if ds.SOPClassUID != "1.2.840.10008.5.1.4.1.1.66.4" or len(ds.SegmentSequence) != segments:
            raise ValueError(f"the file read back is not a DICOM SEG with {segments} segments")

    return verify


def _lab(color: Sequence[int]) -> tuple[float, float, float]:
    """CIELab (D65; L* 0..100, a*/b* -128..127) of an sRGB colour 0..255, as DICOM's display colour holds it."""
    from .terminology import srgb_to_lab

    l_star, a_star, b_star = srgb_to_lab(color)
    return (min(max(l_star, 0.0), 100.0), min(max(a_star, -128.0), 127.0), min(max(b_star, -128.0), 127.0))


def _review_text(report) -> str:
    """The segment description: the review state (and confidence) of one segment."""
    if report is None:
        return "automatic segmentation: review before clinical use"
    confidence = "" if report.confidence is None else f", confidence {report.confidence:.3f}"
    if report.review_reason:
        return f"needs review: {report.review_reason}"
    return f"automatic, review before use{confidence}"


def read_dicom_seg_labelmap(
    path: str | os.PathLike, reference: sitk.Image, source_files: Sequence[str | os.PathLike], classes: Sequence
) -> sitk.Image:
    """Read a DICOM SEG written by :func:`write_dicom_seg` back into a labelmap on the source grid.

    Args:
        path: the SEG file.
        reference: the source series as read (its grid receives the labels).
        source_files: the source series' files.
        classes: the classes the SEG was written with (segment n = the n-th foreground class by label value).

    Returns:
        uint8 labelmap with ``reference``'s geometry and the classes' label values.

    Raises:
        DicomSegDependencyError: highdicom is not installed.
        ValueError: the SEG references none of the source slices.
    """
    from .terminology import ClassEntry

    hd = require_highdicom()
    seg = hd.seg.segread(str(path))
    foreground = sorted(
        (c if isinstance(c, ClassEntry) else ClassEntry.from_dict(c) for c in classes), key=lambda c: c.label_value
    )
    values = np.array([0] + [c.label_value for c in foreground if c.label_value != 0], dtype=np.uint8)
    datasets = _read_sources(source_files)
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    if not referenced & {ds.SOPInstanceUID for ds in datasets}:
        raise ValueError(f"{path} references none of the given source slices.")
    uids = [ds.SOPInstanceUID for ds in datasets]
    numbers = seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True)
    labels = np.zeros(sitk.GetArrayViewFromImage(reference).shape, dtype=np.uint8)
    for ds, plane in zip(datasets, numbers):
        labels[_slice_index_of(ds, reference)] = values[plane]
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(reference)
    return image
