"""Benchmark volume inference (``predict_volume``) on the CPU (prints a Markdown table; not a test).

Usage:  python benchmarks/bench_inference.py [--model cardiac-acdc] [--volumes acdc 256x256x200 512x512x120]
                                             [--batches 1 4 16] [--tta both|on|off] [--window PIXELS]

Volumes: ``acdc`` is the bundled real ACDC validation volume; ``WxHxS`` are synthetic-intensity volumes
(smoothed noise, int16, 1.5625 x 1.5625 x 10 mm: the cardiac model's own spacing, so nothing is shrunk),
made once and written to a temporary file that each row reads. Each row runs in a fresh process and
reports seconds per volume, slices per second and memory from RSS: ``runtime`` = Python + torch,
``model`` = what loading the network added, ``input`` = the volume's voxels, ``working`` = peak RSS
minus (runtime + model + the volume as read), and ``peak - runtime`` beside a reference of
``2 x input + model``. The sliding window is the model's inference_patch_size unless --window is given.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from AttentionMambaSegLib.inference import predict_volume
from AttentionMambaSegLib.package import load_model_package

EXAMPLE = Path(__file__).resolve().parents[1] / "AttentionMambaSeg/Resources/Examples/patient019_frame01_0000.nii.gz"


def volume(spec: str) -> sitk.Image:
    """The volume of a table row (synthetic ones are made here: call once, then save)."""
    if spec == "acdc":
        return sitk.ReadImage(str(EXAMPLE))
    w, h, s = (int(v) for v in spec.lower().split("x"))
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(s, h, w)).astype(np.float32)
    img = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(arr), 3.0)
    img = sitk.Cast(sitk.RescaleIntensity(img, 0, 1000), sitk.sitkInt16)
    img.SetSpacing((1.5625, 1.5625, 10.0))
    return img


def _rss_mb() -> float:
    """Current resident set size (MB), from /proc (Linux); the peak comes from getrusage."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def row(model, path, tta, batch, window):
    """One table row in a fresh process: its peak RSS is its own. Returns seconds and MB figures."""
    torch.set_num_threads(os.cpu_count())
    torch.zeros(1) + 1  # initialise torch's runtime before the first reading
    runtime = _rss_mb()
    package = load_model_package(model)
    network = package.build_network("cpu")
    with_model = _rss_mb()
    img = sitk.ReadImage(str(path))
    before = _rss_mb()
    t0 = time.perf_counter()
    out = predict_volume(img, package, device="cpu", tta=tta, batch_size=batch, network=network, window=window)
    dt = time.perf_counter() - t0
    assert out.GetSize() == img.GetSize()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dt, runtime, with_model - runtime, peak - before, peak


def main():
    from _header import machine_header

    print(machine_header())
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
    print("| volume | size (voxels) | input MB | TTA | batch | s / volume | slices / s | runtime + model MB "
          "| working MB | peak - runtime MB (budget 2 x input + model) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.volumes:
            img = volume(spec)
            path = EXAMPLE if spec == "acdc" else Path(tmp) / f"{spec}.nrrd"
            if spec != "acdc":
                sitk.WriteImage(img, str(path))
            mb = img.GetNumberOfPixels() * img.GetSizeOfPixelComponent() / 2**20
            slices = img.GetSize()[2] if img.GetDimension() == 3 else 1
            size = "x".join(str(v) for v in img.GetSize())
            del img
            for tta in ttas:
                for batch in args.batches:
                    with ctx.Pool(1) as pool:
                        dt, runtime, model_mb, working, peak = pool.apply(row, (args.model, path, tta, batch, window))
                    budget = 2 * mb + model_mb
                    print(f"| {spec} | {size} | {mb:.1f} | {'4 flips' if tta else 'off'} | "
                          f"{batch} | {dt:.2f} | {slices / dt:.2f} | {runtime:,.0f} + {model_mb:,.0f} | {working:,.0f} | "
                          f"{peak - runtime:,.0f} (2 x input + model: {budget:,.0f}) |",
                          flush=True)


if __name__ == "__main__":
    main()
