"""Test helper: tiny copies of the shared nnU-Net-layout datasets in tmp_path."""

import json
import shutil
from pathlib import Path

from conftest import DATASETS


def make_copy(tmp_path: Path, name: str, train: list[str], val: list[str]) -> Path:
    """Copy a few cases of a shared dataset into tmp_path with a one-fold splits_final.json."""
    src, dst = DATASETS / name, tmp_path / name
    (dst / "imagesTr").mkdir(parents=True)
    (dst / "labelsTr").mkdir()
    meta = json.loads((src / "dataset.json").read_text())
    meta["numTraining"] = len(train) + len(val)
    (dst / "dataset.json").write_text(json.dumps(meta))
    (dst / "splits_final.json").write_text(json.dumps([{"train": train, "val": val}]))
    ending = meta["file_ending"]
    image_ending = meta.get("image_file_ending", ending)
    for case in train + val:
        for f in (src / "imagesTr").glob(f"{case}_*{image_ending}"):
            shutil.copy(f, dst / "imagesTr" / f.name)
        shutil.copy(src / "labelsTr" / f"{case}{ending}", dst / "labelsTr" / f"{case}{ending}")
    return dst
