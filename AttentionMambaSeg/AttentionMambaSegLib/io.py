"""Reading images and writing segmentations, with an explicit geometry contract.

Reading: :func:`read_image` returns a SimpleITK image whose size, spacing (mm), origin (mm, LPS) and
direction are the file's (NIfTI and NRRD are converted to LPS by ITK, as in 3D Slicer). 2D photos
(PNG/JPEG/TIFF) are 2D images with scalar (grey) or 3-component (RGB) pixels, spacing 1 unless the
file stores one; an alpha channel is dropped. A folder is read as a DICOM series.

Writing: every output goes to a temporary file in the destination folder first and is renamed into
place (``os.replace``) only when complete, so an interrupted run never leaves a partial file:

* labelmaps: ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha`` (uint8, the input's geometry), ``.png`` (2D);
* ``.seg.nrrd``: a 3D Slicer segmentation file with one segment per class (name, colour, label value,
  SNOMED CT terminology tag, status "in progress"), written with slicerio.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import SimpleITK as sitk

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
]

IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".jpg", ".jpeg",
                    ".tif", ".tiff", ".bmp", ".dcm")
OUTPUT_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".png")
_COMPOUND = (".seg.nrrd", ".nii.gz")
_PHOTO = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")



def path_extension(path: str | os.PathLike) -> str:
    """Lower-case extension, recognising ``.seg.nrrd`` and ``.nii.gz`` as one extension."""
    name = Path(path).name.lower()
    for ext in _COMPOUND:
        if name.endswith(ext):
            return ext
    return Path(name).suffix


#: DICOM Modality codes a model's "modality" text may start with (model.json "modality": "MR").
DICOM_MODALITIES = ("MR", "CT", "PT", "US", "CR", "DX", "MG", "NM", "XA", "XC", "OT")


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
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK warns on stderr for every non-DICOM folder
    try:
        for directory, _, _ in os.walk(folder):
            for series_id in sitk.ImageSeriesReader.GetGDCMSeriesIDs(directory) or ():
                found.append((series_id, list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(directory, series_id))))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)
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
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    try:
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


def read_image(path: str | os.PathLike, series: str | None = None, modality: str | None = None) -> sitk.Image:
    """Read an image file or a DICOM series folder.

    Args:
        path: NIfTI (``.nii``, ``.nii.gz``), NRRD, MHA/MHD, PNG, JPEG, TIFF, BMP, a single DICOM file,
            or a folder holding DICOM series.
        series, modality: for a DICOM folder, which series (:func:`choose_dicom_series`).

    Returns:
        A 2D or 3D (or, for some files, 4D) SimpleITK image in LPS physical space. RGBA photos become
        RGB, grey+alpha photos become grey.

    Raises:
        FileNotFoundError: if the path does not exist.
        ValueError: for an unsupported extension, an unreadable file or a folder with no DICOM.
    """
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
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ValueError(f"Could not read {path} as an image: {_read_error_reason(e)}") from e
    check_file_complete(path)
    if ext in _PHOTO and image.GetDimension() == 2:
        ncomp = image.GetNumberOfComponentsPerPixel()
        if ncomp in (2, 4):
            keep = 1 if ncomp == 2 else 3
            logger.info("Dropping the alpha channel of %s", path.name)
            parts = [sitk.VectorIndexSelectionCast(image, i) for i in range(keep)]
            image = parts[0] if keep == 1 else sitk.Compose(parts)
    return image


def check_file_complete(path: str | os.PathLike) -> None:
    """Refuse a truncated gzip file or NIfTI file, which ITK reads without an error (missing voxels = 0).

    Gzip files (``.nii.gz``, ``.nrrd.gz``...) must decompress to the end of their stream; NIfTI-1/2 files
    must hold ``vox_offset + (product of dim) x bitpix / 8`` bytes, as their header says.

    Raises:
        ValueError: naming the file and what is missing.
    """
    import gzip
    import struct
    import zlib

    path = Path(path)
    name = path.name.lower()
    opener = gzip.open if name.endswith(".gz") else open
    total, head = 0, b""
    try:
        with opener(path, "rb") as f:
            while True:
                block = f.read(1 << 20)
                if not block:
                    break
                if len(head) < 544:
                    head += block[: 544 - len(head)]
                total += len(block)
    except (EOFError, OSError, zlib.error) as e:
        raise ValueError(
            f"Could not read {path}: the file is truncated or corrupt ({e}). Copy or export it again."
        ) from e
    if not (name.endswith(".nii") or name.endswith(".nii.gz")) or len(head) < 348:
        return
    for order in "<>":
        sizeof_hdr = struct.unpack(order + "i", head[:4])[0]
        if sizeof_hdr == 348:  # NIfTI-1
            dims = struct.unpack(order + "8h", head[40:56])
            bitpix = struct.unpack(order + "h", head[72:74])[0]
            pixdim = struct.unpack(order + "8f", head[76:108])
            offset = int(struct.unpack(order + "f", head[108:112])[0])
            break
        if sizeof_hdr == 540 and len(head) >= 544:  # NIfTI-2
            bitpix = struct.unpack(order + "h", head[14:16])[0]
            dims = struct.unpack(order + "8q", head[16:80])
            pixdim = struct.unpack(order + "8d", head[104:168])
            offset = struct.unpack(order + "q", head[168:176])[0]
            break
    else:
        return  # not a NIfTI header ITK would accept either
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
                      overwrite: bool = True) -> Path:
    """Check, before any work is done, that ``path`` can be written.

    Args:
        path: the output file.
        allowed: accepted extensions.
        overwrite: when False, an existing file at ``path`` is an error.

    Raises:
        ValueError: unsupported extension; ``path`` is an existing folder.
        NotADirectoryError: a parent of ``path`` is a file.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        FileNotFoundError: the destination folder does not exist.
        PermissionError: the destination folder is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"Output {path} is an existing folder: give a file name inside it (e.g. {path / 'out.seg.nrrd'}).")
    ext = path_extension(path)
    if ext not in allowed:
        raise ValueError(
            f"Cannot write {path.name!r}: unsupported output extension {ext or '(none)'}; use one of "
            f"{', '.join(allowed)}."
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        for ancestor in (folder, *folder.parents):
            if ancestor.exists() and not ancestor.is_dir():
                raise NotADirectoryError(
                    f"Cannot write {path}: {ancestor} is a file, not a folder. Choose an output in a folder."
                )
        raise FileNotFoundError(f"Output folder {folder} does not exist: create it first.")
    if not overwrite and (path.exists() or path.is_symlink()):
        raise FileExistsError(
            f"Output {path} already exists; pass --overwrite (overwrite=True) to replace it, or choose another "
            "output path."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"Output folder {folder} is not writable: choose another output location.")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same extension); rename it to ``path`` on success.

    On any exception (including KeyboardInterrupt) the temporary file is deleted and ``path`` is left
    as it was.

    Raises:
        PermissionError: if the folder is not writable (clear message).
    """
    path = check_output_path(path, allowed=IMAGE_EXTENSIONS + OUTPUT_EXTENSIONS + (".json",))
    ext = path_extension(path)
    stem = path.name[: len(path.name) - len(ext)] if ext else path.name
    tmp = path.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.part{ext}")
    try:
        yield tmp
        os.replace(tmp, path)
    except PermissionError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise PermissionError(f"Cannot write {path}: {e.strerror or e}. Choose another output location.") from e
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


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
    labelmap: sitk.Image, path: str | os.PathLike, classes: Sequence[dict] | None = None, flagged=()
) -> Path:
    """Write a labelmap atomically; the format follows the extension.

    Args:
        labelmap: uint8 (or integer 0..255) scalar image; its geometry is written as is.
        path: ``.nii.gz``/``.nii``/``.nrrd``/``.mha`` (geometry kept), ``.png`` (2D or one slice; no
            geometry), or ``.seg.nrrd`` (Slicer segmentation; needs ``classes``).
        classes: class descriptions as in model.json, required for ``.seg.nrrd``.
        flagged: label values whose ``.seg.nrrd`` segments get the status "flagged" (needs review).

    Returns:
        The written path.

    Raises:
        ValueError: unsupported extension, vector pixels, values outside 0..255, PNG of a volume,
            ``.seg.nrrd`` without classes.
        FileNotFoundError, PermissionError: see :func:`check_output_path`.
    """
    path = check_output_path(path)
    ext = path_extension(path)
    if ext == ".seg.nrrd":
        if classes is None:
            raise ValueError("Writing a .seg.nrrd needs the class list (names, colours, label values).")
        return write_segmentation(labelmap, path, classes, flagged=flagged)
    labelmap = _check_labelmap(labelmap)
    if ext == ".png":
        labelmap = _as_2d(labelmap)
    with atomic_output(path) as tmp:
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
    flagged=(),
) -> Path:
    """Write a 3D Slicer segmentation (``.seg.nrrd``) atomically.

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

    Returns:
        The written path.

    Raises:
        ValueError: wrong extension, bad labelmap, duplicate label values, or labels present in the
            image but missing from ``classes``.
    """
    import slicerio

    path = check_output_path(path, allowed=(".seg.nrrd",))
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
    with atomic_output(path) as tmp:
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
) -> Path:
    """Write a PNG montage of slices with the segments overlaid in their colours (atomically).

    Slices are taken along the same axis the models use (LPS orientation, largest-spacing-else-z
    rule), with rows/columns as in the slice arrays; up to ``max_slices`` evenly spaced slices,
    chosen among those that contain labels when there are any.

    Args:
        image: 2D or 3D grey or RGB image.
        labelmap: integer labelmap on the same grid.
        classes: ``[{label_value, color [r, g, b]}]``.
        path: ``.png`` destination.
        max_slices, columns: montage layout.
        alpha: overlay opacity.

    Returns:
        The written path.

    Raises:
        ValueError: if image and labelmap sizes differ or the extension is not .png.
    """
    from PIL import Image

    from .preprocessing import image_to_slices

    path = check_output_path(path, allowed=(".png",))
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
    tiles = []
    for s in candidates:
        x = slices[s]
        grey = np.clip((x - lo) / (hi - lo), 0, 1) * 255.0
        rgb = np.repeat(grey, 3, axis=0) if grey.shape[0] == 1 else grey[:3]
        rgb = np.moveaxis(rgb, 0, -1)
        mask = labels[s] > 0
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * lut[labels[s][mask]]
        tiles.append(rgb.astype(np.uint8))
    h, w = tiles[0].shape[:2]
    columns = max(1, min(columns, len(tiles)))
    rows = int(np.ceil(len(tiles) / columns))
    canvas = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    for n, tile in enumerate(tiles):
        r, c = divmod(n, columns)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    with atomic_output(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    logger.info("Wrote montage %s (%d slices)", path, len(tiles))
    return path
