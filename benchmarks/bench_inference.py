"""Benchmark volume inference (``predict_volume``) on the CPU (prints a Markdown table; not a test).

Usage:  python benchmarks/bench_inference.py [--model cardiac-acdc] [--volumes acdc 256x256x200 512x512x120]
                                             [--batches 1 4 16] [--modes fast accurate sliding]
                                             [--window PIXELS] [--no-unet]

Modes: ``fast`` and ``accurate`` are the model's speed modes (model.json ``inference``); ``sliding`` is
overlapping windows of the model's inference_patch_size with 4 flips (the paper's recipe). Every row
also runs the same pipeline (same windows, flips, batch, foreground crop) with MONAI's ``BasicUNet``
(2D, features 32-32-64-128-256-32, random weights: its speed does not depend on them) in place of
Attention-Mamba, in a process of its own, when MONAI is installed: the ``ratio`` column is
Attention-Mamba's time over the U-Net's, the figure to watch.

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

import AttentionMambaSegLib  # noqa: F401  (first: it sets torch's OpenMP wait policy)
from AttentionMambaSegLib.card import PassPlan
from AttentionMambaSegLib.inference import InferenceSettings, Predictor
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


def passes(package, mode: str) -> PassPlan:
    """The PassPlan of a table row's mode."""
    if mode == "sliding":
        return PassPlan("sliding", 4)
    return package.card.speed_modes.plan(mode)


def basic_unet(package):
    """MONAI's 2D BasicUNet with the model's channels and classes, or None without MONAI."""
    try:
        from monai.networks.nets import BasicUNet
    except ImportError:
        return None
    return BasicUNet(spatial_dims=2, in_channels=package.in_channels, out_channels=package.num_classes).eval()


def row(model, path, mode, batch, window, unet=False):
    """One table row in a fresh process: its peak RSS is its own. Returns seconds and MB figures
    (None when ``unet`` and MONAI is not installed)."""
    torch.set_num_threads(os.cpu_count())
    torch.zeros(1) + 1  # initialise torch's runtime before the first reading
    runtime = _rss_mb()
    package = load_model_package(model)
    network = basic_unet(package) if unet else package.build_network("cpu")
    if network is None:
        return None
    with_model = _rss_mb()
    img = sitk.ReadImage(str(path))
    before = _rss_mb()
    predictor = Predictor(
        package,
        InferenceSettings(device="cpu", batch_size=batch, window=window),
        network=network,
        passes=passes(package, mode),
    )
    t0 = time.perf_counter()
    out = predictor.predict(img)
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
    p.add_argument(
        "--modes", nargs="+", choices=["fast", "accurate", "sliding"], default=["fast", "accurate", "sliding"]
    )
    p.add_argument("--window", type=int, default=None, help="sliding window (default: the model's)")
    p.add_argument("--no-unet", action="store_true", help="leave out the BasicUNet column")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count())
    package = load_model_package(args.model)
    print(
        f"model {package.id}, training patch {list(package.card.patch_size)}, sliding window "
        f"{args.window or package.card.inference_patch_size[0]}, threads {torch.get_num_threads()}"
    )
    for mode in args.modes:
        print(f"- {mode}: {passes(package, mode).describe()}")
    print(
        "| volume | size (voxels) | input MB | mode | batch | s / volume | slices / s | BasicUNet s / volume | ratio "
        "| runtime + model MB | working MB | peak - runtime MB (budget 2 x input + model) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
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
            for mode in args.modes:
                for batch in args.batches:
                    with ctx.Pool(1) as pool:
                        dt, runtime, model_mb, working, peak = pool.apply(
                            row, (args.model, path, mode, batch, args.window)
                        )
                    unet = None
                    if not args.no_unet:
                        with ctx.Pool(1) as pool:
                            unet = pool.apply(row, (args.model, path, mode, batch, args.window, True))
                    unet_cells = (
                        ("- | - " if args.no_unet else "n/a (MONAI not installed) | - ")
                        if unet is None
                        else f"{unet[0]:.2f} | {dt / unet[0]:.1f} "
                    )
                    budget = 2 * mb + model_mb
                    print(
                        f"| {spec} | {size} | {mb:.1f} | {mode} | {batch} | {dt:.2f} | {slices / dt:.2f} | "
                        f"{unet_cells}| "
                        f"{runtime:,.0f} + {model_mb:,.0f} | {working:,.0f} | "
                        f"{peak - runtime:,.0f} (2 x input + model: {budget:,.0f}) |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
