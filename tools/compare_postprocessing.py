"""Validation Dice and HD95 of a model without and with "keep the largest connected component" per label.

Usage:  python tools/compare_postprocessing.py MODEL DATASET [--tta]
        e.g. python tools/compare_postprocessing.py cardiac-acdc $DATASETS/ACDC

Predicts every validation case (fold 0) once, with the model's post-processing switched off, then scores
the raw labelmap, the largest component of each label alone, and of all labels (how model.json's
``postprocessing.largest_component`` is chosen).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import SimpleITK as sitk

from AttentionMambaSegLib.datasets import load_dataset_info, split_cases
from AttentionMambaSegLib.images import read_image
from AttentionMambaSegLib.inference import InferenceSettings, predict_volume
from AttentionMambaSegLib.metrics import array_spacing, dice, hd95
from AttentionMambaSegLib.package import load_model_package
from AttentionMambaSegLib.postprocessing import keep_largest_component


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("dataset")
    p.add_argument("--tta", action="store_true")
    args = p.parse_args()
    package = load_model_package(args.model)
    package.card = replace(package.card, postprocessing={})
    network = package.build_network("cpu")
    info = load_dataset_info(args.dataset)
    labels = [c.label_value for c in package.card.foreground_classes]
    variants = {"none": [], **{f"label {v}": [v] for v in labels}, "all labels": labels}
    scores = {name: [] for name in variants}
    for case in split_cases(info, "val", 0):
        image = read_image(info.channel_path(case, 0))
        ref_image = read_image(info.label_path(case))
        ref, spacing = sitk.GetArrayFromImage(ref_image), array_spacing(ref_image)
        raw = predict_volume(image, package, InferenceSettings(device="cpu", tta=args.tta), network=network)
        for name, keep in variants.items():
            pred = sitk.GetArrayFromImage(keep_largest_component(raw, keep) if keep else raw)
            scores[name].append([(dice(pred == v, ref == v), hd95(pred == v, ref == v, spacing)) for v in labels])
    print(f"{len(scores['none'])} validation cases, TTA {'on' if args.tta else 'off'}; largest component of:")
    for name, rows in scores.items():
        rows = np.array(rows)
        print(
            f"  {name:10s} Dice {rows[:, :, 0].mean(0).round(4).tolist()} mean {rows[:, :, 0].mean():.4f}; "
            f"HD95 {rows[:, :, 1].mean(0).round(2).tolist()} mean {rows[:, :, 1].mean():.2f}"
        )


if __name__ == "__main__":
    main()
