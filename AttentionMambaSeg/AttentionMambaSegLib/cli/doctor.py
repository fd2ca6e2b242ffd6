"""``attention-mamba-seg doctor``: report versions, the device verdict and the selective-scan backend."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``doctor`` subcommand."""
    parser = subparsers.add_parser(
        "doctor",
        help="check the installation (versions, GPU, scan backend)",
        description="Report library versions, whether a GPU passes a real convolution test, and which "
        "selective-scan implementation runs.",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="device to probe and report the scan backend of: auto, cpu, cuda[:N] or mps (default auto)",
    )
    parser.set_defaults(func=run)
    return parser


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError:
        return "not installed"
    except Exception as e:  # noqa: BLE001 - report, never fail: this is a diagnostic
        return f"not importable ({type(e).__name__}: {e})"
    return str(getattr(mod, "__version__", "installed"))


def _mamba_ssm_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("mamba-ssm")  # without importing it (it pulls in Triton)
    except metadata.PackageNotFoundError:
        return "not installed"


def _triton_version() -> str:
    from importlib import metadata

    for name in ("triton", "triton-windows"):  # without importing it
        try:
            return f"{metadata.version(name)} ({name})"
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def run(args: argparse.Namespace) -> int:
    """Print the report for the device that ``--device`` selects, with the selective-scan backend that
    runs on it; exit code 1 (and a line on stderr saying why) when that device is unusable."""
    import torch

    from .. import __version__
    from ..devices import select_device

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
            lines.append(
                (
                    f"cuda:{i}",
                    f"{props.name}, {props.total_memory / 2**30:.1f} GiB, compute {props.major}.{props.minor}",
                )
            )
        lines.append(("cuDNN", str(torch.backends.cudnn.version())))
    for name in ("numpy", "SimpleITK", "numba", "safetensors", "slicerio", "nrrd"):
        lines.append((name, _version(name)))
    lines.append(("mamba-ssm", _mamba_ssm_version()))
    lines.append(("triton", _triton_version()))
    status, error = 0, None
    try:
        device, reason = select_device(args.device)
        lines.append(("device", f"{device}: {reason}"))
    except (RuntimeError, ValueError) as e:
        device, error = None, f"device {args.device!r} is not usable: {e}"
        lines.append(("device", f"UNUSABLE: {e}"))
        status = 1
    if device is None:
        lines.append(("scan backend", "not checked (no usable device)"))
    else:
        try:
            ops = importlib.import_module("AttentionMambaSegLib.ops")
            lines.append((f"scan backend ({device.type})", str(ops.scan_backend_report(device))))
        except Exception as e:  # noqa: BLE001 - diagnostic output
            lines.append(("scan backend", f"report failed ({type(e).__name__}: {e})"))
            status = 1
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key:{width}s}  {value}")
    if error is not None:
        print(f"doctor: {error}", file=sys.stderr)
    return status
