"""Checking an nnU-Net v2 raw dataset before training, naming every faulty case.

:func:`validate_dataset` reads the layout (:func:`.datasets.load_dataset_info`), the headers of every case
(channel files, label, their geometry) and, optionally, every label's voxels; it raises one
:class:`.datasets.DatasetError` that lists each problem as ``case: problem``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .datasets import DatasetError, DatasetInfo, channel_files, load_dataset_info, read_header
from .images import check_file_complete, itk_warnings_hidden

__all__ = ["validate_dataset"]

logger = logging.getLogger(__name__)

#: Geometry tolerances between a case's channel files and its label (mm, and direction cosines).
_GEOMETRY_RTOL = 1e-4
_GEOMETRY_ATOL = 1e-3


def _geometry_problems(ref: sitk.ImageFileReader, other: sitk.ImageFileReader, what: str) -> list[str]:
    problems = []
    if tuple(ref.GetSize()) != tuple(other.GetSize()):
        problems.append(f"{what} size {tuple(other.GetSize())} differs from image size {tuple(ref.GetSize())}")
        return problems
    for attr in ("GetSpacing", "GetOrigin", "GetDirection"):
        a = np.asarray(getattr(ref, attr)(), dtype=np.float64)
        b = np.asarray(getattr(other, attr)(), dtype=np.float64)
        if a.shape != b.shape or not np.allclose(a, b, rtol=_GEOMETRY_RTOL, atol=_GEOMETRY_ATOL):
            name = attr[3:].lower()
            problems.append(f"{what} {name} {tuple(np.round(b, 5))} differs from image {name} {tuple(np.round(a, 5))}")
    return problems


def validate_dataset(
    path: str | Path,
    cases: Sequence[str] | None = None,
    *,
    check_label_values: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetInfo:
    """Check a dataset before training; fail naming every faulty case.

    Checks: dataset.json and the layout (see :func:`.datasets.load_dataset_info`); every case listed in
    splits_final.json exists; every case has all its channel files (component count = number of
    channel_names), a scalar label, and image/label with the same size, spacing, origin and direction
    (tolerance 1e-4 relative, 1e-3 absolute); image files without a label; with ``check_label_values``,
    no truncated file (see :func:`~.images.check_file_complete`) and label values all listed in
    dataset.json.

    Args:
        path: the dataset folder.
        cases: check only these case ids (default: every case with a label).
        check_label_values: read every label's voxels to check its values (the slow part: ~1 s per
            10 ACDC volumes); headers are always checked.
        progress: called as ``progress(done, total)`` after each case.

    Returns:
        the dataset description (as :func:`.datasets.load_dataset_info`).

    Raises:
        DatasetError: listing ``case: problem`` lines for every problem found.
    """
    info = load_dataset_info(path)
    problems: list[tuple[str | None, str]] = []
    known = set(info.cases)
    for fold, split in enumerate(info.splits):
        for part in ("train", "val"):
            for case_id in split.get(part, []):
                if case_id not in known:
                    problems.append(
                        (
                            case_id,
                            f"listed in splits_final.json (fold {fold}, {part}) but "
                            f"{info.label_path(case_id).name} is missing",
                        )
                    )
    images_dir = info.root / "imagesTr"
    if not images_dir.is_dir():
        raise DatasetError(info.root, [(None, f"imagesTr folder not found in {info.root}")])
    suffix = f"_0000{info.image_ending}"
    unlabelled = sorted(
        p.name[: -len(suffix)]
        for p in images_dir.iterdir()
        if p.name.endswith(suffix) and p.name[: -len(suffix)] not in known
    )
    for case_id in unlabelled:
        problems.append((case_id, f"image {case_id}{suffix} has no label file labelsTr/{case_id}{info.file_ending}"))

    to_check = list(info.cases if cases is None else cases)
    allowed = set(info.labels.values())
    for done, case_id in enumerate(to_check, 1):
        problems.extend((case_id, msg) for msg in _case_problems(info, case_id, allowed, check_label_values))
        if progress is not None:
            progress(done, len(to_check))
    if problems:
        raise DatasetError(info.root, problems)
    logger.info("dataset %s: %d case(s) checked, no problem found", info.root, len(to_check))
    return info


def _case_problems(info: DatasetInfo, case_id: str, allowed: set[int], check_values: bool) -> list[str]:
    label_path = info.label_path(case_id)
    if not label_path.exists():
        return [f"label file missing: {label_path}"]
    files = channel_files(info, case_id)
    if not files:
        return [f"image file missing: {info.channel_path(case_id, 0)}"]
    problems: list[str] = []
    try:
        readers = [read_header(p) for p in files]
        label_reader = read_header(label_path)
    except RuntimeError as e:
        return [f"unreadable file: {e}".splitlines()[0]]
    components = sum(r.GetNumberOfComponents() for r in readers)
    if components < info.num_channels:
        problems.append(
            f"channel file missing: {info.channel_path(case_id, len(files)).name} "
            f"({components} of {info.num_channels} channels found)"
        )
    elif components > info.num_channels:
        problems.append(f"{components} image channels but dataset.json lists {info.num_channels}")
    for channel, reader in enumerate(readers[1:], 1):
        problems.extend(_geometry_problems(readers[0], reader, f"channel {channel:04d}"))
    if label_reader.GetNumberOfComponents() != 1:
        problems.append(f"label has {label_reader.GetNumberOfComponents()} components; it must be a scalar labelmap")
    problems.extend(_geometry_problems(readers[0], label_reader, "label"))
    if check_values and not problems:
        for file in (*files, label_path):  # ITK reads a truncated .nii.gz silently (missing voxels = 0)
            try:
                check_file_complete(file)
            except ValueError as e:
                problems.append(str(e))
        if problems:
            return problems
        try:
            with itk_warnings_hidden():
                values = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(label_path))))
        except RuntimeError as e:
            return [f"unreadable label: {e}".splitlines()[0]]
        if not np.all(np.equal(np.mod(values, 1), 0)):
            problems.append(f"label holds non-integer values {values[np.mod(values, 1) != 0][:5].tolist()}")
        else:
            unknown = sorted(int(v) for v in values if int(v) not in allowed)
            if unknown:
                problems.append(f"label value(s) {unknown} not in dataset.json labels {sorted(allowed)}")
    return problems
