"""Record what a colour model's training images look like, for the plausibility warning.

Usage:
    python tools/measure_appearance.py MODEL DATASET [--split train] [--write-card]

Reads every image of the split (nnU-Net v2 raw dataset, RGB as three channel files or one RGB file),
computes the features of :mod:`AttentionMambaSegLib.card.appearance` per image, and prints
their mean, standard deviation and range over the split and the largest distance (in standard
deviations) of a validation image. With ``--write-card`` it writes model.json ``appearance`` of the
bundled model: per feature ``{"mean", "sd"}`` over the split's images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from AttentionMambaSegLib.card.appearance import FEATURES, Appearance, image_features
from AttentionMambaSegLib.datasets import load_dataset_info, read_case, split_cases
from AttentionMambaSegLib.package import bundled_models_dir, load_model_package


def rgb_array(image: sitk.Image) -> np.ndarray:
    """(..., 3) RGB values of a 3-component image."""
    array = sitk.GetArrayFromImage(image)
    if array.shape[-1] != 3:
        raise SystemExit(f"error: expected RGB images (3 components), got an array of shape {array.shape}")
    return array


def measure(dataset, split: str) -> dict:
    info = load_dataset_info(dataset)

    def features_of(cases):
        return np.asarray([image_features(rgb_array(read_case(info, c, with_label=False)[0])) for c in cases])

    features = features_of(split_cases(info, split, 0))
    mean, sd = features.mean(axis=0), features.std(axis=0, ddof=1)
    out = {
        "features": {
            name: {"mean": round(float(mean[i]), 4), "sd": round(float(sd[i]), 4)} for i, name in enumerate(FEATURES)
        },
        "images": len(features),
        "split": split,
    }
    for i, name in enumerate(FEATURES):
        print(
            f"{name:>11}: mean {mean[i]:8.3f}  sd {sd[i]:7.3f}  "
            f"range {features[:, i].min():8.3f}-{features[:, i].max():8.3f}"
        )
    if split == "train":
        val = features_of(split_cases(info, "val", 0))
        out["val_max_z"] = round(float(np.abs((val - mean) / sd).max()), 2)
        print(f"largest distance of a validation image: {out['val_max_z']} standard deviations")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("dataset")
    parser.add_argument("--split", default="train", choices=("train", "val", "all"))
    parser.add_argument("--write-card", action="store_true")
    args = parser.parse_args(argv)
    package = load_model_package(args.model)
    appearance = measure(args.dataset, args.split)
    Appearance.from_dict(appearance)  # the card will read it
    if args.write_card:
        path = bundled_models_dir() / package.id / "model.json"
        card = json.loads(path.read_text(encoding="utf-8"))
        appearance["command"] = (
            f"python tools/measure_appearance.py {package.id} $DATASETS/{Path(args.dataset).name} --write-card"
        )
        card["appearance"] = appearance
        tmp = path.with_name(".model.json.tmp")
        tmp.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        load_model_package(path.parent)
        print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
