"""Time the whole network with the fused SS2D kernel vs SS2D on the generic scan (not a test).

Usage:  python benchmarks/bench_ss2d_fusion.py fused|unfused
Prints the training-step time (batch 8, 128x128, forward + backward of the 9 outputs) and the eval time
per slice (batch 8, 224x224). Threads = torch default (cores).
"""

import sys
import time

import torch

from AttentionMambaSegLib.model import AttentionMamba

torch.manual_seed(0)
m = AttentionMamba(1, 4)
mode = sys.argv[1]
if mode == "unfused":
    import AttentionMambaSegLib.model.mamba as mm
    from AttentionMambaSegLib.ops.ss2d import ss2d_scan_unfused

    mm.ss2d_scan = ss2d_scan_unfused
x = torch.randn(8, 1, 128, 128)
m.train()
o = m(x[:2])
sum(t.mean() for t in o).backward()
ts = []
for _ in range(2):
    t = time.time()
    o = m(x)
    sum(t.mean() for t in o).backward()
    ts.append(time.time() - t)
print(mode, "train step b8 128:", min(ts))
m.eval()
x = torch.randn(8, 1, 224, 224)
with torch.no_grad():
    m(x[:1])
    t = time.time()
    m(x)
    print(mode, "eval b8 224 per slice", (time.time() - t) / 8)
