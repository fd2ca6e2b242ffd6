"""AttentionMambaSegLib: the backend of the AttentionMambaSeg 3D Slicer extension.

Attention-Mamba (Zhang et al., "Attention-Mamba: A Mamba-Enhanced Multi-Scale Parallel Inference
Network for Medical Image Segmentation", arXiv 2402.02286 v4) with a selective scan that runs on any
CPU (pure PyTorch, or a fused numba kernel) and on NVIDIA GPUs (Triton kernels, or mamba-ssm's CUDA
kernels when they are installed and verified), plus training, evaluation, volume inference, model packages and the MRML
adapter used by the Slicer module.

Importing this package is cheap: torch, numba and mamba-ssm are imported by the submodules that need
them, and optional kernels load lazily on first use.
"""

__version__ = "0.1.0"

import os as _os
import sys as _sys

# The network alternates torch's OpenMP regions with the numba selective-scan kernel's threads. With
# OpenMP's default wait policy torch's idle threads keep spinning on the cores between regions and the
# scan's threads wait for them: the cardiac demo volume took 35 s instead of 12 s on 2 busy cores
# (docs/BENCHMARKS.md, "OpenMP wait policy"). Passive waiting yields the cores at once. It only takes
# effect when set before torch is first imported (the command line, and so the Slicer module's child
# process, import this package first); an explicit OMP_WAIT_POLICY is kept, and Slicer's own process
# (which runs no network) is left as it is.
if "slicer" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
