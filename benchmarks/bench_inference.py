"""Benchmark volume inference (``predict_volume``) on the CPU (prints a Markdown table; not a test).

Usage:  python benchmarks/bench_inference.py [--model cardiac-acdc] [--volumes acdc 256x256x200 512x512x120]
                                             [--batches 1 4 16] [--tta both|on|off]

Volumes: ``acdc`` is the bundled real ACDC validation volume; ``WxHxS`` are synthetic-intensity volumes
(smoothed noise, 1.5625 x 1.5625 x 10 mm). Reports seconds per volume, slices per second and the
process's peak RSS (ru_maxrss, which only grows: rows are ordered by size).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from AttentionMambaSegLib.inference import predict_volume
from AttentionMambaSegLib.package import load_model_package

EXAMPLE = Path(__file__).resolve().parents[1] / "AttentionMambaSeg/Resources/Examples/patient019_frame01_0000.nii.gz"


def volume(spec: str) -> sitk.Image:
    if spec == "acdc":
        return sitk.ReadImage(str(EXAMPLE))
    w, h, s = (int(v) for v in spec.lower().split("x"))
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(s, h, w)).astype(np.float32)
    img = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(arr), 3.0)
    img = sitk.Cast(sitk.RescaleIntensity(img, 0, 1000), sitk.sitkInt16)
    img.SetSpacing((1.5625, 1.5625, 10.0))
    return img


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="cardiac-acdc")
    p.add_argument("--volumes", nargs="+", default=["acdc", "256x256x200", "512x512x120"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--tta", choices=["both", "on", "off"], default="both")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count())
    package = load_model_package(args.model)
    network = package.build_network("cpu")
    ttas = {"both": [False, True], "on": [True], "off": [False]}[args.tta]
    print(f"model {package.id}, patch {package.config['patch_size']}, threads {torch.get_num_threads()}")
    print("| volume | size (voxels) | input MB | TTA | batch | s / volume | slices / s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.volumes:
        img = volume(spec)
        mb = img.GetNumberOfPixels() * img.GetSizeOfPixelComponent() / 2**20
        for tta in ttas:
            for batch in args.batches:
                t0 = time.perf_counter()
                out = predict_volume(img, package, device="cpu", tta=tta, batch_size=batch, network=network)
                dt = time.perf_counter() - t0
                slices = img.GetSize()[2] if img.GetDimension() == 3 else 1
                assert out.GetSize() == img.GetSize()
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(f"| {spec} | {'x'.join(map(str, img.GetSize()))} | {mb:.1f} | {'4 flips' if tta else 'off'} | "
                      f"{batch} | {dt:.2f} | {slices / dt:.2f} | {rss:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
