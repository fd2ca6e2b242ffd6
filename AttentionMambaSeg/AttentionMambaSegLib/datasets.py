"""Training data: nnU-Net v2 raw datasets and the in-memory cache of 2D slices (checks: :mod:`.dataset_validation`).

Layout (nnU-Net v2 "raw" dataset)::

    DATASET/
      dataset.json          channel_names, labels (name -> value, background 0), file_ending, licence,
                            optional image_file_ending
      splits_final.json     [{"train": [case ids], "val": [case ids]}, ...] (one entry per fold)
      imagesTr/<case>_0000<image_file_ending>, <case>_0001<image_file_ending>, ...   one file per channel
      labelsTr/<case><file_ending>                                                   integer labelmap

``image_file_ending`` extends the nnU-Net v2 layout: the image files may have another ending than the
labels (dermoscopy photographs are published as JPEG, their masks are PNG: ``"image_file_ending": ".jpg"``
with ``"file_ending": ".png"``). Without it the images share ``file_ending``. Labels are never JPEG (its
lossy compression invents label values).

Supported files: whatever SimpleITK reads (3D NIfTI, NRRD, MHA; 2D PNG, JPG, grey or RGB). A colour
image may hold all its channels in the single ``_0000`` file (PH2 stores one RGB PNG per case while its
dataset.json lists the three channels R, G, B): a case is complete when the number of components over its
channel files equals the number of ``channel_names``.

Volumes become 2D slices through :mod:`AttentionMambaSegLib.slicing` (the same code inference
uses): reorientation to the model's ``axes_code``, the slice axis, in-plane resampling to the target
spacing (the median in-plane spacing of the training cases, as nnU-Net chooses it) and normalisation.
The datasets are small (ACDC ~1,900 slices), so :func:`load_slices` keeps every preprocessed slice in
memory as numpy arrays.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .images import SPACING_KEY, is_photo_file, itk_warnings_hidden

__all__ = [
    "DatasetError",
    "DatasetInfo",
    "SliceData",
    "load_dataset_info",
    "split_cases",
    "read_case",
    "channel_files",
    "read_header",
    "default_normalization",
    "target_inplane_spacing",
    "load_slices",
]

logger = logging.getLogger(__name__)

#: At most this many problems are listed in one DatasetError message.
_MAX_LISTED_PROBLEMS = 20


class DatasetError(ValueError):
    """A dataset does not follow the nnU-Net v2 raw layout or its cases are inconsistent.

    The message names every faulty case (up to 20) and what is wrong with it. ``problems`` holds the
    full list of ``(case_id, message)`` pairs (``case_id`` is None for dataset-wide problems).
    """

    def __init__(self, root: Path, problems: list[tuple[str | None, str]]):
        self.root = Path(root)
        self.problems = problems
        lines = [f"{case}: {msg}" if case else msg for case, msg in problems[:_MAX_LISTED_PROBLEMS]]
        more = len(problems) - _MAX_LISTED_PROBLEMS
        if more > 0:
            lines.append(f"... and {more} more problem(s)")
        super().__init__(f"invalid dataset {self.root}:\n  " + "\n  ".join(lines))


@dataclass(frozen=True)
class DatasetInfo:
    """What ``dataset.json`` and the folder listing say about a dataset.

    Attributes:
        root: dataset folder.
        name: dataset name (``dataset.json`` "name", else the folder name).
        channel_names: channel names in channel order, e.g. ``["cineMRI"]`` or ``["R", "G", "B"]``.
        labels: label name -> integer value, including background (0); values are 0..N-1.
        file_ending: ending of the label files, e.g. ``".nii.gz"`` or ``".png"``.
        image_file_ending: ending of the image (channel) files; ``file_ending`` unless dataset.json
            gives ``image_file_ending`` (e.g. ``".jpg"`` photographs with ``".png"`` masks).
        licence: licence text of the data (None if dataset.json has none).
        reference: citation of the data (None if absent).
        cases: the case ids that have a label file, sorted.
        splits: the folds of ``splits_final.json`` (empty if the file is absent).
        label_terminology: label name -> {name, color, snomed} of the optional ``label_terminology`` block.
        task, modality: the optional ``task`` and ``modality`` texts of dataset.json (for model.json).
    """

    root: Path
    name: str
    channel_names: tuple[str, ...]
    labels: dict[str, int]
    file_ending: str
    image_file_ending: str = ""
    licence: str | None = None
    reference: str | None = None
    cases: tuple[str, ...] = ()
    splits: tuple[dict, ...] = field(default_factory=tuple)
    label_terminology: dict = field(default_factory=dict)
    task: str | None = None
    modality: str | None = None

    @property
    def num_channels(self) -> int:
        """Number of input channels (``len(channel_names)``)."""
        return len(self.channel_names)

    @property
    def foreground_labels(self) -> dict[str, int]:
        """Label name -> value without background (value 0), sorted by value."""
        return {k: v for k, v in sorted(self.labels.items(), key=lambda kv: kv[1]) if v != 0}

    def label_path(self, case_id: str) -> Path:
        """Path of the label file of a case."""
        return self.root / "labelsTr" / f"{case_id}{self.file_ending}"

    def channel_path(self, case_id: str, channel: int) -> Path:
        """Path of channel file ``channel`` (0-based) of a case."""
        return self.root / "imagesTr" / f"{case_id}_{channel:04d}{self.image_ending}"

    @property
    def image_ending(self) -> str:
        """Ending of the image files: ``image_file_ending``, else ``file_ending``."""
        return self.image_file_ending or self.file_ending


@dataclass
class SliceData:
    """Preprocessed 2D slices kept in memory.

    Attributes:
        images: one float32 array (C, H, W) per slice, normalised; H, W vary between cases.
        labels: one uint8 array (H, W) per slice, label values of dataset.json.
        case_ids: the case each slice came from.
        slice_indices: index of the slice within its case (after reorientation).
        target_spacing: in-plane spacing (row, col) in mm of every slice.
    """

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    case_ids: list[str] = field(default_factory=list)
    slice_indices: list[int] = field(default_factory=list)
    target_spacing: tuple[float, float] = (1.0, 1.0)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> SliceData:
        """A new SliceData holding the given slices (arrays shared, not copied)."""
        return SliceData(
            images=[self.images[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            case_ids=[self.case_ids[i] for i in indices],
            slice_indices=[self.slice_indices[i] for i in indices],
            target_spacing=self.target_spacing,
        )


# --------------------------------------------------------------------------------------------------
# dataset.json, splits, case files


def _read_json(path: Path, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise DatasetError(path.parent, [(None, f"{what} not found: {path}")]) from e
    except json.JSONDecodeError as e:
        raise DatasetError(path.parent, [(None, f"{what} is not valid JSON ({path}): {e}")]) from e


def load_dataset_info(path: str | Path) -> DatasetInfo:
    """Read ``dataset.json``, ``splits_final.json`` and the list of cases of a dataset folder.

    This reads no image; :func:`.dataset_validation.validate_dataset` checks the cases themselves.

    Args:
        path: the dataset folder (the one holding ``dataset.json``).

    Returns:
        the dataset description.

    Raises:
        DatasetError: if dataset.json is missing, unreadable or lacks channel_names / labels /
            file_ending, if the labels are not 0..N-1 with background 0, or if labelsTr is missing.
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(root, [(None, f"dataset folder not found: {root}")])
    meta = _read_json(root / "dataset.json", "dataset.json")
    problems: list[tuple[str | None, str]] = []
    for key in ("channel_names", "labels", "file_ending"):
        if key not in meta:
            problems.append((None, f"dataset.json has no '{key}' entry"))
    if problems:
        raise DatasetError(root, problems)
    try:
        channel_items = sorted(((int(k), str(v)) for k, v in meta["channel_names"].items()))
    except (AttributeError, ValueError) as e:
        raise DatasetError(root, [(None, f"dataset.json channel_names must map '0', '1', ... to names: {e}")]) from e
    if [k for k, _ in channel_items] != list(range(len(channel_items))) or not channel_items:
        raise DatasetError(
            root, [(None, f"dataset.json channel_names keys must be 0..C-1, got {meta['channel_names']}")]
        )
    labels: dict[str, int] = {}
    for name, value in meta["labels"].items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise DatasetError(
                root, [(None, f"label '{name}' has value {value!r}; only integer labels are supported (no regions)")]
            )
        labels[str(name)] = value
    values = sorted(labels.values())
    if values != list(range(len(values))) or len(values) < 2:
        raise DatasetError(
            root,
            [(None, f"dataset.json labels must be 0 (background), 1, ..., N-1 without gaps, got {meta['labels']}")],
        )
    file_ending = str(meta["file_ending"])
    image_file_ending = _image_file_ending(root, meta, file_ending)
    labels_dir = root / "labelsTr"
    if not labels_dir.is_dir():
        raise DatasetError(root, [(None, f"labelsTr folder not found in {root}")])
    cases = sorted(p.name[: -len(file_ending)] for p in labels_dir.iterdir() if p.name.endswith(file_ending))
    splits_path = root / "splits_final.json"
    splits = tuple(_read_json(splits_path, "splits_final.json")) if splits_path.exists() else ()
    return DatasetInfo(
        root=root,
        name=str(meta.get("name", root.name)),
        channel_names=tuple(name for _, name in channel_items),
        labels=labels,
        file_ending=file_ending,
        image_file_ending=image_file_ending,
        licence=meta.get("licence", meta.get("license")),
        reference=meta.get("reference"),
        cases=tuple(cases),
        splits=splits,
        label_terminology=_label_terminology(root, meta, labels),
        task=meta.get("task") if isinstance(meta.get("task"), str) else None,
        modality=meta.get("modality") if isinstance(meta.get("modality"), str) else None,
    )


#: Endings a label file may not have: lossy formats change label values at edges.
_LOSSY_ENDINGS = (".jpg", ".jpeg")


def _image_file_ending(root: Path, meta: dict, file_ending: str) -> str:
    """dataset.json's optional ``image_file_ending`` (``file_ending`` when absent), checked."""
    if file_ending.lower().endswith(_LOSSY_ENDINGS):
        raise DatasetError(
            root,
            [
                (
                    None,
                    f"dataset.json file_ending {file_ending!r} is the labels' ending; labels must "
                    "be stored losslessly (.png, .nii.gz, .nrrd); give JPEG images as "
                    '"image_file_ending": ".jpg"',
                )
            ],
        )
    value = meta.get("image_file_ending", file_ending)
    if not isinstance(value, str) or not value.startswith(".") or len(value) < 2:
        raise DatasetError(
            root, [(None, f'dataset.json image_file_ending must be a file ending such as ".jpg", got {value!r}')]
        )
    return value


def _label_terminology(root: Path, meta: dict, labels: dict[str, int]) -> dict:
    """dataset.json's optional ``label_terminology`` block: label name -> {name, color, snomed}."""
    block = meta.get("label_terminology") or {}
    if not isinstance(block, dict) or not all(isinstance(v, dict) for v in block.values()):
        raise DatasetError(
            root, [(None, "dataset.json label_terminology must map label names to {name, color, snomed} objects")]
        )
    unknown = sorted(set(block) - set(labels))
    if unknown:
        raise DatasetError(
            root,
            [
                (
                    None,
                    f"dataset.json label_terminology names labels {unknown} that 'labels' "
                    f"does not define ({sorted(labels)})",
                )
            ],
        )
    return {str(k): dict(v) for k, v in block.items()}


def split_cases(info: DatasetInfo, split: str = "train", fold: int = 0) -> list[str]:
    """Case ids of one part of a fold of ``splits_final.json``.

    Args:
        info: the dataset.
        split: "train", "val" or "all" (every case with a label, regardless of the splits).
        fold: index into ``splits_final.json``.

    Returns:
        the case ids, in the file's order ("all": sorted).

    Raises:
        ValueError: for an unknown split name.
        DatasetError: if splits_final.json is missing or has no such fold.
    """
    if split == "all":
        return list(info.cases)
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    if not info.splits:
        raise DatasetError(info.root, [(None, "splits_final.json not found; use split='all' or add the file")])
    if not 0 <= fold < len(info.splits):
        raise DatasetError(
            info.root, [(None, f"fold {fold} requested but splits_final.json has {len(info.splits)} fold(s)")]
        )
    return [str(c) for c in info.splits[fold][split]]


def channel_files(info: DatasetInfo, case_id: str) -> list[Path]:
    """The existing channel files of a case, _0000 first, stopping at the first gap (possibly none)."""
    files = []
    for channel in range(info.num_channels):
        path = info.channel_path(case_id, channel)
        if not path.exists():
            break
        files.append(path)
    return files


def read_header(path: Path) -> sitk.ImageFileReader:
    """A reader holding the header of an image file (size, spacing, origin, direction, components; no voxels).

    Raises:
        RuntimeError: SimpleITK cannot read the file.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with itk_warnings_hidden():
        reader.ReadImageInformation()
    return reader


def read_case(info: DatasetInfo, case_id: str, *, with_label: bool = True) -> tuple[sitk.Image, sitk.Image | None]:
    """Read the image (all channels) and the label of a case.

    Args:
        info: the dataset.
        case_id: e.g. "patient001_frame01".
        with_label: read the label too.

    Returns:
        ``(image, label)``: the image has ``info.num_channels`` components (separate channel files are
        composed into one vector image; a single RGB file is returned as read); the label is a scalar
        integer image on the same grid, or None when ``with_label`` is False.

    Raises:
        DatasetError: if a channel file is missing or the channel count is wrong.
        RuntimeError: if SimpleITK cannot read a file.
    """
    files = channel_files(info, case_id)
    if not files:
        raise DatasetError(info.root, [(case_id, f"image file missing: {info.channel_path(case_id, 0)}")])
    with itk_warnings_hidden():  # "unexpected scales in sform" on the original ACDC files
        channels = [sitk.ReadImage(str(p)) for p in files]
    components = sum(c.GetNumberOfComponentsPerPixel() for c in channels)
    if components != info.num_channels:
        missing = info.channel_path(case_id, len(files))
        raise DatasetError(
            info.root,
            [
                (
                    case_id,
                    f"{components} channel(s) found but dataset.json lists {info.num_channels}; "
                    f"missing {missing.name}?",
                )
            ],
        )
    if len(channels) == 1:
        image = channels[0]
        if is_photo_file(files[0]):  # sizes in pixels, as for an image read by images.read_image
            image.SetMetaData(SPACING_KEY, "none")
    else:
        scalars = [sitk.Cast(c, sitk.sitkFloat32) for c in channels]
        for c in scalars[1:]:
            c.CopyInformation(scalars[0])
        image = sitk.Compose(scalars)
    with itk_warnings_hidden():
        label = sitk.ReadImage(str(info.label_path(case_id))) if with_label else None
    return image, label


# --------------------------------------------------------------------------------------------------
# slices


def default_normalization(info: DatasetInfo, image: sitk.Image | None = None) -> dict:
    """The normalisation scheme (model.json "normalization") a dataset's modality calls for.

    RGB (3 channels of 8-bit colour, e.g. dermoscopy): ``{"type": "rgb"}``; everything else (MRI):
    ``{"type": "zscore"}`` per case. CT would need ``{"type": "ct", ...}`` statistics of the training
    foreground (nnU-Net's CT scheme), which none of the shipped datasets needs.

    Args:
        info: the dataset.
        image: one image of the dataset, to look at its pixel type (optional).

    Returns:
        the scheme dict, as :func:`AttentionMambaSegLib.normalization.normalize` takes it.

    Raises:
        NotImplementedError: for a CT dataset (channel name "CT").
    """
    names = [n.lower() for n in info.channel_names]
    if any(n == "ct" for n in names):
        raise NotImplementedError(
            "CT normalisation (clip + foreground statistics) is not implemented in training yet; "
            "rename the channel to train with per-case z-scoring"
        )
    is_rgb = names == ["r", "g", "b"] or (
        image is not None and image.GetNumberOfComponentsPerPixel() == 3 and image.GetPixelID() == sitk.sitkVectorUInt8
    )
    return {"type": "rgb"} if is_rgb else {"type": "zscore"}


def target_inplane_spacing(info: DatasetInfo, cases: Sequence[str], axes_code: str) -> tuple[float, float]:
    """Median in-plane spacing (row, col) in mm of the slices of the given (training) cases.

    Reads only the headers. The in-plane axes are those :mod:`.slicing` slices with (after
    reorientation to ``axes_code``).

    Args:
        info: the dataset.
        cases: case ids (normally the training cases of a fold).
        axes_code: the reorientation code of the model, e.g. "LPS".

    Returns:
        ``(row_spacing, col_spacing)``, the per-axis medians.

    Raises:
        ValueError: if ``cases`` is empty.
    """
    from . import slicing

    if not cases:
        raise ValueError("target_inplane_spacing needs at least one case")
    spacings = []
    for case_id in cases:
        reader = read_header(info.channel_path(case_id, 0))
        # An empty stand-in with the case's geometry: slicing decisions only look at the geometry.
        stand_in = sitk.Image([int(s) for s in reader.GetSize()], sitk.sitkUInt8)
        stand_in.SetSpacing(reader.GetSpacing())
        stand_in.SetOrigin(reader.GetOrigin())
        stand_in.SetDirection(reader.GetDirection())
        _, geometry = slicing.image_to_slices(stand_in, None, axes_code, is_label=True)
        spacings.append(geometry.in_plane_spacing)
    row, col = np.median(np.asarray(spacings, dtype=np.float64), axis=0)
    return float(row), float(col)


def load_slices(
    info: DatasetInfo,
    cases: Sequence[str],
    target_spacing: Sequence[float],
    axes_code: str,
    normalization: dict,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> SliceData:
    """Read, reorient, slice, resample and normalise cases; keep the slices in memory.

    Args:
        info: the dataset.
        cases: case ids to load.
        target_spacing: in-plane spacing (row, col) in mm to resample every slice to.
        axes_code: reorientation code (model.json "axes_code").
        normalization: scheme dict (model.json "normalization").
        progress: called as ``progress(done_cases, total_cases)``.

    Returns:
        the slices: float32 images (C, H, W), uint8 labels (H, W).

    Raises:
        DatasetError: if a case is incomplete.
        ValueError: if a case's label does not match its image after slicing.
    """
    from . import slicing
    from .normalization import normalize

    data = SliceData(target_spacing=(float(target_spacing[0]), float(target_spacing[1])))
    for done, case_id in enumerate(cases, 1):
        image, label = read_case(info, case_id)
        assert label is not None  # read with its label
        images, _ = slicing.image_to_slices(image, tuple(target_spacing), axes_code, is_label=False)
        labels, _ = slicing.image_to_slices(label, tuple(target_spacing), axes_code, is_label=True)
        if images.shape[0] != labels.shape[0] or images.shape[2:] != labels.shape[1:]:
            raise ValueError(
                f"{case_id}: image slices {images.shape} and label slices {labels.shape} differ; "
                "run validate_dataset to find the geometry mismatch"
            )
        images = normalize(images.astype(np.float32, copy=False), normalization)
        for s in range(images.shape[0]):
            data.images.append(np.ascontiguousarray(images[s], dtype=np.float32))
            data.labels.append(np.ascontiguousarray(labels[s], dtype=np.uint8))
            data.case_ids.append(case_id)
            data.slice_indices.append(s)
        if progress is not None:
            progress(done, len(cases))
    logger.info("loaded %d slice(s) from %d case(s)", len(data), len(cases))
    return data
