"""``selective_scan``: one function, several backends that give the same numbers.

Backends (``backend=``):
    "torch"     pure PyTorch, blocked, hand-written backward (:mod:`.scan_torch`); runs everywhere.
    "cpu-fused" numba kernels (:mod:`.scan_numba`); CPU tensors only.
    "cuda"      mamba-ssm's CUDA kernel (``selective_scan_fn``); CUDA tensors only.
    "auto"      "cuda" for CUDA tensors and "cpu-fused" for CPU tensors when the backend imports and a
                first small call agrees with "torch" (relative error <= 1e-3 for cuda, <= 1e-5 for
                cpu-fused); otherwise "torch", with one log line saying why.

Shapes (mamba-ssm's): u, delta, z (batch, channels, L); A (channels, d_state); B, C (batch, d_state,
L) or (batch, groups, d_state, L); D, delta_bias (channels,). Returns y like u (float32 for float32
or lower-precision input; float64 for float64 input).
"""

from __future__ import annotations

import logging
import os
import threading

import torch
from .scan_torch import selective_scan_torch

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "cpu-fused", "cuda")

_lock = threading.Lock()
_verdicts: dict[str, tuple[bool, str]] = {}


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def _probe_inputs(device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, d, n, L = 2, 8, 16, 67
    u = torch.randn(b, d, L, generator=g)
    delta = torch.randn(b, d, L, generator=g) * 0.5
    A = -torch.rand(d, n, generator=g) * 4 - 0.1
    B = torch.randn(b, 2, n, L, generator=g)
    C = torch.randn(b, 2, n, L, generator=g)
    D = torch.randn(d, generator=g)
    z = torch.randn(b, d, L, generator=g)
    bias = torch.randn(d, generator=g) * 0.1
    return [t.to(device) for t in (u, delta, A, B, C, D, z, bias)]


def _check_backend(name: str, device: torch.device) -> tuple[bool, str]:
    """Import ``name`` and compare it with "torch" once per process. Returns (usable, reason)."""
    key = f"{name}:{device.type}"
    with _lock:
        if key in _verdicts:
            return _verdicts[key]
        tolerance = 1e-3 if name == "cuda" else 1e-5
        try:
            if name == "cpu-fused" and os.environ.get("ATTENTION_MAMBA_SEG_NO_NUMBA"):
                raise ImportError("disabled by ATTENTION_MAMBA_SEG_NO_NUMBA")
            fn = _SCANS[name]()
            args = _probe_inputs(device)
            kw = dict(D=args[5], z=args[6], delta_bias=args[7], delta_softplus=True)
            # the probe may run first inside a caller's bf16 autocast: it must compare float32 scans
            with torch.no_grad(), torch.autocast("cpu", enabled=False), torch.autocast(device.type, enabled=False):
                got = fn(*args[:5], **kw)
                ref = selective_scan_torch(*[a.cpu() for a in args[:5]],
                                           **{k: (v.cpu() if torch.is_tensor(v) else v) for k, v in kw.items()})
            err = _relative_error(got.cpu(), ref)
            verdict = (err <= tolerance, f"{name} agrees with torch (relative error {err:.1e})"
                       if err <= tolerance else f"{name} disagrees with torch (relative error {err:.1e} > {tolerance:g})")
        except Exception as e:  # any import or kernel failure means: do not use this backend
            verdict = (False, f"{name} unavailable: {type(e).__name__}: {e}")
        _verdicts[key] = verdict
        log.info("selective scan: %s", verdict[1])
        return verdict


def _load_cpu_fused():
    from .fused import selective_scan_cpu_fused

    return selective_scan_cpu_fused


def _load_cuda():
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # optional, Linux + CUDA

    def run(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        dtype = u.dtype
        out = selective_scan_fn(u.float(), delta.float(), A.float(), B.float(), C.float(),
                                None if D is None else D.float(), None if z is None else z.float(),
                                None if delta_bias is None else delta_bias.float(), delta_softplus)
        return out.to(torch.float64 if dtype == torch.float64 else torch.float32)

    return run


_SCANS = {"torch": lambda: selective_scan_torch, "cpu-fused": _load_cpu_fused, "cuda": _load_cuda}


def resolve_backend(device: torch.device | str, backend: str = "auto") -> str:
    """The backend that ``selective_scan`` runs for tensors on ``device``.

    Raises:
        ValueError: for an unknown backend name, or one that cannot run on ``device``.
    """
    device = torch.device(device)
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        preferred = "cuda" if device.type == "cuda" else "cpu-fused" if device.type == "cpu" else "torch"
        if preferred != "torch" and _check_backend(preferred, device)[0]:
            return preferred
        return "torch"
    if backend == "cpu-fused" and device.type != "cpu":
        raise ValueError(f"backend 'cpu-fused' needs CPU tensors, got {device.type}; use 'auto' or 'torch'")
    if backend == "cuda" and device.type != "cuda":
        raise ValueError(f"backend 'cuda' needs CUDA tensors, got {device.type}; use 'auto' or 'torch'")
    return backend


def scan_backend_report(device: str = "cpu") -> str:
    """A line saying which backend ``auto`` picks on ``device`` and why (for ``doctor``)."""
    device = torch.device(device)
    name = resolve_backend(device, "auto")
    key = f"{'cuda' if device.type == 'cuda' else 'cpu-fused'}:{device.type}"
    reason = _verdicts.get(key, (True, "no faster backend for this device"))[1]
    return f"{name} ({reason})"


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, backend="auto"):
    """Selective scan of Mamba (Gu & Dao 2023, Algorithm 2), with mamba-ssm's signature.

    Args:
        u: (batch, channels, L) input.
        delta: (batch, channels, L) step size (before ``delta_bias`` / softplus).
        A: (channels, d_state) state matrix, negative real (A = -exp(A_log)).
        B: (batch, d_state, L) or (batch, groups, d_state, L) input projection.
        C: like B, output projection.
        D: optional (channels,) skip connection.
        z: optional (batch, channels, L) gate; the output is multiplied by SiLU(z).
        delta_bias: optional (channels,) added to delta.
        delta_softplus: apply softplus to delta + delta_bias.
        backend: "auto", "torch", "cpu-fused" or "cuda" (see module docstring).

    Returns:
        (batch, channels, L) float32 (float64 for float64 input).

    Raises:
        ValueError: on inconsistent shapes or an unknown / unusable backend.
    """
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (batch, channels, L); got {tuple(u.shape)} and {tuple(delta.shape)}")
    batch, channels, length = u.shape
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"A must be (channels={channels}, d_state); got {tuple(A.shape)}")
    for name, M in (("B", B), ("C", C)):
        if M.dim() not in (3, 4) or M.shape[0] != batch or M.shape[-1] != length or M.shape[-2] != A.shape[1]:
            raise ValueError(f"{name} must be (batch, d_state, L) or (batch, groups, d_state, L) with batch={batch}, "
                             f"d_state={A.shape[1]}, L={length}; got {tuple(M.shape)}")
        if M.dim() == 4 and channels % M.shape[1]:
            raise ValueError(f"channels ({channels}) must be a multiple of {name}'s groups ({M.shape[1]})")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must be like u {tuple(u.shape)}; got {tuple(z.shape)}")
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    args = [t.to(dtype) if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)]
    name = resolve_backend(u.device, backend)
    if name != "torch" and backend != "auto" and not _check_backend(name, u.device)[0]:
        raise ValueError(f"selective-scan backend {name!r} is not usable: {_verdicts[f'{name}:{u.device.type}'][1]}")
    if name == "cpu-fused" and dtype == torch.float64:
        name = "torch"  # the fused kernel is float32; float64 (tests, gradcheck) goes to torch
    fn = _SCANS[name]()
    with torch.autocast(u.device.type, enabled=False):  # the scan stays float32 under bf16 autocast
        return fn(*args[:5], D=args[5], z=args[6], delta_bias=args[7], delta_softplus=delta_softplus)


__all__ = ["BACKENDS", "selective_scan", "resolve_backend", "scan_backend_report"]
