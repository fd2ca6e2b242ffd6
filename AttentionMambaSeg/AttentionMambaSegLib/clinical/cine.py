"""Reading a cardiac cine as a list of 3D frames on one grid.

A cine is given as

* one 4D image file: NIfTI with a time axis (``(X, Y, Z, T)``), or a NRRD sequence as 3D Slicer saves it
  (``.seq.nrrd``: the first axis of kind ``list``, read by ITK as one vector component per frame);
* one DICOM folder whose series holds several temporal positions per slice location (a cine series):
  the files of each location are ordered by TriggerTime (0018,1060), else TemporalPositionIdentifier
  (0020,0100), else InstanceNumber (0020,0013), and frame t takes the t-th file of every location;
* two or more 3D volumes (files or DICOM folders), the frames in time order; two volumes are the ED and
  the ES frame, in that order.

Frames are numbered from 1 in messages, as in the ACDC challenge's patient files; :class:`Cine` holds
0-based indices.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..images import itk_warnings_hidden

__all__ = ["Cine", "read_cine", "read_dicom_cine", "split_frames"]

logger = logging.getLogger(__name__)

#: Largest difference of origin (mm) and spacing/direction (relative) accepted between frames of one cine.
_GRID_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Cine:
    """The frames of a cine: 3D images on one grid, in time order.

    Attributes:
        frames: 3D SimpleITK images, same size, spacing, origin and direction.
        source: what was read, for messages and function.json.
        ed, es: 0-based ED and ES indices when the input says which they are (two volumes given as ED
            then ES), else None (chosen from the LV volumes).
    """

    frames: tuple
    source: str
    ed: int | None = None
    es: int | None = None

    def __post_init__(self):
        if not self.frames:
            raise ValueError(f"{self.source}: the cine has no frames.")
        check_same_grid(self.frames, self.source)


def check_same_grid(frames: Sequence[sitk.Image], source: str = "cine") -> None:
    """Raise ValueError (naming the frame and what differs) unless every frame is 3D on the first's grid."""
    first = frames[0]
    for i, frame in enumerate(frames):
        if frame.GetDimension() != 3:
            raise ValueError(
                f"{source}: frame {i + 1} is a {frame.GetDimension()}D image; every frame must be a "
                "3D short-axis stack."
            )
        if i == 0:
            continue
        what = []
        if frame.GetSize() != first.GetSize():
            what.append(f"size {frame.GetSize()} vs {first.GetSize()}")
        if not np.allclose(frame.GetSpacing(), first.GetSpacing(), rtol=_GRID_TOLERANCE):
            what.append(f"spacing {frame.GetSpacing()} vs {first.GetSpacing()}")
        if not np.allclose(frame.GetOrigin(), first.GetOrigin(), atol=_GRID_TOLERANCE * 10):
            what.append(f"origin {frame.GetOrigin()} vs {first.GetOrigin()}")
        if not np.allclose(frame.GetDirection(), first.GetDirection(), atol=_GRID_TOLERANCE):
            what.append("direction")
        if what:
            raise ValueError(
                f"{source}: frame {i + 1} is not on the grid of frame 1 ({'; '.join(what)}). The frames "
                "of a cine must be the same stack of slices; resample them onto one grid first."
            )


def split_frames(image: sitk.Image) -> list[sitk.Image]:
    """The 3D frames of a 4D image (last axis = time) or of a vector image (one component per frame).

    Raises:
        ValueError: an image that is neither (2D, or 3D with scalar pixels).
    """
    if image.GetDimension() == 4:
        size = list(image.GetSize())
        frames = []
        for t in range(size[3]):
            frame = sitk.Extract(image, size[:3] + [0], [0, 0, 0, t])
            for key in image.GetMetaDataKeys():  # keeps the DICOM Modality the modality check reads
                if key.startswith("0008|"):
                    frame.SetMetaData(key, image.GetMetaData(key))
            frames.append(frame)
        return frames
    if image.GetDimension() == 3 and image.GetNumberOfComponentsPerPixel() > 1:
        return [sitk.VectorIndexSelectionCast(image, c) for c in range(image.GetNumberOfComponentsPerPixel())]
    raise ValueError(
        f"A {image.GetDimension()}D image with {image.GetNumberOfComponentsPerPixel()} component(s) has no time axis."
    )


def _header(path: str, tags: Sequence[str]) -> dict:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with itk_warnings_hidden():
        reader.ReadImageInformation()
    return {t: (reader.GetMetaData(t).strip() if reader.HasMetaDataKey(t) else "") for t in tags}


def _numbers(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split("\\") if v.strip()]
    except ValueError:
        return []


def _dicom_frame_files(files: Sequence[str], what: str) -> list[list[str]]:
    """Files of each temporal frame of a series (frame -> files of its slice locations, any order).

    A series with one file per location gives one frame.

    Raises:
        ValueError: locations with different numbers of files, or headers without positions.
    """
    tags = ("0020|0032", "0020|0037", "0018|1060", "0020|0100", "0020|0013")
    locations: dict[tuple, list] = {}
    normal = None
    for f in files:
        h = _header(f, tags)
        ipp = _numbers(h["0020|0032"])
        if len(ipp) != 3:
            raise ValueError(
                f"{what}: file {Path(f).name} has no ImagePositionPatient; cannot order a cine by slice location."
            )
        if normal is None:
            iop = _numbers(h["0020|0037"])
            normal = np.cross(iop[:3], iop[3:6]) if len(iop) == 6 else np.array([0.0, 0.0, 1.0])
        key = tuple(np.round(ipp, 2))
        order = tuple(_numbers(h[t])[0] if _numbers(h[t]) else float("inf") for t in tags[2:])
        locations.setdefault(key, []).append((order, str(f)))
    counts = {len(v) for v in locations.values()}
    if len(counts) != 1:
        listing = ", ".join(f"{len(v)}" for v in locations.values())
        raise ValueError(
            f"{what}: the slice locations hold different numbers of frames ({listing} files): the cine "
            "is incomplete. Export the complete series again."
        )
    assert normal is not None  # set by the first file, and there is one (one count of files per location)
    ordered = [
        [f for _, f in sorted(v)] for _, v in sorted(locations.items(), key=lambda kv: float(np.dot(kv[0], normal)))
    ]
    return [[location[t] for location in ordered] for t in range(counts.pop())]


def read_dicom_cine(
    folder: str | os.PathLike, series: str | None = None, modality: str | None = None
) -> list[sitk.Image]:
    """The frames of a DICOM cine series (several temporal positions per slice location).

    Args:
        folder: a folder with the series (searched recursively).
        series, modality: which series (:func:`~AttentionMambaSegLib.dicom.choose_dicom_series`).

    Returns:
        3D frames in time order (one, for a series with one file per location); each keeps the
        series' Modality and SeriesInstanceUID in its metadata.

    Raises:
        FileNotFoundError, ValueError: no DICOM series, an incomplete cine, unevenly spaced slices.
    """
    from .. import dicom

    listed = dicom.list_dicom_series(folder)
    chosen = dicom.choose_dicom_series(listed, series, modality)
    frames_files = _dicom_frame_files(chosen.files, f"DICOM series {chosen.uid}")
    frames = []
    for t, files in enumerate(frames_files):
        dicom.check_slice_positions(files)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            frame = reader.Execute()
        except RuntimeError as e:
            raise ValueError(f"Could not read frame {t + 1} of DICOM series {chosen.uid} in {folder}: {e}") from e
        frame.SetMetaData("0008|0060", chosen.modality)
        frame.SetMetaData("0020|000e", chosen.uid)
        frames.append(frame)
    logger.info("DICOM series %s: %d frame(s) of %d slices", chosen.uid, len(frames), len(frames_files[0]))
    return frames


def _read_frames(path: Path, series: str | None, modality: str | None) -> list[sitk.Image]:
    """Frames of one input: a cine gives several, a 3D volume one."""
    from .. import images

    if path.is_dir():
        return read_dicom_cine(path, series=series, modality=modality)
    image = images.read_image(path)
    if image.GetDimension() == 4 or (
        image.GetDimension() == 3
        and image.GetNumberOfComponentsPerPixel() > 1
        and images.path_extension(path) in (".nrrd", ".nhdr")
    ):
        return split_frames(image)
    if image.GetDimension() == 2:
        raise ValueError(f"{path} is a 2D image; cardiac function needs 3D short-axis stacks.")
    return [image]


def read_cine(inputs: Sequence[str | os.PathLike], series: str | None = None, modality: str | None = None) -> Cine:
    """Read a cine: one 4D file or DICOM cine folder, or two or more 3D volumes in time order.

    Args:
        inputs: the paths (see the module docstring). Two 3D volumes are taken as ED then ES.
        series, modality: for DICOM folders (:func:`~AttentionMambaSegLib.dicom.choose_dicom_series`).

    Returns:
        :class:`Cine`.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: a single 3D volume, a cine mixed with other inputs, frames on different grids,
            or an unreadable input.
    """
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ValueError("No input given: give a 4D cine, or the ED and ES volumes.")
    read = [_read_frames(p, series, modality) for p in paths]
    if len(paths) == 1:
        only = read[0]
        if len(only) == 1:
            raise ValueError(
                f"{paths[0]} holds one 3D frame; ventricular function needs the whole cine (a 4D NIfTI, "
                "a .seq.nrrd or a DICOM cine folder) or two volumes given as ED then ES."
            )
        return Cine(tuple(only), str(paths[0]))
    several = [str(p) for p, f in zip(paths, read) if len(f) != 1]
    if several:
        raise ValueError(
            f"{', '.join(several)} hold(s) several frames: give one cine alone, or several 3D volumes (one frame each)."
        )
    source = " + ".join(str(p) for p in paths)
    frames = tuple(f[0] for f in read)
    return Cine(frames, source, *((0, 1) if len(frames) == 2 else (None, None)))
