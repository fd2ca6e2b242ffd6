"""Selective-scan operators: the dispatching ``selective_scan`` and its backends.

- :mod:`.reference`: step-by-step reference (the legend of every symbol).
- :mod:`.scan_torch`: blocked pure-PyTorch scan with a state-recomputing backward.
- :mod:`.scan_numba` / :mod:`.fused`: fused CPU kernels (numba), imported on first use.
- :mod:`.scan_triton` / :mod:`.triton_kernels`: Triton kernels for NVIDIA GPUs, imported on first use.
- mamba-ssm's CUDA kernel, imported lazily on first use on a CUDA tensor.
"""

from .dispatch import BACKENDS, resolve_backend, scan_backend_report, selective_scan
from .reference import selective_scan_reference
from .scan_torch import selective_scan_torch

__all__ = [
    "BACKENDS",
    "resolve_backend",
    "scan_backend_report",
    "selective_scan",
    "selective_scan_reference",
    "selective_scan_torch",
]
