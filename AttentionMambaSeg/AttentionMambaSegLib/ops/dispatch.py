"""``selective_scan``: one function, several backends that give the same numbers (docs/SCAN.md).

Backends (``backend=``):
    "torch"     pure PyTorch, blocked, hand-written backward (:mod:`.scan_torch`); runs everywhere.
    "cpu-fused" numba kernels (:mod:`.scan_numba`); CPU tensors only.
    "cuda"      mamba-ssm's CUDA kernel (``selective_scan_fn``); CUDA tensors only.
    "triton"    Triton kernels (:mod:`.scan_triton`); CUDA tensors, or CPU tensors in Triton's
                interpreter (``TRITON_INTERPRET=1``, for tests).
    "auto"      CUDA tensors: "cuda" when mamba-ssm imports and a first small call agrees with "torch"
                (relative error <= 1e-3), else "triton" on the same terms, else "torch" with a warning
                naming the cause. CPU tensors: "cpu-fused" when it agrees (<= 1e-5), else "torch".
                Other devices: "torch". One log line says which and why.

The environment variable ``ATTENTION_MAMBA_SEG_SCAN_BACKEND`` (auto, torch, cpu-fused, cuda, triton)
replaces "auto" for every scan of the process (the network never passes another backend), e.g. to
benchmark or test one backend; a forced backend that cannot run raises ``ValueError``.

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

BACKENDS = ("auto", "torch", "cpu-fused", "cuda", "triton")
#: Environment variable that replaces "auto" for every scan of the process.
BACKEND_ENV = "ATTENTION_MAMBA_SEG_SCAN_BACKEND"
#: Largest relative error against the torch scan on the probe for a backend to be used.
TOLERANCES = {"cpu-fused": 1e-5, "cuda": 1e-3, "triton": 1e-3}

_lock = threading.Lock()
_verdicts: dict[str, tuple[bool, str]] = {}
_warned: set[str] = set()


def _device_type(device: torch.device) -> str:
    """The device type that decides the backend (tests replace it to take the CUDA path on CPU tensors)."""
    return device.type


def _verdict_key(name: str, device: torch.device) -> str:
    key = f"{name}:{_device_type(device)}"
    if name == "triton" and device.type == "cpu":
        from .scan_triton import interpreter_enabled

        key += ":interpreter" if interpreter_enabled() else ":no-interpreter"
    return key


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
    key = _verdict_key(name, device)
    with _lock:
        if key in _verdicts:
            return _verdicts[key]
        tolerance = TOLERANCES[name]
        try:
            if name == "cpu-fused" and os.environ.get("ATTENTION_MAMBA_SEG_NO_NUMBA"):
                raise ImportError("disabled by ATTENTION_MAMBA_SEG_NO_NUMBA")
            fn = _SCANS[name]()
            args = _probe_inputs(device)
            kw = dict(D=args[5], z=args[6], delta_bias=args[7], delta_softplus=True)
            # the probe may run first inside a caller's bf16 autocast: it must compare float32 scans
            with torch.no_grad(), torch.autocast("cpu", enabled=False), torch.autocast(device.type, enabled=False):
                got = fn(*args[:5], **kw)
                ref = selective_scan_torch(
                    *[a.cpu() for a in args[:5]], **{k: (v.cpu() if torch.is_tensor(v) else v) for k, v in kw.items()}
                )
            err = _relative_error(got.cpu(), ref)
            verdict = (
                err <= tolerance,
                f"{name} agrees with torch (relative error {err:.1e})"
                if err <= tolerance
                else f"{name} disagrees with torch (relative error {err:.1e} > {tolerance:g})",
            )
        except Exception as e:  # noqa: BLE001 - any import or kernel failure means: do not use this backend
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
        out = selective_scan_fn(
            u.float(),
            delta.float(),
            A.float(),
            B.float(),
            C.float(),
            None if D is None else D.float(),
            None if z is None else z.float(),
            None if delta_bias is None else delta_bias.float(),
            delta_softplus,
        )
        return out.to(torch.float64 if dtype == torch.float64 else torch.float32)

    return run


def _load_triton():
    from .scan_triton import selective_scan_triton  # imports triton: optional, loaded on first use

    return selective_scan_triton


_SCANS = {
    "torch": lambda: selective_scan_torch,
    "cpu-fused": _load_cpu_fused,
    "cuda": _load_cuda,
    "triton": _load_triton,
}


def _forced_backend() -> str | None:
    value = os.environ.get(BACKEND_ENV, "").strip().lower()
    if not value or value == "auto":
        return None
    if value not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={value!r} is not a selective-scan backend; use one of {BACKENDS} or unset it")
    return value


def _auto_choice(device: torch.device) -> tuple[str, str]:
    """(backend, reason) of "auto" for tensors on ``device``. Each check runs once per process
    (:func:`_check_backend`); falling back to "torch" on a GPU is logged as a warning once."""
    device_type = _device_type(device)
    candidates = {"cuda": ("cuda", "triton"), "cpu": ("cpu-fused",)}.get(device_type, ())
    reasons = []
    for name in candidates:
        ok, reason = _check_backend(name, device)
        if ok:
            return name, reason
        reasons.append(reason)
    why = "; ".join(reasons) or f"no faster backend for {device_type} tensors"
    if device_type == "cuda" and device_type not in _warned:
        _warned.add(device_type)
        log.warning(
            "selective scan on the GPU runs the slow torch scan (%s). Install Triton "
            "(pip install triton; on Windows pip install triton-windows) for the fast GPU scan.",
            why,
        )
    return "torch", why


def resolve_backend(device: torch.device | str, backend: str = "auto") -> str:
    """The backend that ``selective_scan`` runs for tensors on ``device``.

    "auto" is replaced by ``ATTENTION_MAMBA_SEG_SCAN_BACKEND`` when that is set. An explicit (or forced)
    backend other than "torch" must pass its check (see the module docstring).

    Raises:
        ValueError: for an unknown backend name (argument or environment variable), one that cannot run
            on ``device``, or one whose check failed (the message gives the verdict).
    """
    device = torch.device(device)
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        backend = _forced_backend() or "auto"
    if backend == "auto":
        return _auto_choice(device)[0]
    device_type = _device_type(device)
    if backend == "cpu-fused" and device_type != "cpu":
        raise ValueError(f"backend 'cpu-fused' needs CPU tensors, got {device_type}; use 'auto' or 'torch'")
    if backend == "cuda" and device_type != "cuda":
        raise ValueError(f"backend 'cuda' needs CUDA tensors, got {device_type}; use 'auto' or 'torch'")
    if backend == "triton" and device_type != "cuda":
        from .scan_triton import check_device

        check_device(device)  # the CPU only in Triton's interpreter
    if backend != "torch":
        ok, reason = _check_backend(backend, device)
        if not ok:
            raise ValueError(f"selective-scan backend {backend!r} is not usable: {reason}")
    return backend


def scan_backend_report(device: str | torch.device = "cpu") -> str:
    """A line saying which backend runs on ``device`` and why (for ``doctor``)."""
    device = torch.device(device)
    forced = _forced_backend()
    name = resolve_backend(device, "auto")
    if forced:
        return f"{name} (forced by {BACKEND_ENV}; {_verdicts.get(_verdict_key(name, device), (True, 'no check'))[1]})"
    return f"{name} ({_auto_choice(device)[1]})"


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
        backend: "auto", "torch", "cpu-fused", "cuda" or "triton" (see the module docstring).

    Returns:
        (batch, channels, L) float32 (float64 for float64 input).

    Raises:
        ValueError: on inconsistent shapes or an unknown / unusable backend.
    """
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(
            f"u and delta must both be (batch, channels, L); got {tuple(u.shape)} and {tuple(delta.shape)}"
        )
    batch, channels, length = u.shape
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"A must be (channels={channels}, d_state); got {tuple(A.shape)}")
    for name, M in (("B", B), ("C", C)):
        if M.dim() not in (3, 4) or M.shape[0] != batch or M.shape[-1] != length or M.shape[-2] != A.shape[1]:
            raise ValueError(
                f"{name} must be (batch, d_state, L) or (batch, groups, d_state, L) with batch={batch}, "
                f"d_state={A.shape[1]}, L={length}; got {tuple(M.shape)}"
            )
        if M.dim() == 4 and channels % M.shape[1]:
            raise ValueError(f"channels ({channels}) must be a multiple of {name}'s groups ({M.shape[1]})")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must be like u {tuple(u.shape)}; got {tuple(z.shape)}")
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    name = resolve_backend(u.device, backend)
    if name in ("cpu-fused", "triton") and dtype == torch.float64:
        name = "torch"  # the fused kernels are float32; float64 (tests, gradcheck) goes to torch
    if name == "triton":  # reads bfloat16 / float16 inputs itself; the state is float32
        args = [
            t if t is None or t.dtype in (torch.float32, torch.bfloat16, torch.float16) else t.float()
            for t in (u, delta, A, B, C, D, z, delta_bias)
        ]
    else:
        args = [t.to(dtype) if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)]
    fn = _SCANS[name]()
    with torch.autocast(u.device.type, enabled=False):  # the scan stays float32 under bf16 autocast
        return fn(*args[:5], D=args[5], z=args[6], delta_bias=args[7], delta_softplus=delta_softplus)


__all__ = ["BACKENDS", "BACKEND_ENV", "selective_scan", "resolve_backend", "scan_backend_report"]
