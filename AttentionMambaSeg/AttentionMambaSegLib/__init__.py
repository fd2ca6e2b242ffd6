"""AttentionMambaSegLib: the backend of the AttentionMambaSeg 3D Slicer extension.

Attention-Mamba (Zhang et al., "Attention-Mamba: A Mamba-Enhanced Multi-Scale Parallel Inference
Network for Medical Image Segmentation", arXiv 2402.02286 v4) with a selective scan that runs on any
CPU (pure PyTorch, or a fused numba kernel) and on NVIDIA GPUs (mamba-ssm's CUDA kernel when it is
installed and verified), plus training, evaluation, volume inference, model packages and the MRML
adapter used by the Slicer module.

Importing this package is cheap: torch, numba and mamba-ssm are imported by the submodules that need
them, and optional kernels load lazily on first use.
"""

__version__ = "0.1.0"
