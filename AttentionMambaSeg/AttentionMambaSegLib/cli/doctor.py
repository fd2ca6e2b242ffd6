"""``attention-mamba-seg doctor``: report versions, the device verdict and the selective-scan backend."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``doctor`` subcommand."""
    parser = subparsers.add_parser(
        "doctor", help="check the installation (versions, GPU, scan backend)",
        description="Report library versions, whether a GPU passes a real convolution test, and which "
                    "selective-scan implementation runs.",
    )
    parser.add_argument("--device", default="auto", help="device to probe (default auto)")
    parser.set_defaults(func=run)
    return parser


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError:
        return "not installed"
    except Exception as e:  # report, never fail: this is a diagnostic
        return f"not importable ({type(e).__name__}: {e})"
    return str(getattr(mod, "__version__", "installed"))


def _mamba_ssm_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("mamba-ssm")  # without importing it (it pulls in Triton)
    except metadata.PackageNotFoundError:
        return "not installed"


def run(args: argparse.Namespace) -> int:
    """Print the report; exit code 0 unless the requested device is unusable."""
    from .. import __version__
    from ..devices import select_device

    import torch

    lines = [
        ("attention-mamba-seg", __version__),
        ("python", f"{sys.version.split()[0]} ({platform.platform()})"),
        ("torch", torch.__version__),
        ("torch CUDA build", torch.version.cuda or "none (CPU-only build)"),
        ("CUDA available", str(torch.cuda.is_available())),
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            lines.append((f"cuda:{i}", f"{props.name}, {props.total_memory / 2**30:.1f} GiB, "
                                        f"compute {props.major}.{props.minor}"))
        lines.append(("cuDNN", str(torch.backends.cudnn.version())))
    for name in ("numpy", "SimpleITK", "numba", "safetensors", "slicerio", "nrrd"):
        lines.append((name, _version(name)))
    lines.append(("mamba-ssm", _mamba_ssm_version()))
    status = 0
    try:
        device, reason = select_device(args.device)
        lines.append(("device", f"{device}: {reason}"))
    except (RuntimeError, ValueError) as e:
        lines.append(("device", f"UNUSABLE: {e}"))
        status = 1
    try:
        ops = importlib.import_module("AttentionMambaSegLib.ops")
    except Exception as e:  # the scan line is informative only
        lines.append(("scan backend", f"ops not importable ({type(e).__name__}: {e})"))
    else:
        report = getattr(ops, "scan_backend_report", None)
        if callable(report):
            try:
                lines.append(("scan backend", str(report())))
            except Exception as e:  # noqa: BLE001 - diagnostic output
                lines.append(("scan backend", f"report failed ({type(e).__name__}: {e})"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key:{width}s}  {value}")
    return status
