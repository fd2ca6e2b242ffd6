"""Benchmark volume inference (``predict_volume``) on the CPU (prints a Markdown table; not a test).

Usage:  python benchmarks/bench_inference.py [--model cardiac-acdc] [--volumes acdc 256x256x200 512x512x120]
                                             [--batches 1 4 16] [--tta both|on|off] [--window PIXELS]

Volumes: ``acdc`` is the bundled real ACDC validation volume; ``WxHxS`` are synthetic-intensity volumes
(smoothed noise, 1.5625 x 1.5625 x 10 mm). Reports seconds per volume, slices per second and the peak
RSS of a fresh process that loaded the model and ran that one row (``baseline`` is the same process
before the volume is made: Python, torch and the model). The sliding window is the model's
inference_patch_size unless --window is given.
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


def row(model, spec, tta, batch, window):
    """One table row in a fresh process: its peak RSS is its own."""
    torch.set_num_threads(os.cpu_count())
    package = load_model_package(model)
    network = package.build_network("cpu")
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    img = volume(spec)
    t0 = time.perf_counter()
    out = predict_volume(img, package, device="cpu", tta=tta, batch_size=batch, network=network, window=window)
    dt = time.perf_counter() - t0
    assert out.GetSize() == img.GetSize()
    return dt, baseline, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    import multiprocessing as mp

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="cardiac-acdc")
    p.add_argument("--volumes", nargs="+", default=["acdc", "256x256x200", "512x512x120"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--tta", choices=["both", "on", "off"], default="both")
    p.add_argument("--window", type=int, default=None, help="sliding window (default: the model's)")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count())
    package = load_model_package(args.model)
    window = args.window or package.config["inference_patch_size"][0]
    ttas = {"both": [False, True], "on": [True], "off": [False]}[args.tta]
    print(f"model {package.id}, training patch {package.config['patch_size']}, window {window}, "
          f"threads {torch.get_num_threads()}")
    print("| volume | size (voxels) | input MB | TTA | batch | s / volume | slices / s | peak RSS MB (baseline) |")
    print("|---|---|---|---|---|---|---|---|")
    ctx = mp.get_context("spawn")
    for spec in args.volumes:
        img = volume(spec)
        mb = img.GetNumberOfPixels() * img.GetSizeOfPixelComponent() / 2**20
        slices = img.GetSize()[2] if img.GetDimension() == 3 else 1
        for tta in ttas:
            for batch in args.batches:
                with ctx.Pool(1) as pool:
                    dt, base, rss = pool.apply(row, (args.model, spec, tta, batch, window))
                print(f"| {spec} | {'x'.join(map(str, img.GetSize()))} | {mb:.1f} | {'4 flips' if tta else 'off'} | "
                      f"{batch} | {dt:.2f} | {slices / dt:.2f} | {rss:,.0f} ({base:,.0f}) |", flush=True)


if __name__ == "__main__":
    main()
