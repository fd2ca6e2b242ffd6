"""Reading images, with an explicit geometry contract, and the atomic write every output goes through.

Reading: :func:`read_image` returns a SimpleITK image whose size, spacing (mm), origin (mm, LPS) and
direction are the file's (NIfTI and NRRD are converted to LPS by ITK, as in 3D Slicer). 2D photos
(PNG/JPEG/TIFF) are 2D images with scalar (grey) or 3-component (RGB) pixels, spacing 1 unless the
file stores one; an alpha channel is dropped. A folder is read as a DICOM series (:mod:`.dicom`).

Reading what the file says: a photograph's EXIF orientation is applied (the image is segmented as
viewers show it); a 16-bit colour photograph is scaled to 8 bits (logged); a NIfTI file whose qform and
sform disagree is refused unless ``nifti_transform`` picks one; NaN or infinite voxels of a NIfTI file
(which ITK reads as 0) are refused; a folder holding one multi-frame DICOM file is read as that file.

Writing: :func:`check_output_path` and :func:`atomic_output` apply the rule of :mod:`.outputs` (never over
an input, never replacing a file unless ``overwrite``, written under a temporary name in the destination
folder, read back and checked complete, then created exclusively under its final name) to the image,
segmentation and JSON extensions; the labelmap and ``.seg.nrrd`` writers are in :mod:`.writers`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

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
    "itk_reason",
    "itk_warnings_hidden",
    "path_extension",
    "read_image",
    "has_physical_spacing",
    "is_photo_file",
]

IMAGE_EXTENSIONS = (
    ".nii.gz",
    ".nii",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
    ".dcm",
)
OUTPUT_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".png")
_PHOTO = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_NIFTI = (".nii", ".nii.gz")
#: ``nifti_transform`` choices: which of a NIfTI header's two transforms places the image.
NIFTI_TRANSFORMS = ("qform", "sform")


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


def itk_reason(error: BaseException) -> str:
    """The last meaningful line of an ITK exception (the rest is source file and line noise)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    if not lines:
        return type(error).__name__
    last = lines[-1]
    for prefix in ("sitk::ERROR:", "ITK ERROR:"):
        if prefix in last:
            last = last.split(prefix, 1)[1].strip()
    return last


def read_image(
    path: str | os.PathLike,
    series: str | None = None,
    modality: str | None = None,
    *,
    nifti_transform: str | None = None,
) -> sitk.Image:
    """Read an image file or a DICOM series folder, as the file says it is to be seen and placed.

    Args:
        path: NIfTI (``.nii``, ``.nii.gz``), NRRD, MHA/MHD, PNG, JPEG, TIFF, BMP, a single DICOM file,
            or a folder holding DICOM series.
        series, modality: for a DICOM folder, which series (:func:`.dicom.choose_dicom_series`).
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
        from .dicom import read_dicom_series  # the DICOM reader builds on this module's ITK helpers

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
            logger.info(
                "%s is a 16-bit colour photograph; scaled to 8 bits (value / 257), as the models' photographs are.",
                path.name,
            )
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
        logger.info(
            "%s: EXIF orientation %d (%s) applied; segmented as viewers show it, %d x %d px.",
            path.name,
            orientation,
            _EXIF_NAMES[orientation],
            *upright.GetSize(),
        )
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
_EXIF_NAMES = {
    2: "mirrored",
    3: "rotated 180 degrees",
    4: "flipped upside down",
    5: "transposed",
    6: "rotated 90 degrees clockwise",
    7: "transversed",
    8: "rotated 90 degrees counter-clockwise",
}


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

        def u(fmt: str, at: int, order: str = order) -> tuple:
            """The fields of struct format ``fmt`` at byte ``at``, in this byte order."""
            return struct.unpack(order + fmt, head[at : at + struct.calcsize(order + fmt)])

        sizeof_hdr = struct.unpack(order + "i", head[:4])[0]
        if sizeof_hdr == 348:  # NIfTI-1
            return {
                "order": order,
                "version": 1,
                "dims": u("8h", 40),
                "datatype": u("h", 70)[0],
                "bitpix": u("h", 72)[0],
                "pixdim": u("8f", 76),
                "offset": int(u("f", 108)[0]),
                "qform_code": u("h", 252)[0],
                "sform_code": u("h", 254)[0],
                "quatern": u("6f", 256),
                "srow": u("12f", 280),
            }
        if sizeof_hdr == 540 and len(head) >= 540:  # NIfTI-2
            return {
                "order": order,
                "version": 2,
                "dims": u("8q", 16),
                "datatype": u("h", 12)[0],
                "bitpix": u("h", 14)[0],
                "pixdim": u("8d", 104),
                "offset": int(u("q", 168)[0]),
                "qform_code": u("i", 344)[0],
                "sform_code": u("i", 348)[0],
                "quatern": u("6d", 352),
                "srow": u("12d", 400),
            }
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
        data = self.rest + block[max(0, self.start - position) :]
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
    for d in dims[1 : 1 + max(0, min(7, dims[0]))]:
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
        rotation = np.array(
            [
                [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
            ]
        )
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
            "--nifti-transform sform (nifti_transform=...), or fix the header (e.g. nibabel: "
            "img.set_qform(img.get_sform()) keeps the sform)."
        )
    matrix = np.diag([-1.0, -1.0, 1.0]) @ affines[choice]  # RAS -> LPS
    dim = image.GetDimension()
    linear = matrix[:dim, :dim]
    spacing = np.linalg.norm(linear, axis=0)
    placed = sitk.Image(image)
    placed.SetSpacing([float(v) for v in spacing])
    placed.SetDirection([float(v) for v in (linear / spacing).ravel()])
    placed.SetOrigin([float(v) for v in matrix[:dim, 3]])
    logger.info(
        "%s: the NIfTI qform and sform disagree (%.1f degrees, %.1f mm); placed by the %s, as asked.",
        path.name,
        angle,
        shift,
        choice,
    )
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
    return itk_reason(error)


def check_output_path(
    path: str | os.PathLike,
    *,
    allowed: Sequence[str] = OUTPUT_EXTENSIONS,
    overwrite: bool = False,
    inputs: Sequence = (),
) -> Path:
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


def atomic_output(
    path: str | os.PathLike, *, overwrite: bool = False, inputs: Sequence = (), verify=None
) -> contextlib.AbstractContextManager[Path]:
    """:func:`.outputs.write_output` for the image, segmentation and JSON extensions of this module.

    Yields a temporary path next to ``path``; when the block ends, the file is checked (``verify(tmp)``)
    and committed (created exclusively, or replacing the earlier file with ``overwrite``). On any
    exception (including KeyboardInterrupt) the temporary file is deleted and ``path`` is left as it was.

    Raises:
        As :func:`.outputs.write_output`.
    """
    return outputs.write_output(
        path,
        overwrite=overwrite,
        inputs=inputs,
        verify=verify,
        allowed=IMAGE_EXTENSIONS + OUTPUT_EXTENSIONS + (".json",),
    )
