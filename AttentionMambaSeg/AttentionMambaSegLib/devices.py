"""Device choice: the only code that turns a device string into a ``torch.device``.

Inference, training, evaluation and the Slicer module's child process all call :func:`select_device`,
which runs a real convolution on a GPU before trusting it (a GPU that PyTorch lists may still lack
kernels for this build, or have a broken driver).
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path

__all__ = [
    "select_device",
    "default_batch_size",
    "cpu_has_native_bf16",
    "warn_if_bf16_is_emulated",
    "DEFAULT_BATCH_SIZE_CPU",
    "DEFAULT_BATCH_SIZE_GPU",
]

logger = logging.getLogger(__name__)

#: Default slices per forward pass: on a CPU one slice is as fast as four (measured with
#: benchmarks/bench_inference.py) at half the activation memory; GPUs gain from batching.
DEFAULT_BATCH_SIZE_CPU = 1


DEFAULT_BATCH_SIZE_GPU = 4

_probe_cache: dict[str, str | None] = {}


def _probe_device(device) -> str | None:
    """Run a small convolution on ``device`` and compare with the CPU; return None or the failure."""
    import torch

    key = str(device)
    if key in _probe_cache:
        return _probe_cache[key]
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, 32, 32, generator=gen)
        w = torch.randn(8, 3, 3, 3, generator=gen)
        expected = torch.nn.functional.conv2d(x, w, padding=1)
        got = torch.nn.functional.conv2d(x.to(device), w.to(device), padding=1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        got = got.cpu()
        if not torch.allclose(got, expected, rtol=1e-2, atol=1e-2):
            error = f"convolution result differs from the CPU's (max error {float((got - expected).abs().max()):.3g})"
        else:
            error = None
    except Exception as e:  # noqa: BLE001 - any failure (no kernel image, cuDNN mismatch, driver) disqualifies it
        error = f"{type(e).__name__}: {e}".strip()
    _probe_cache[key] = error
    return error


def _slower_than_cpu(device) -> str | None:
    """Why ``device`` would be slower than the CPU, or None.

    A GPU that can run only the step-by-step torch selective scan (one kernel launch per time step)
    is slower than a CPU running its fused scan (docs/SCAN.md): ``auto`` does not choose it.
    """
    from .ops import resolve_backend
    from .ops.dispatch import scan_backend_report

    try:
        if resolve_backend(device) != "torch" or resolve_backend("cpu") != "cpu-fused":
            return None
    except ValueError as e:  # a scan backend forced for the process that cannot run on this device
        return str(e)
    return (
        f"it would run only the slow torch selective scan ({scan_backend_report(device)}), and the CPU "
        "runs its fused scan; install Triton (pip install triton, on Windows pip install triton-windows) "
        "to use this GPU"
    )


def select_device(requested: str = "auto"):
    """Choose the torch device for inference, trusting a GPU only after a real convolution ran on it.

    Args:
        requested: ``"auto"`` (CUDA if its probe passes, else Apple MPS if its probe passes, else
            CPU; a GPU that would run only the torch selective scan while the CPU runs its fused scan
            is skipped, and the reason says so), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Returns:
        ``(torch.device, reason)``; ``reason`` says why this device was chosen (and, for ``auto``, why
        a GPU was not), to be shown to the user.

    Raises:
        ValueError: for an unknown device string.
        RuntimeError: when an explicitly requested GPU is missing or fails the probe.
    """
    import torch

    req = str(requested or "auto").strip().lower()
    if req == "cpu":
        return torch.device("cpu"), "CPU (requested)"
    if req == "auto":
        return _auto_device()
    if req == "cuda" or req.startswith("cuda:"):
        return _requested_cuda(requested, req)
    if req == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise RuntimeError("Device 'mps' requested but Apple MPS is not available. Use 'auto' or 'cpu'.")
        error = _probe_device(torch.device("mps"))
        if error is not None:
            raise RuntimeError(f"MPS failed a test convolution ({error}). Use '--device cpu'.")
        return torch.device("mps"), "Apple MPS GPU (requested, convolution probe passed)"
    raise ValueError(f"Unknown device {requested!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")


def _auto_device():
    """``auto``: CUDA if its probe passes (and it would not be slower than the CPU), else Apple MPS likewise,
    else the CPU with the reasons the GPUs were not used."""
    import torch

    reasons = []
    if torch.cuda.is_available():
        device = torch.device("cuda", 0)
        error = _probe_device(device)
        slower = _slower_than_cpu(device) if error is None else None
        if error is None and slower is None:
            return device, f"CUDA GPU {torch.cuda.get_device_name(0)} (convolution probe passed)"
        if error is not None:
            reasons.append(f"CUDA GPU failed the convolution probe ({error})")
        else:
            reasons.append(f"CUDA GPU {torch.cuda.get_device_name(0)} not used: {slower}")
    elif torch.version.cuda is None:
        reasons.append(f"no CUDA: this PyTorch {torch.__version__} is a CPU-only build")
    else:
        reasons.append("no CUDA GPU visible to PyTorch")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        device = torch.device("mps")
        error = _probe_device(device)
        slower = _slower_than_cpu(device) if error is None else None
        if error is None and slower is None:
            return device, "Apple MPS GPU (convolution probe passed)"
        reasons.append(
            f"MPS failed the convolution probe ({error})" if error is not None else f"Apple MPS GPU not used: {slower}"
        )
    return torch.device("cpu"), "CPU: " + "; ".join(reasons)


def _requested_cuda(requested: str, req: str):
    """An explicitly requested CUDA device (``req``: ``"cuda"`` or ``"cuda:N"``, lower case), probed.

    Raises:
        ValueError: N is not an integer.
        RuntimeError: no CUDA, no device N, or a failed probe.
    """
    import torch

    if not torch.cuda.is_available():
        why = "this PyTorch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise RuntimeError(f"Device {requested!r} requested but CUDA is not available ({why}). Use 'auto' or 'cpu'.")
    try:
        index = int(req.split(":", 1)[1]) if ":" in req else 0
    except ValueError as e:
        raise ValueError(f"Invalid device {requested!r}: expected 'cuda' or 'cuda:N' with N an integer.") from e
    if not 0 <= index < torch.cuda.device_count():
        raise RuntimeError(f"Device {requested!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist.")
    device = torch.device("cuda", index)
    error = _probe_device(device)
    if error is not None:
        raise RuntimeError(
            f"CUDA device {index} failed a test convolution ({error}); the installed PyTorch may not "
            "support this GPU. Use '--device cpu', or install a PyTorch build for this GPU."
        )
    return device, f"CUDA GPU {torch.cuda.get_device_name(index)} (requested, convolution probe passed)"


def default_batch_size(device) -> int:
    """Slices per forward pass when none is given: :data:`DEFAULT_BATCH_SIZE_CPU` on the CPU, else
    :data:`DEFAULT_BATCH_SIZE_GPU` (``device``: a ``torch.device`` or its string)."""
    return DEFAULT_BATCH_SIZE_CPU if str(device).split(":")[0] == "cpu" else DEFAULT_BATCH_SIZE_GPU


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this x86 CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX BF16).

    Without either, PyTorch emulates bf16 on the CPU: on a 2-core AVX2 EPYC the ``--time-budget`` planner
    measured 34.3 s per training step of 8 x 128 x 128 crops under bf16 autocast and 4.7 s in float32
    ), while on an AVX-512 BF16 machine bf16 was 1.1-1.5x faster than float32 (docs/BENCHMARKS.md).

    Args:
        cpuinfo: text of ``/proc/cpuinfo`` (read when None).

    Returns:
        True or False on Linux x86, where the ``flags`` line tells; None where it cannot be told
        (another OS or architecture, or no flags line).
    """
    if cpuinfo is None:
        if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
            return None
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return None


def warn_if_bf16_is_emulated(device, bf16: bool) -> None:
    """Warn when bf16 autocast was asked for on a CPU that emulates bfloat16 (``device``: a torch.device)."""
    if bf16 and device.type == "cpu" and cpu_has_native_bf16() is False:
        logger.warning(
            "bf16 autocast on a CPU without AVX-512 BF16 or AMX: PyTorch emulates bfloat16 here, which was "
            "measured 6-7x slower than float32 on such a CPU; drop --bf16 (bf16=False) on this machine"
        )
