"""Validation Dice and time of a model for several sliding-window sizes (how inference_patch_size is chosen).

Usage:  python tools/compare_windows.py MODEL DATASET WINDOWS [--cases N] [--tta]
        e.g. python tools/compare_windows.py cardiac-acdc $DATASETS/ACDC 128,256,320 --cases 6

Predicts the first N validation cases (fold 0) with each window (pixels at the model's spacing) and
prints per-class and mean Dice and seconds per case. The model's own post-processing is applied.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import SimpleITK as sitk

from AttentionMambaSegLib.datasets import load_dataset_info, split_cases
from AttentionMambaSegLib.images import read_image
from AttentionMambaSegLib.inference import InferenceSettings, predict_volume
from AttentionMambaSegLib.metrics import dice
from AttentionMambaSegLib.package import load_model_package


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("dataset")
    p.add_argument("windows", help="comma-separated window sizes, multiples of 32")
    p.add_argument("--cases", type=int, default=6)
    p.add_argument("--tta", action="store_true")
    args = p.parse_args()
    package = load_model_package(args.model)
    network = package.build_network("cpu")
    info = load_dataset_info(args.dataset)
    cases = split_cases(info, "val", 0)[: args.cases]
    labels = [c.label_value for c in package.card.foreground_classes]
    for w in (int(v) for v in args.windows.split(",")):
        scores, seconds = [], 0.0
        for case in cases:
            image = read_image(info.channel_path(case, 0))
            ref = sitk.GetArrayFromImage(read_image(info.label_path(case)))
            t0 = time.perf_counter()
            pred = sitk.GetArrayFromImage(
                predict_volume(image, package, InferenceSettings(device="cpu", tta=args.tta, window=w), network=network)
            )
            seconds += time.perf_counter() - t0
            scores.append([dice(pred == v, ref == v) for v in labels])
        scores = np.array(scores)
        print(
            f"window {w}: Dice per class {scores.mean(0).round(4).tolist()}, mean {scores.mean():.4f}; "
            f"{seconds / len(cases):.1f} s per case (TTA {'on' if args.tta else 'off'})",
            flush=True,
        )


if __name__ == "__main__":
    main()
