"""Reading DICOM series: listing the series of a folder, choosing one, and reading it as a volume.

A folder may hold several series (and localizers sharing a series UID): :func:`list_dicom_series` lists
them, :func:`choose_dicom_series` picks the one to segment (the user's choice, else by the model's
modality, original before derived, most files), and :func:`read_dicom_series` reads it after
:func:`check_slice_positions` has checked that no slice is missing or duplicated. :func:`.images.read_image`
reads a folder through this module.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .images import itk_reason, itk_warnings_hidden

logger = logging.getLogger(__name__)

__all__ = [
    "DICOM_MODALITIES",
    "DicomSeries",
    "check_slice_positions",
    "choose_dicom_series",
    "list_dicom_series",
    "modality_code",
    "read_dicom_series",
]

#: DICOM Modality codes a model's "modality" text may start with (model.json "modality": "MR").
DICOM_MODALITIES = ("MR", "CT", "PT", "US", "CR", "DX", "MG", "NM", "XA", "XC", "OT")


def modality_code(text: str | None) -> str | None:
    """The DICOM Modality code a model's modality text starts with ("MR" for "MR"), or None ("dermoscopy")."""
    words = str(text or "").split()
    code = words[0].upper() if words else ""
    return code if code in DICOM_MODALITIES else None


#: DICOM tags read for the series listing.
_TAGS = {
    "uid": "0020|000e",
    "description": "0008|103e",
    "modality": "0008|0060",
    "image_type": "0008|0008",
    "orientation": "0020|0037",
    "rows": "0028|0010",
    "columns": "0028|0011",
    "number": "0020|0011",
}


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series of a folder, as listed for the user.

    Attributes:
        index: 1-based position in the listing (for ``--series N``).
        uid: SeriesInstanceUID.
        description: SeriesDescription ("" when absent).
        modality: the Modality tag (MR, CT, ...; "" when absent).
        rows, columns: pixels of a slice.
        files: the series' files, localizers left out.
        derived: ImageType says DERIVED or SECONDARY (a reformat, a crop, a map).
        left_out: files of the series left out because their orientation differs (localizers).
    """

    index: int
    uid: str
    description: str
    modality: str
    rows: int
    columns: int
    files: tuple[str, ...]
    derived: bool
    left_out: int = 0

    def describe(self) -> str:
        """One line: number, description, modality, size and files."""
        kind = ", derived" if self.derived else ""
        return (
            f"{self.index}: {self.description or '(no description)'} [{self.modality or '?'}{kind}] "
            f"{self.columns}x{self.rows}x{len(self.files)}, {len(self.files)} files (UID {self.uid})"
        )


def _header(path: str) -> dict:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return {k: (reader.GetMetaData(t).strip() if reader.HasMetaDataKey(t) else "") for k, t in _TAGS.items()}


def list_dicom_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """Every DICOM series under ``folder`` (searched recursively), largest first.

    Within a series, files whose ImageOrientationPatient differs from that of most files (a localizer
    sharing the series UID) are left out, with one log line.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: it holds no DICOM series.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"DICOM folder {folder} does not exist.")
    found: list[tuple[str, list[str]]] = []
    with itk_warnings_hidden():  # ITK warns on stderr for every non-DICOM folder
        for directory, _, _ in os.walk(folder):
            for series_id in sitk.ImageSeriesReader.GetGDCMSeriesIDs(directory) or ():
                found.append((series_id, list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(directory, series_id))))
    if not found:
        sample = sorted(p.name for p in folder.iterdir())[:5]
        raise ValueError(
            f"No DICOM series found in folder {folder} (contents: {sample or 'empty'}). "
            "Give a folder of DICOM files, or the path of an image file (NIfTI, NRRD, MHA, PNG, JPEG)."
        )
    series = [_series_entry(uid, files) for uid, files in found]
    series.sort(key=lambda s: -len(s.files))
    return [dataclasses.replace(s, index=i) for i, s in enumerate(series, 1)]


def _series_entry(uid: str, files: list[str]) -> DicomSeries:
    headers = []
    for f in files:
        try:
            headers.append(_header(f))
        except RuntimeError:
            headers.append({k: "" for k in _TAGS})

    def orientation(h):
        try:
            return tuple(round(float(v), 3) for v in h["orientation"].split("\\"))
        except ValueError:
            return ()

    counts: dict[tuple, int] = {}
    for h in headers:
        counts[orientation(h)] = counts.get(orientation(h), 0) + 1
    main = max(counts, key=lambda key: counts[key])
    kept = [f for f, h in zip(files, headers) if orientation(h) == main]
    left_out = len(files) - len(kept)
    first = headers[files.index(kept[0])]
    if left_out:
        logger.info(
            "DICOM series %s: %d file(s) with another orientation left out (a localizer or scout)", uid, left_out
        )

    def as_int(text):
        try:
            return int(float(text))
        except ValueError:
            return 0

    image_type = first["image_type"].upper()
    return DicomSeries(
        0,
        uid,
        first["description"],
        first["modality"].upper(),
        as_int(first["rows"]),
        as_int(first["columns"]),
        tuple(kept),
        "DERIVED" in image_type or "SECONDARY" in image_type,
        left_out,
    )


def choose_dicom_series(
    series: Sequence[DicomSeries], choice: str | None = None, modality: str | None = None
) -> DicomSeries:
    """The series to segment.

    Args:
        series: :func:`list_dicom_series` of a folder.
        choice: the user's choice: a listing number, a SeriesInstanceUID, or (part of) a SeriesDescription
            (case-insensitive; it must name one series).
        modality: the model's modality (model.json text, e.g. "MR"): without a choice, series of that modality come
            first, then original (not derived) series, then the most files.

    Raises:
        ValueError: a choice that names no series or several (the message lists them).
    """
    listing = "; ".join(s.describe() for s in series)
    if choice:
        text = str(choice).strip()
        hits = [s for s in series if text == str(s.index) or text == s.uid]
        if not hits:
            hits = [s for s in series if text.lower() in s.description.lower()]
        if len(hits) != 1:
            raise ValueError(
                f"--series {text!r} names {'no' if not hits else len(hits)} series; give its number, UID "
                f"or a unique part of its description. Series: {listing}"
            )
        return hits[0]
    code = modality_code(modality)

    def rank(s: DicomSeries):
        return (bool(code) and s.modality != code, s.derived, -len(s.files))

    return min(series, key=rank)


def read_dicom_series(folder: str | os.PathLike, series: str | None = None, modality: str | None = None) -> sitk.Image:
    """Read one DICOM series of ``folder`` (searched recursively).

    Args:
        folder: a folder holding one or more DICOM series.
        series: which one (see :func:`choose_dicom_series`); default chosen by ``modality`` and size.
        modality: the model's modality (model.json text, e.g. "MR"), for the default choice.

    Returns:
        The 3D volume (LPS geometry from ImagePositionPatient / ImageOrientationPatient); its metadata
        holds the series' Modality (``0008|0060``) and SeriesInstanceUID (``0020|000e``).

    Raises:
        FileNotFoundError: if the folder does not exist.
        ValueError: if it holds no DICOM series, the choice names none, or the series cannot be read.
    """
    listed = list_dicom_series(folder)
    chosen = choose_dicom_series(listed, series, modality)
    if len(listed) > 1:
        logger.info(
            "Folder %s holds %d DICOM series; segmenting %s. All: %s",
            folder,
            len(listed),
            chosen.describe(),
            "; ".join(s.describe() for s in listed),
        )
    check_slice_positions(chosen.files)
    try:
        if len(chosen.files) == 1:  # one file (an enhanced multi-frame file holds the whole volume): read as a file
            image = sitk.ReadImage(chosen.files[0])
        else:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(list(chosen.files))
            image = reader.Execute()
    except RuntimeError as e:
        raise ValueError(f"Could not read DICOM series {chosen.uid} in {folder}: {itk_reason(e)}") from e
    image.SetMetaData("0008|0060", chosen.modality)
    image.SetMetaData("0020|000e", chosen.uid)
    return image


def check_slice_positions(files: Sequence[str], rtol: float = 0.01, atol_mm: float = 0.01) -> None:
    """Check that the slices of a DICOM series are evenly spaced along the slice normal.

    The position of each file (ImagePositionPatient projected on the normal of ImageOrientationPatient)
    is read from its header. A missing or duplicated slice makes the gaps uneven; ITK would then
    silently use an averaged spacing and every slice after the gap would be misplaced.

    Args:
        files: the series' files (any order).
        rtol, atol_mm: a gap may differ from the median gap by ``max(rtol * median, atol_mm)``.

    Raises:
        ValueError: uneven gaps (the message names the gap and the two files around it) or two
            slices at the same position.
    """
    if len(files) < 3:
        return
    positions, normal = [], None
    for f in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(f))
        try:
            reader.ReadImageInformation()
            ipp = [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]
            if normal is None:
                iop = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
                normal = np.cross(iop[:3], iop[3:6])
        except (RuntimeError, ValueError, IndexError) as e:
            logger.debug("Cannot check the slice positions of %s (%s); skipping the check.", f, e)
            return
        if len(ipp) != 3:
            return
        positions.append(float(np.dot(ipp, normal)))
    order = np.argsort(positions)
    sorted_pos = np.asarray(positions)[order]
    gaps = np.diff(sorted_pos)
    median = float(np.median(gaps))
    names = [Path(files[i]).name for i in order]
    zero = np.flatnonzero(np.abs(gaps) <= atol_mm)
    if zero.size:
        i = int(zero[0])
        raise ValueError(
            f"DICOM series: files {names[i]} and {names[i + 1]} are at the same slice position "
            f"({sorted_pos[i]:.2f} mm): the folder holds duplicate slices or two series; put one series per folder."
        )
    tol = max(rtol * median, atol_mm)
    bad = np.flatnonzero(np.abs(gaps - median) > tol)
    if bad.size:
        i = int(bad[np.argmax(np.abs(gaps[bad] - median))])
        gap = float(gaps[i])
        hint = (
            f"about {round(gap / median) - 1} slice(s) are missing"
            if gap > median
            else "the slices are unevenly spaced"
        )
        raise ValueError(
            f"DICOM series: slice positions are not evenly spaced: gap of {gap:.2f} mm between files "
            f"{names[i]} and {names[i + 1]}, while the usual gap is {median:.2f} mm; {hint}. "
            "Re-export the complete series (every slice), or convert it to NIfTI/NRRD yourself."
        )
