"""Benchmark the selective-scan backends (prints a Markdown table; not a test).

Usage:  python benchmarks/bench_scan.py [--quick]

Rows: the model's real shapes (L = 49 ... 3,136 tokens, d = 256 x 4 directions, d_state 16) and the
larger shapes of a wider network: forward (b 8, d 768, L 3,136) and forward + backward (b 8, d 192, L 3,136).
Columns: milliseconds (min of repeats) per backend; the step-by-step reference only where it takes
under a minute (forward up to L = 3,136 at b 1; forward + backward, by autograd through its step loop,
only at L = 196). Threads = cores.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from AttentionMambaSegLib.ops import selective_scan_reference, selective_scan_torch
from AttentionMambaSegLib.ops.fused import selective_scan_cpu_fused


def inputs(b, d, L, n=16, groups=4, grad=False):
    g = torch.Generator().manual_seed(0)
    ts = [
        torch.randn(b, d, L, generator=g),
        torch.randn(b, d, L, generator=g) * 0.5 - 2.0,
        -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),
        torch.randn(b, groups, n, L, generator=g),
        torch.randn(b, groups, n, L, generator=g),
        torch.ones(d),
        torch.randn(d, generator=g) * 0.1,
    ]
    return [t.requires_grad_(grad) for t in ts]


def timed(fn, args, backward=False, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        y = fn(*args[:6], None, args[6], True)
        if backward:
            y.sum().backward()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main():
    from _header import machine_header

    print(machine_header())
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rows and repeats")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())
    backends = {"torch (blocked)": selective_scan_torch, "cpu-fused (numba)": selective_scan_cpu_fused}
    timed(selective_scan_cpu_fused, inputs(1, 8, 64))  # compile / load the cache
    rows = [("fwd", 8, 768, 3136), ("fwd+bwd", 8, 192, 3136)]
    if not args.quick:
        rows += [("fwd", 1, 1024, L) for L in (49, 196, 784, 2304, 3136)]
        rows += [("fwd+bwd", 1, 1024, L) for L in (196, 784, 2304)]
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}")
    print("| pass | b | d | L | " + " | ".join(backends) + " | step-by-step reference |")
    print("|---" * (5 + len(backends)) + "|")
    for kind, b, d, L in rows:
        back = kind != "fwd"
        cells = []
        for fn in backends.values():
            cells.append(f"{timed(fn, inputs(b, d, L, grad=back), back, 1 if args.quick else 3):,.0f} ms")
        ref = "-"
        if (not back and b * d * L <= 1024 * 3136) or (back and b * d * L <= 1024 * 196):
            # autograd through the step loop is O(L^2) in backward: only the shortest row
            ref = f"{timed(selective_scan_reference, inputs(b, d, L, grad=back), back, 1):,.0f} ms"
        print(f"| {kind} | {b} | {d} | {L:,} | " + " | ".join(cells) + f" | {ref} |")


if __name__ == "__main__":
    main()
