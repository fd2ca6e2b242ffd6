"""Reading images and writing segmentations, with an explicit geometry contract.

Reading: :func:`read_image` returns a SimpleITK image whose size, spacing (mm), origin (mm, LPS) and
direction are the file's (NIfTI and NRRD are converted to LPS by ITK, as in 3D Slicer). 2D photos
(PNG/JPEG/TIFF) are 2D images with scalar (grey) or 3-component (RGB) pixels, spacing 1 unless the
file stores one; an alpha channel is dropped. A folder is read as a DICOM series.

Writing: every output follows the rule of :mod:`.outputs` (never over an input, never replacing a file
unless ``overwrite``, written under a temporary name in the destination folder, read back and checked
complete, then created exclusively under its final name; "Wrote" is logged only after that):

* labelmaps: ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha`` (uint8, the input's geometry), ``.png`` (2D);
* ``.seg.nrrd``: a 3D Slicer segmentation file with one segment per class (name, colour, label value,
  SNOMED CT terminology tag, status "in progress"), written with slicerio.

Reading what the file says: a photograph's EXIF orientation is applied (the image is segmented as
viewers show it); a 16-bit colour photograph is scaled to 8 bits (logged); a NIfTI file whose qform and
sform disagree is refused unless ``nifti_transform`` picks one; NaN or infinite voxels of a NIfTI file
(which ITK reads as 0) are refused; a folder holding one multi-frame DICOM file is read as that file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from . import outputs
from .outputs import path_extension

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "OUTPUT_EXTENSIONS",
    "atomic_output",
    "check_file_complete",
    "check_output_path",
    "check_slice_positions",
    "path_extension",
    "read_dicom_series",
    "read_image",
    "write_labelmap",
    "write_overlay_montage",
    "write_segmentation",
    "has_physical_spacing",
    "is_photo_file",
]

IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".jpg", ".jpeg",
                    ".tif", ".tiff", ".bmp", ".dcm")
OUTPUT_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".png")
_PHOTO = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_NIFTI = (".nii", ".nii.gz")
#: ``nifti_transform`` choices: which of a NIfTI header's two transforms places the image.
NIFTI_TRANSFORMS = ("qform", "sform")


#: DICOM Modality codes a model's "modality" text may start with (model.json "modality": "MR").
DICOM_MODALITIES = ("MR", "CT", "PT", "US", "CR", "DX", "MG", "NM", "XA", "XC", "OT")



@contextlib.contextmanager
def itk_warnings_hidden(hide: bool = True):
    """Keep ITK's stderr warnings out of the output while reading (restored afterwards).

    ITK writes warnings such as "unexpected scales in sform" (every original ACDC file) straight to
    stderr, where a user takes them for errors. The product checks the headers it relies on itself
    (:func:`read_image`: NIfTI transforms, truncation, NaN) and says what it finds.
    """
    if not hide:
        yield
        return
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)

def modality_code(text: str | None) -> str | None:
    """The DICOM Modality code a model's modality text starts with ("MR" for "MR"), or None ("dermoscopy")."""
    words = str(text or "").split()
    code = words[0].upper() if words else ""
    return code if code in DICOM_MODALITIES else None


#: DICOM tags read for the series listing.
_TAGS = {"uid": "0020|000e", "description": "0008|103e", "modality": "0008|0060", "image_type": "0008|0008",
         "orientation": "0020|0037", "rows": "0028|0010", "columns": "0028|0011", "number": "0020|0011"}


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
        return (f"{self.index}: {self.description or '(no description)'} [{self.modality or '?'}{kind}] "
                f"{self.columns}x{self.rows}x{len(self.files)}, {len(self.files)} files (UID {self.uid})")


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

    counts: dict = {}
    for h in headers:
        counts[orientation(h)] = counts.get(orientation(h), 0) + 1
    main = max(counts, key=counts.get)
    kept = [f for f, h in zip(files, headers) if orientation(h) == main]
    left_out = len(files) - len(kept)
    first = headers[files.index(kept[0])]
    if left_out:
        logger.info("DICOM series %s: %d file(s) with another orientation left out (a localizer or scout)", uid, left_out)

    def as_int(text):
        try:
            return int(float(text))
        except ValueError:
            return 0

    image_type = first["image_type"].upper()
    return DicomSeries(0, uid, first["description"], first["modality"].upper(), as_int(first["rows"]),
                       as_int(first["columns"]), tuple(kept), "DERIVED" in image_type or "SECONDARY" in image_type,
                       left_out)


def choose_dicom_series(series: Sequence[DicomSeries], choice: str | None = None,
                        modality: str | None = None) -> DicomSeries:
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
            raise ValueError(f"--series {text!r} names {'no' if not hits else len(hits)} series; give its number, UID "
                             f"or a unique part of its description. Series: {listing}")
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
        logger.info("Folder %s holds %d DICOM series; segmenting %s. All: %s", folder, len(listed), chosen.describe(),
                    "; ".join(s.describe() for s in listed))
    check_slice_positions(chosen.files)
    try:
        if len(chosen.files) == 1:  # one file (an enhanced multi-frame file holds the whole volume): read as a file
            image = sitk.ReadImage(chosen.files[0])
        else:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(list(chosen.files))
            image = reader.Execute()
    except RuntimeError as e:
        raise ValueError(f"Could not read DICOM series {chosen.uid} in {folder}: {_itk_reason(e)}") from e
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
        hint = (f"about {round(gap / median) - 1} slice(s) are missing" if gap > median
                else "the slices are unevenly spaced")
        raise ValueError(
            f"DICOM series: slice positions are not evenly spaced: gap of {gap:.2f} mm between files "
            f"{names[i]} and {names[i + 1]}, while the usual gap is {median:.2f} mm; {hint}. "
            "Re-export the complete series (every slice), or convert it to NIfTI/NRRD yourself."
        )


def _itk_reason(error: BaseException) -> str:
    """The last meaningful line of an ITK exception (the rest is source file and line noise)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    if not lines:
        return type(error).__name__
    last = lines[-1]
    for prefix in ("sitk::ERROR:", "ITK ERROR:"):
        if prefix in last:
            last = last.split(prefix, 1)[1].strip()
    return last


def read_image(path: str | os.PathLike, series: str | None = None, modality: str | None = None, *,
               nifti_transform: str | None = None) -> sitk.Image:
    """Read an image file or a DICOM series folder, as the file says it is to be seen and placed.

    Args:
        path: NIfTI (``.nii``, ``.nii.gz``), NRRD, MHA/MHD, PNG, JPEG, TIFF, BMP, a single DICOM file,
            or a folder holding DICOM series.
        series, modality: for a DICOM folder, which series (:func:`choose_dicom_series`).
        nifti_transform: for a NIfTI file whose qform and sform disagree, the one that places the image
            (``"qform"`` or ``"sform"``); None refuses such a file.

    Returns:
        A 2D or 3D (or, for some files, 4D) SimpleITK image in LPS physical space. RGBA photos become
        RGB, grey+alpha photos become grey; a photograph's EXIF orientation is applied (size = the
        displayed width x height); 16-bit colour photographs are scaled to 8 bits (value / 257).

    Raises:
        FileNotFoundError: if the path does not exist.
        ValueError: for an unsupported extension, an unreadable, empty or truncated file, a folder with
            no DICOM, a NIfTI file with NaN or infinite voxels or with disagreeing qform and sform (without
            ``nifti_transform``), or a colour photograph of another bit depth than 8 or 16.
    """
    if nifti_transform is not None and nifti_transform not in NIFTI_TRANSFORMS:
        raise ValueError(f"nifti_transform must be one of {NIFTI_TRANSFORMS} or None, got {nifti_transform!r}.")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Input {path} does not exist.")
    if path.is_dir():
        return read_dicom_series(path, series=series, modality=modality)
    ext = path_extension(path)
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(
            f"Unsupported image file {path.name!r} (extension {ext or 'none'}): supported are "
            f"{', '.join(IMAGE_EXTENSIONS)}, or a DICOM folder."
        )
    if path.stat().st_size == 0:
        raise ValueError(f"Could not read image {path}: the file is empty (0 bytes).")
    try:
        with itk_warnings_hidden(ext in _NIFTI):  # the header is checked below (_scan_file, _place_nifti)
            image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ValueError(f"Could not read {path} as an image: {_read_error_reason(e)}") from e
    header = _scan_file(path, count_nonfinite=ext in _NIFTI)
    if header is not None:
        if header["nonfinite"]:
            raise ValueError(
                f"{path}: {header['nonfinite']} voxel(s) of {header['voxels']} are NaN or infinite (ITK would read "
                "them as 0); fix or mask them (e.g. replace with the background value) before segmenting."
            )
        image = _place_nifti(path, image, header, nifti_transform)
    if ext in _PHOTO and image.GetDimension() == 2:
        image = _read_photo(path, image)
    if is_photo_file(path):  # a photograph's pixel size is unknown: sizes are given in pixels (has_physical_spacing)
        image.SetMetaData(SPACING_KEY, "none")
    return image


#: Image metadata key set by :func:`read_image` on photographs (PNG, JPEG, TIFF, BMP), which keep no
#: physical pixel size (ITK gives them spacing 1, or one from the print resolution): value ``"none"``.
SPACING_KEY = "AttentionMambaSeg_spacing"


def is_photo_file(path: str | os.PathLike) -> bool:
    """True for the file types whose pixels have no physical size (PNG, JPEG, TIFF, BMP)."""
    return path_extension(Path(path)) in _PHOTO


def has_physical_spacing(image: sitk.Image) -> bool:
    """False for an image :func:`read_image` read from a photograph file (sizes in px), True otherwise (mm)."""
    return not (image.HasMetaDataKey(SPACING_KEY) and image.GetMetaData(SPACING_KEY) == "none")


def _read_photo(path: Path, image: sitk.Image) -> sitk.Image:
    """A 2D photograph as viewers show it: alpha dropped, 16-bit colour scaled to 8 bits, EXIF orientation applied."""
    ncomp = image.GetNumberOfComponentsPerPixel()
    if ncomp in (2, 4):
        keep = 1 if ncomp == 2 else 3
        logger.info("Dropping the alpha channel of %s", path.name)
        parts = [sitk.VectorIndexSelectionCast(image, i) for i in range(keep)]
        image = parts[0] if keep == 1 else sitk.Compose(parts)
        ncomp = keep
    if ncomp == 3:
        array = sitk.GetArrayFromImage(image)
        if array.dtype in (np.uint16, np.int16):
            logger.info("%s is a 16-bit colour photograph; scaled to 8 bits (value / 257), as the models' "
                        "photographs are.", path.name)
            array = np.clip(np.rint(array.astype(np.float32) / 257.0), 0, 255).astype(np.uint8)
            image = _with_pixels(array, image)
        elif array.dtype != np.uint8:
            raise ValueError(
                f"{path} is a colour photograph with {array.dtype.itemsize * 8}-bit "
                f"{'float' if array.dtype.kind == 'f' else 'integer'} pixels; the models take 8-bit (or 16-bit) "
                "colour. Save it as an 8-bit RGB PNG or JPEG."
            )
    orientation = _exif_orientation(path)
    if orientation not in (None, 1):
        array = _EXIF_UPRIGHT[orientation](sitk.GetArrayFromImage(image))
        spacing = image.GetSpacing()
        upright = _with_pixels(np.ascontiguousarray(array), image)
        upright.SetSpacing(spacing[::-1] if orientation >= 5 else spacing)
        logger.info("%s: EXIF orientation %d (%s) applied; segmented as viewers show it, %d x %d px.", path.name,
                    orientation, _EXIF_NAMES[orientation], *upright.GetSize())
        image = upright
    return image


def _with_pixels(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    """A 2D image of ``array`` ((H, W) or (H, W, C)) with the spacing, origin and direction of ``like``."""
    out = sitk.GetImageFromArray(array, isVector=array.ndim == 3)
    out.SetSpacing(like.GetSpacing())
    out.SetOrigin(like.GetOrigin())
    out.SetDirection(like.GetDirection())
    return out


#: EXIF orientation (tag 0x0112) -> the (H, W[, C]) array as viewers show it (Pillow's ImageOps.exif_transpose).
_EXIF_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
_EXIF_NAMES = {2: "mirrored", 3: "rotated 180 degrees", 4: "flipped upside down", 5: "transposed",
               6: "rotated 90 degrees clockwise", 7: "transversed", 8: "rotated 90 degrees counter-clockwise"}


def _exif_orientation(path: Path) -> int | None:
    """The EXIF orientation (1..8) a photograph states, or None (no tag, or Pillow cannot read the file)."""
    try:
        from PIL import Image
    except ModuleNotFoundError:
        logger.debug("Pillow is not installed: the EXIF orientation of %s is not read.", path.name)
        return None
    try:
        with Image.open(path) as photo:
            value = photo.getexif().get(0x0112)
    except (OSError, ValueError, SyntaxError) as e:
        logger.debug("No EXIF orientation read from %s (%s).", path.name, e)
        return None
    return int(value) if value in _EXIF_UPRIGHT else None


def check_file_complete(path: str | os.PathLike) -> None:
    """Refuse a truncated gzip file or NIfTI file, which ITK reads without an error (missing voxels = 0).

    Gzip files (``.nii.gz``, ``.nrrd.gz``...) must decompress to the end of their stream; NIfTI-1/2 files
    must hold ``vox_offset + (product of dim) x bitpix / 8`` bytes, as their header says.

    Raises:
        ValueError: naming the file and what is missing.
    """
    _scan_file(path)


#: NIfTI datatype code -> numpy type of a voxel component (the floating-point ones, which may hold NaN).
_NIFTI_FLOATS = {16: np.float32, 64: np.float64, 32: np.float32, 1792: np.float64}


def _nifti_header(head: bytes) -> dict | None:
    """The fields of a NIfTI-1 or NIfTI-2 header this module checks, or None (not a NIfTI header)."""
    import struct

    if len(head) < 348:
        return None
    for order in "<>":
        sizeof_hdr = struct.unpack(order + "i", head[:4])[0]
        if sizeof_hdr == 348:  # NIfTI-1
            u = lambda fmt, at: struct.unpack(order + fmt, head[at:at + struct.calcsize(order + fmt)])  # noqa: E731
            return {"order": order, "version": 1, "dims": u("8h", 40), "datatype": u("h", 70)[0],
                    "bitpix": u("h", 72)[0], "pixdim": u("8f", 76), "offset": int(u("f", 108)[0]),
                    "qform_code": u("h", 252)[0], "sform_code": u("h", 254)[0], "quatern": u("6f", 256),
                    "srow": u("12f", 280)}
        if sizeof_hdr == 540 and len(head) >= 540:  # NIfTI-2
            u = lambda fmt, at: struct.unpack(order + fmt, head[at:at + struct.calcsize(order + fmt)])  # noqa: E731
            return {"order": order, "version": 2, "dims": u("8q", 16), "datatype": u("h", 12)[0],
                    "bitpix": u("h", 14)[0], "pixdim": u("8d", 104), "offset": int(u("q", 168)[0]),
                    "qform_code": u("i", 344)[0], "sform_code": u("i", 348)[0], "quatern": u("6d", 352),
                    "srow": u("12d", 400)}
    return None


class _NonFiniteCounter:
    """Counts NaN and infinite voxels in the raw bytes of a floating-point NIfTI file, block by block."""

    def __init__(self, header: dict):
        kind = _NIFTI_FLOATS.get(header["datatype"])
        self.dtype = None if kind is None else np.dtype(kind).newbyteorder(header["order"])
        self.start = max(header["offset"], 348)
        self.count = 0
        self.rest = b""

    def add(self, position: int, block: bytes) -> None:
        if self.dtype is None:
            return
        end = position + len(block)
        if end <= self.start:
            return
        data = self.rest + block[max(0, self.start - position):]
        usable = len(data) - len(data) % self.dtype.itemsize
        values = np.frombuffer(data[:usable], dtype=self.dtype)
        self.count += int(values.size - np.count_nonzero(np.isfinite(values)))
        self.rest = data[usable:]


def _scan_file(path: str | os.PathLike, count_nonfinite: bool = False) -> dict | None:
    """Read a file to its end (gzip streams decompressed); check a NIfTI file's size against its header.

    Returns:
        For a NIfTI file, its header fields (:func:`_nifti_header`) plus ``voxels`` and ``nonfinite`` (the
        NaN or infinite voxel components, counted when ``count_nonfinite``); None for other files.

    Raises:
        ValueError: a truncated or corrupt file; a NIfTI pixdim that is not a positive number.
    """
    import gzip
    import zlib

    path = Path(path)
    name = path.name.lower()
    nifti = name.endswith(".nii") or name.endswith(".nii.gz")
    opener = gzip.open if name.endswith(".gz") else open
    total, head, header, counter = 0, b"", None, None
    try:
        with opener(path, "rb") as f:
            while True:
                block = f.read(1 << 20)
                if not block:
                    break
                if len(head) < 544:
                    head += block[: 544 - len(head)]
                    if nifti and count_nonfinite and header is None and len(head) >= 348:
                        header = _nifti_header(head)
                        counter = _NonFiniteCounter(header) if header is not None else None
                if counter is not None:
                    counter.add(total, block)
                total += len(block)
    except (EOFError, OSError, zlib.error) as e:
        raise ValueError(
            f"Could not read {path}: the file is truncated or corrupt ({e}). Copy or export it again."
        ) from e
    if not nifti:
        return None
    header = _nifti_header(head)
    if header is None:
        return None  # not a NIfTI header ITK would accept either
    dims, pixdim, bitpix, offset = header["dims"], header["pixdim"], header["bitpix"], header["offset"]
    # ITK reads a pixdim of 0 or NaN as 1 mm: the image would be segmented at a made-up scale
    for axis in range(1, 1 + max(0, min(3, dims[0]))):
        value = pixdim[axis]
        if not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"{path}: the NIfTI header's pixdim[{axis}] (the voxel size along axis {axis - 1}) is {value}; it must "
                "be a positive number of millimetres. Fix the header (e.g. nibabel's header.set_zooms) or export "
                "the image again."
            )
    voxels = 1
    for d in dims[1:1 + max(0, min(7, dims[0]))]:
        voxels *= max(1, int(d))
    expected = max(offset, 348) + voxels * max(1, bitpix) // 8
    if total < expected:
        raise ValueError(
            f"Could not read {path}: the file is truncated ({total:,} of the {expected:,} bytes its NIfTI header "
            "announces). Copy or export it again."
        )
    header["voxels"] = voxels
    header["nonfinite"] = counter.count if counter is not None else 0
    return header


def _nifti_affines(header: dict) -> dict[str, np.ndarray]:
    """The header's transforms in use (code > 0), each a 3x4 voxel-to-RAS matrix (mm)."""
    affines = {}
    pixdim = header["pixdim"]
    if header["qform_code"] > 0:
        b, c, d, *offset = (float(v) for v in header["quatern"])
        a = math.sqrt(max(0.0, 1.0 - b * b - c * c - d * d))
        rotation = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                             [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                             [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
        qfac = -1.0 if pixdim[0] < 0 else 1.0
        zooms = [float(v) if v > 0 else 1.0 for v in pixdim[1:4]]
        affines["qform"] = np.column_stack([rotation @ np.diag([zooms[0], zooms[1], qfac * zooms[2]]), offset])
    if header["sform_code"] > 0:
        affines["sform"] = np.asarray(header["srow"], dtype=float).reshape(3, 4)
    return affines


def _place_nifti(path: Path, image: sitk.Image, header: dict, choice: str | None) -> sitk.Image:
    """The image placed by one transform: refuse a header whose qform and sform disagree unless ``choice`` picks one."""
    affines = _nifti_affines(header)
    if len(affines) < 2 or image.GetDimension() not in (2, 3):
        return image
    q, s = affines["qform"], affines["sform"]
    shift = float(np.linalg.norm(q[:, 3] - s[:, 3]))
    zq, zs = np.linalg.norm(q[:, :3], axis=0), np.linalg.norm(s[:, :3], axis=0)
    relative = (q[:, :3] / np.where(zq > 0, zq, 1)).T @ (s[:, :3] / np.where(zs > 0, zs, 1))
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (float(np.trace(relative)) - 1.0) / 2.0))))
    scale = float(np.max(np.abs(zq - zs) / np.maximum(zq, 1e-6)))
    if shift <= 0.01 and angle <= 0.01 and scale <= 1e-4:
        return image
    if choice is None:
        raise ValueError(
            f"{path}: the NIfTI header's two transforms disagree by {angle:.1f} degrees and {shift:.1f} mm"
            + (f" (voxel sizes {np.round(zq, 4).tolist()} vs {np.round(zs, 4).tolist()} mm)" if scale > 1e-4 else "")
            + f": the qform (code {header['qform_code']}) puts the first voxel at RAS {np.round(q[:, 3], 2).tolist()}, "
            f"the sform (code {header['sform_code']}) at RAS {np.round(s[:, 3], 2).tolist()}. Programs differ in which "
            "one they use, so a segmentation could sit off the image. Say which is right: --nifti-transform qform or "
            "--nifti-transform sform (nifti_transform=...), or fix the header (e.g. nibabel: img.set_qform(img.get_sform()) "
            "keeps the sform)."
        )
    matrix = np.diag([-1.0, -1.0, 1.0]) @ affines[choice]  # RAS -> LPS
    dim = image.GetDimension()
    linear = matrix[:dim, :dim]
    spacing = np.linalg.norm(linear, axis=0)
    placed = sitk.Image(image)
    placed.SetSpacing([float(v) for v in spacing])
    placed.SetDirection([float(v) for v in (linear / spacing).ravel()])
    placed.SetOrigin([float(v) for v in matrix[:dim, 3]])
    logger.info("%s: the NIfTI qform and sform disagree (%.1f degrees, %.1f mm); placed by the %s, as asked.",
                path.name, angle, shift, choice)
    return placed


def _read_error_reason(error: BaseException) -> str:
    text = str(error)
    import re

    m = re.search(r"axis (\d+) spacing \((-?[0-9.eE+-]+)\) invalid", text)
    if m:
        return f"zero or invalid spacing ({m.group(2)}) on axis {m.group(1)} in the header; fix the header's spacing."
    m = re.search(r"Zero-valued spacing.*?to \[([^\]]*)\]", text, re.S)
    if m:
        values = [v.strip() for v in m.group(1).split(",")]
        axes = [str(i) for i, v in enumerate(values) if v in ("0", "-0")]
        return f"zero spacing on axis {', '.join(axes) or '?'} ({m.group(1)}); fix the header's spacing."
    if "Unable to determine ImageIO reader" in text:
        return "not a readable image file (unknown or corrupt format)."
    return _itk_reason(error)


def check_output_path(path: str | os.PathLike, *, allowed: Sequence[str] = OUTPUT_EXTENSIONS,
                      overwrite: bool = True, inputs: Sequence = ()) -> Path:
    """Check, before any work is done, that ``path`` can be written (:func:`.outputs.check_output_path`).

    Args:
        path: the output file.
        allowed: accepted extensions.
        overwrite: when False, an existing file at ``path`` is an error.
        inputs: files and folders the command reads; ``path`` must not be one of them.

    Raises:
        ValueError: unsupported extension; ``path`` is an existing folder or an input.
        NotADirectoryError: a parent of ``path`` is a file.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        FileNotFoundError: the destination folder does not exist.
        PermissionError: the destination folder is not writable.
    """
    return outputs.check_output_path(path, allowed=allowed, overwrite=overwrite, inputs=inputs)


def atomic_output(path: str | os.PathLike, *, overwrite: bool = False, inputs: Sequence = (),
                  verify=None) -> contextlib.AbstractContextManager[Path]:
    """:func:`.outputs.write_output` for the image, segmentation and JSON extensions of this module.

    Yields a temporary path next to ``path``; when the block ends, the file is checked (``verify(tmp)``)
    and committed (created exclusively, or replacing the earlier file with ``overwrite``). On any
    exception (including KeyboardInterrupt) the temporary file is deleted and ``path`` is left as it was.

    Raises:
        As :func:`.outputs.write_output`.
    """
    return outputs.write_output(path, overwrite=overwrite, inputs=inputs, verify=verify,
                                allowed=IMAGE_EXTENSIONS + OUTPUT_EXTENSIONS + (".json",))


def _read_back(expected: np.ndarray, *, reader=None):
    """A verify function: the written file read again (header and voxels) must hold ``expected``."""
    def verify(tmp: Path) -> None:
        check_file_complete(tmp)
        array = reader(tmp) if reader is not None else sitk.GetArrayFromImage(sitk.ReadImage(str(tmp)))
        if array.shape != expected.shape or not np.array_equal(array, expected):
            raise ValueError(f"the file read back holds other values or shape ({array.shape}) than those written "
                             f"({expected.shape})")
    return verify


def _as_2d(labelmap: sitk.Image) -> sitk.Image:
    if labelmap.GetDimension() == 2:
        return labelmap
    size = labelmap.GetSize()
    if labelmap.GetDimension() == 3 and sum(s > 1 for s in size) <= 2 and 1 in size:
        axis = size.index(1)
        extract_size = list(size)
        extract_size[axis] = 0
        return sitk.Extract(labelmap, extract_size, [0, 0, 0])
    raise ValueError(
        f"PNG output needs a 2D labelmap (or a single slice), got size {size}. Write .nii.gz, .nrrd or "
        ".seg.nrrd instead."
    )


def _check_labelmap(labelmap: sitk.Image) -> sitk.Image:
    if labelmap.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("A labelmap must have scalar pixels.")
    if labelmap.GetPixelID() != sitk.sitkUInt8:
        arr = sitk.GetArrayViewFromImage(labelmap)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"Label values must lie in 0..255, got {arr.min()}..{arr.max()}.")
        labelmap = sitk.Cast(labelmap, sitk.sitkUInt8)
    return labelmap


def write_labelmap(
    labelmap: sitk.Image, path: str | os.PathLike, classes: Sequence[dict] | None = None, flagged=(), *,
    overwrite: bool = False, inputs: Sequence = (),
) -> Path:
    """Write a labelmap under the output rule (:mod:`.outputs`); the format follows the extension.

    Args:
        labelmap: uint8 (or integer 0..255) scalar image; its geometry is written as is.
        path: ``.nii.gz``/``.nii``/``.nrrd``/``.mha`` (geometry kept), ``.png`` (2D or one slice; no
            geometry; grey 0/255 for one class with label value 1, else a palette PNG whose index is the
            label value, :func:`.masks.png_mask`), or ``.seg.nrrd`` (Slicer segmentation; needs ``classes``).
        classes: class descriptions as in model.json, required for ``.seg.nrrd`` (and the PNG palette).
        flagged: label values whose ``.seg.nrrd`` segments get the status "flagged" (needs review).
        overwrite: replace an existing file at ``path`` (never an input).
        inputs: the files the labelmap was made from (``path`` must not be one of them).

    Returns:
        The written path.

    Raises:
        ValueError: unsupported extension, vector pixels, values outside 0..255, PNG of a volume,
            ``.seg.nrrd`` without classes, ``path`` is an input.
        FileExistsError: ``path`` exists (before or during the write) and ``overwrite`` is False.
        FileNotFoundError, PermissionError: see :func:`check_output_path`.
        OSError: :class:`.outputs.OutputError` for a full disk or a file that reads back incomplete.
    """
    path = check_output_path(path, overwrite=overwrite, inputs=inputs)
    ext = path_extension(path)
    if ext == ".seg.nrrd":
        if classes is None:
            raise ValueError("Writing a .seg.nrrd needs the class list (names, colours, label values).")
        return write_segmentation(labelmap, path, classes, flagged=flagged, overwrite=overwrite, inputs=inputs)
    labelmap = _check_labelmap(labelmap)
    if ext == ".png":  # 0/255 for one class, else a palette PNG in the class colours (:mod:`.masks`)
        from .masks import write_png_mask

        write_png_mask(_as_2d(labelmap), path, classes, overwrite=overwrite, inputs=inputs)
        logger.info("Wrote labelmap %s", path)
        return path
    with atomic_output(path, overwrite=overwrite, inputs=inputs,
                       verify=_read_back(sitk.GetArrayFromImage(labelmap))) as tmp:
        sitk.WriteImage(labelmap, str(tmp), useCompression=ext != ".png")
    logger.info("Wrote labelmap %s", path)
    return path


def _ijk_to_lps(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(voxels in (i, j, k) order, 4x4 IJK-to-LPS) of a 2D or 3D labelmap."""
    arr = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 2:
        arr = arr[None]
        spacing = (*image.GetSpacing(), 1.0)
        origin = (*image.GetOrigin(), 0.0)
        d2 = np.asarray(image.GetDirection(), dtype=float).reshape(2, 2)
        direction = np.eye(3)
        direction[:2, :2] = d2
    else:
        spacing, origin = image.GetSpacing(), image.GetOrigin()
        direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction * np.asarray(spacing, dtype=float)[None, :]
    matrix[:3, 3] = origin
    return np.ascontiguousarray(np.transpose(arr, (2, 1, 0))), matrix


def write_segmentation(
    labelmap: sitk.Image, path: str | os.PathLike, classes: Sequence[dict], *, status: str = "inprogress",
    flagged=(), overwrite: bool = False, inputs: Sequence = (),
) -> Path:
    """Write a 3D Slicer segmentation (``.seg.nrrd``) under the output rule (:mod:`.outputs`).

    All segments share layer 0 with their model label values, so Slicer and slicerio read the same
    numbers back. Every class gets a segment, even when empty.

    Args:
        labelmap: 2D or 3D integer labelmap (values 0..255); a 2D one is written as one slice.
        path: destination ending in ``.seg.nrrd``.
        classes: model.json class dicts or :class:`~AttentionMambaSegLib.terminology.ClassEntry`
            objects (read and checked by :mod:`.terminology`); entries with label_value 0 are skipped.
        status: segment status tag (``"inprogress"``: a result to review before use).
        flagged: label values whose segments get the status ``"flagged"`` instead (low confidence, or
            not found: :mod:`.inference.confidence`).
        overwrite, inputs: as :func:`write_labelmap`.

    Returns:
        The written path.

    Raises:
        ValueError: wrong extension, bad labelmap, duplicate label values, or labels present in the
            image but missing from ``classes``.
        FileExistsError, OSError: as :func:`write_labelmap`.
    """
    import slicerio

    path = check_output_path(path, allowed=(".seg.nrrd",), overwrite=overwrite, inputs=inputs)
    labelmap = _check_labelmap(labelmap)
    if labelmap.GetDimension() not in (2, 3):
        raise ValueError(f"A segmentation needs a 2D or 3D labelmap, got {labelmap.GetDimension()}D.")
    from .terminology import ClassEntry, check_distinct

    voxels, ijk_to_lps = _ijk_to_lps(labelmap)
    entries = [c if isinstance(c, ClassEntry) else ClassEntry.from_dict(c, f"classes[{i}]")
               for i, c in enumerate(classes)]
    foreground = [e for e in entries if e.label_value != 0]
    values = [e.label_value for e in foreground]
    check_distinct(foreground)  # label values, codes and colours
    present = set(np.unique(voxels).tolist()) - {0}
    missing = sorted(present - set(values))
    if missing:
        raise ValueError(f"Label values {missing} are in the labelmap but not in the class list {values}.")
    segments = []
    for c in foreground:
        segment = {
            "id": f"Segment_{c.label_value}",
            "name": c.name,
            "labelValue": c.label_value,
            "layer": 0,
            "color": [round(v, 6) for v in c.color_float()],
            "colorAutoGenerated": False,
            "nameAutoGenerated": False,
            "status": "flagged" if c.label_value in set(flagged) else status,
        }
        term = c.slicerio_terminology()
        if term is not None:
            segment["terminology"] = term
        segments.append(segment)
    segmentation = {
        "voxels": voxels,
        "ijkToLPS": ijk_to_lps,
        "encoding": "gzip",
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
        "referenceImageExtentOffset": [0, 0, 0],
        "segments": segments,
    }
    layers = np.transpose(voxels, (2, 1, 0))  # (k, j, i): as ITK reads the NRRD back
    with atomic_output(path, overwrite=overwrite, inputs=inputs, verify=_read_back(layers)) as tmp:
        slicerio.write_segmentation(str(tmp), segmentation)
    logger.info("Wrote segmentation %s (%d segments)", path, len(segments))
    return path


def write_overlay_montage(
    image: sitk.Image,
    labelmap: sitk.Image,
    classes: Sequence[dict],
    path: str | os.PathLike,
    *,
    max_slices: int = 12,
    columns: int = 4,
    alpha: float = 0.45,
    overwrite: bool = False,
    inputs: Sequence = (),
) -> Path:
    """Write a PNG montage of slices with the segments overlaid in their colours (output rule: :mod:`.outputs`).

    Slices are taken along the same axis the models use (LPS orientation, largest-spacing-else-z
    rule), with rows/columns as in the slice arrays; up to ``max_slices`` evenly spaced slices,
    chosen among those that contain labels when there are any. Each tile of a volume carries its slice
    number (``k/S``, counted from 1 along the slicing axis); below the tiles a legend gives each class
    name in its colour (:func:`.masks.add_legend`).

    Args:
        image: 2D or 3D grey or RGB image.
        labelmap: integer labelmap on the same grid.
        classes: ``[{label_value, name, color [r, g, b]}]``.
        path: ``.png`` destination.
        max_slices, columns: montage layout.
        alpha: overlay opacity.
        overwrite, inputs: as :func:`write_labelmap`.

    Returns:
        The written path.

    Raises:
        ValueError: if image and labelmap sizes differ or the extension is not .png.
        FileExistsError, OSError: as :func:`write_labelmap`.
    """
    from PIL import Image

    from .preprocessing import image_to_slices

    path = check_output_path(path, allowed=(".png",), overwrite=overwrite, inputs=inputs)
    if image.GetSize() != labelmap.GetSize():
        raise ValueError(f"Image size {image.GetSize()} and labelmap size {labelmap.GetSize()} differ.")
    slices, _ = image_to_slices(image, None, "LPS")  # (S, C, H, W) float32
    labels, _ = image_to_slices(_check_labelmap(labelmap), None, "LPS", is_label=True)  # (S, H, W)
    candidates = [s for s in range(labels.shape[0]) if labels[s].any()] or list(range(labels.shape[0]))
    if len(candidates) > max_slices:
        candidates = [candidates[int(round(i))] for i in np.linspace(0, len(candidates) - 1, max_slices)]
    if slices.shape[1] == 3:
        lo, hi = 0.0, 255.0
    else:
        lo, hi = np.percentile(slices, [0.5, 99.5])
        hi = hi if hi > lo else lo + 1.0
    lut = np.zeros((256, 3), dtype=np.float32)
    for c in classes:
        lut[int(c["label_value"])] = c["color"]
    from .masks import add_legend, label_tile

    tiles = []
    for s in candidates:
        x = slices[s]
        grey = np.clip((x - lo) / (hi - lo), 0, 1) * 255.0
        rgb = np.repeat(grey, 3, axis=0) if grey.shape[0] == 1 else grey[:3]
        rgb = np.moveaxis(rgb, 0, -1)
        mask = labels[s] > 0
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * lut[labels[s][mask]]
        tile = rgb.astype(np.uint8)
        tiles.append(label_tile(tile, f"{s + 1}/{labels.shape[0]}") if labels.shape[0] > 1 else tile)
    h, w = tiles[0].shape[:2]
    columns = max(1, min(columns, len(tiles)))
    rows = int(np.ceil(len(tiles) / columns))
    canvas = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    for n, tile in enumerate(tiles):
        r, c = divmod(n, columns)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    canvas = add_legend(canvas, classes, "slice number / slices (along the slicing axis)"
                        if labels.shape[0] > 1 else "")

    def read_png(tmp: Path) -> np.ndarray:
        with Image.open(tmp) as png:
            return np.asarray(png.convert("RGB"))

    with atomic_output(path, overwrite=overwrite, inputs=inputs, verify=_read_back(canvas, reader=read_png)) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    logger.info("Wrote montage %s (%d slices)", path, len(tiles))
    return path
