"""Benchmark the whole network on the CPU against MONAI's BasicUNet (prints a Markdown table).

Usage:  python benchmarks/bench_model.py [--sizes 192 224 256] [--batches 1 8] [--bf16]

Per input size and batch: eval forward seconds per slice (float32, and bf16 autocast with --bf16),
peak RSS, and a training step (forward + backward, 9 deep-supervision outputs) per slice; the same for
MONAI BasicUNet (the peer) at the same input. Also the share of the SS2D scans in an eval forward.
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


def train_time(net, x):
    net.train()
    out = net(x)
    loss = sum(o.float().mean() for o in out) if isinstance(out, (list, tuple)) else out.mean()
    loss.backward()
    t0 = time.perf_counter()
    out = net(x)
    loss = sum(o.float().mean() for o in out) if isinstance(out, (list, tuple)) else out.mean()
    loss.backward()
    net.eval()
    return (time.perf_counter() - t0) / x.shape[0]


def scan_share(net, x):
    from torch.profiler import profile

    with torch.no_grad(), profile() as prof:
        net(x)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    scan = sum(e.self_cpu_time_total for e in prof.key_averages() if "SS2D" in e.key or "ScanCore" in e.key)
    conv = sum(e.self_cpu_time_total for e in prof.key_averages() if "convolution" in e.key)
    return scan / total, conv / total


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[192, 224, 256])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    p.add_argument("--train", action="store_true", help="also time a training step at batch 8")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    from monai.networks.nets import BasicUNet

    nets = {"Attention-Mamba": AttentionMamba(1, 4).eval(),
            "MONAI BasicUNet": BasicUNet(spatial_dims=2, in_channels=1, out_channels=4).eval()}
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}")
    for name, net in nets.items():
        print(f"{name}: {sum(q.numel() for q in net.parameters()):,} parameters")
    cols = ["eval fp32 s/slice"] + (["eval bf16 s/slice"] if args.bf16 else []) + (["train s/slice"] if args.train else [])
    print("| network | size | batch | " + " | ".join(cols) + " | peak RSS MB |")
    print("|---" * (4 + len(cols)) + "|")
    for size in args.sizes:
        for batch in args.batches:
            x = torch.randn(batch, 1, size, size)
            for name, net in nets.items():
                cells = [f"{eval_time(net, x):.3f}"]
                if args.bf16:
                    cells.append(f"{eval_time(net, x, bf16=True):.3f}")
                if args.train:
                    cells.append(f"{train_time(net, x):.3f}" if batch == 8 else "-")
                print(f"| {name} | {size} | {batch} | " + " | ".join(cells) + f" | {peak_rss_mb():,.0f} |")
    s, c = scan_share(nets["Attention-Mamba"], torch.randn(8, 1, 224, 224))
    print(f"\nAttention-Mamba eval 8x224x224: SS2D scans {100 * s:.0f} % of CPU time, convolutions {100 * c:.0f} %")


if __name__ == "__main__":
    main()
