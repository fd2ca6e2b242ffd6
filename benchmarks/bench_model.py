"""Benchmark the whole network on the CPU against MONAI's BasicUNet (prints a Markdown table).

Usage:  python benchmarks/bench_model.py [--sizes 192 224 256] [--batches 1 8] [--bf16]

Per input size and batch: eval forward seconds per slice (float32, and bf16 autocast with --bf16),
a training step (forward + backward, 9 deep-supervision outputs) per slice with --train (batch 8 only;
float32, and bf16 autocast with --bf16 too), and the peak RSS of a fresh process that ran that row;
the same for MONAI BasicUNet (the peer) at the same input. Also the share of the SS2D scans and of the
convolutions in an eval forward.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch

from AttentionMambaSegLib.model import AttentionMamba


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def eval_time(net, x, bf16=False, repeats=2):
    best = float("inf")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        net(x[:1])
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(x)
            best = min(best, time.perf_counter() - t0)
    return best / x.shape[0]


def train_time(net, x, bf16=False):
    net.train()
    best = float("inf")
    for i in range(2):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
            loss = sum(o.float().mean() for o in out) if isinstance(out, (list, tuple)) else out.float().mean()
        loss.backward()
        if i:
            best = time.perf_counter() - t0
    net.eval()
    return best / x.shape[0]


def scan_share(net, x):
    from torch.profiler import profile

    with torch.no_grad(), profile() as prof:
        net(x)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    scan = sum(e.self_cpu_time_total for e in prof.key_averages() if "SS2D" in e.key or "ScanCore" in e.key)
    conv = sum(e.self_cpu_time_total for e in prof.key_averages() if "convolution" in e.key)
    return scan / total, conv / total


def make_net(name):
    torch.manual_seed(0)
    if name == "Attention-Mamba":
        return AttentionMamba(1, 4).eval()
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=4).eval()


def row(name, size, batch, bf16, train):
    """One table row, run in a fresh process so that its peak RSS is its own."""
    torch.set_num_threads(os.cpu_count())
    net = make_net(name)
    x = torch.randn(batch, 1, size, size)
    cells = [f"{eval_time(net, x):.3f}"]
    if bf16:
        cells.append(f"{eval_time(net, x, bf16=True):.3f}")
    if train:
        cells.append(f"{train_time(net, x):.3f}" if batch == 8 else "-")
        if bf16:
            cells.append(f"{train_time(net, x, bf16=True):.3f}" if batch == 8 else "-")
    return cells, peak_rss_mb()


def main():
    from _header import machine_header

    print(machine_header())
    import multiprocessing as mp

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[192, 224, 256])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    p.add_argument("--train", action="store_true", help="also time a training step at batch 8")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count())
    names = ["Attention-Mamba", "MONAI BasicUNet"]
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}")
    for name in names:
        print(f"{name}: {sum(q.numel() for q in make_net(name).parameters()):,} parameters")
    cols = ["eval fp32 s/slice"] + (["eval bf16 s/slice"] if args.bf16 else [])
    if args.train:
        cols += ["train fp32 s/slice"] + (["train bf16 s/slice"] if args.bf16 else [])
    print("| network | size | batch | " + " | ".join(cols) + " | peak RSS MB |")
    print("|---" * (4 + len(cols)) + "|")
    ctx = mp.get_context("spawn")
    for size in args.sizes:
        for batch in args.batches:
            for name in names:
                with ctx.Pool(1) as pool:
                    cells, rss = pool.apply(row, (name, size, batch, args.bf16, args.train))
                print(f"| {name} | {size} | {batch} | " + " | ".join(cells) + f" | {rss:,.0f} |", flush=True)
    s, c = scan_share(make_net("Attention-Mamba"), torch.randn(8, 1, 224, 224))
    print(f"\nAttention-Mamba eval 8x224x224: SS2D scans {100 * s:.0f} % of CPU time, convolutions {100 * c:.0f} %")


if __name__ == "__main__":
    main()
