"""Triton selective scan ("triton" backend): a fast GPU scan that needs no compiler at install time.

Triton ships with PyTorch's Linux CUDA wheels and as ``triton-windows`` on Windows; it compiles the two
kernels of :mod:`.triton_kernels` on the user's GPU on first use. Signature and numbers are those of the
other backends (mamba-ssm's ``selective_scan_fn``; legend in :mod:`.reference`, design in docs/SCAN.md):
one program per (batch element, block of channels) walks the sequence in tiles, composes the steps of a
tile with an associative scan, and carries the float32 state across tiles; the backward kernel recomputes
each tile's states from the state stored at its start and runs the reverse-time recurrence of the state
gradient.

On CPU tensors the kernels run only in Triton's interpreter (``TRITON_INTERPRET=1``): slow, meant for
tests on machines without a GPU.
"""

from __future__ import annotations

import functools
import os
import sys
from types import FrameType

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: Channels per program and steps per tile on a GPU (registers per thread grow with their product x d_state).
GPU_BLOCK_D = 4
GPU_TILE = 64
#: In the interpreter every program and every operation runs in Python one after another: fewer, larger
#: programs and tiles are faster there.
INTERPRETER_BLOCK_D = 1024
INTERPRETER_TILE = 256
#: Shortest tile (short sequences get a tile of their length, rounded up to a power of two).
MIN_TILE = 16
_MAX_BLOCK_ELEMENTS = 1 << 20

_launches = [0]
#: Fill outputs and gradients with NaN before the kernels write them (``benchmarks/gpu_check.py`` sets
#: it, so that an element a kernel fails to write shows up as a mismatch instead of stale memory).
FILL_WITH_NAN = False


def launch_count() -> int:
    """Number of Triton kernel launches of this process so far (forward and backward)."""
    return _launches[0]


class KernelOps(TorchDispatchMode):
    """Counts the aten operators that launch a kernel (all but views and allocations) while active,
    leaving out those Triton's interpreter issues to emulate a launch; Triton launches themselves are
    counted by :func:`launch_count`. Used by the launch-count test and ``benchmarks/gpu_check.py``."""

    SKIP = {"empty", "empty_strided", "new_empty", "detach", "alias", "lift_fresh"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket.__name__ not in self.SKIP and not _inside_interpreter():
            self.count += 1
        return func(*args, **(kwargs or {}))


def _inside_interpreter() -> bool:
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        if "/triton/runtime/interpreter" in frame.f_code.co_filename.replace("\\", "/"):
            return True
        frame = frame.f_back
    return False


def _new(*shape, device):
    if FILL_WITH_NAN:
        return torch.full(shape, float("nan"), device=device, dtype=torch.float32)
    return torch.empty(*shape, device=device, dtype=torch.float32)


def interpreter_enabled() -> bool:
    """True when Triton runs (or, not yet imported, will run) in its interpreter.

    Triton decides when it is first imported: ``TRITON_INTERPRET=1`` must be set before that (its own
    library functions, e.g. ``tl.sigmoid``, are compiled or interpreted from then on).
    """
    standard = sys.modules.get("triton.language.standard")
    if standard is None:
        return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(getattr(standard, "sigmoid", None), InterpretedFunction)


#: Combine functions of the interpreted kernels that compose affine maps h -> a h + b (``compose``).
_AFFINE_COMBINES: set = set()


def _scan_by_slices(self, inputs):
    """Scan of Triton's interpreter, one call per step on whole slices.

    The interpreter runs a scan with a user combine function one element at a time in Python (a combine
    call per element: minutes for one small scan). This runs the same combine function in the same
    left-to-right order on whole slices across the scanned axis; for the kernels' composition of affine
    maps (:data:`_AFFINE_COMBINES`) it applies that composition with numpy directly, which gives the
    same numbers (``Testing/test_scan_triton.py`` checks both against each other).
    """
    import numpy as np

    data = [np.moveaxis(arg.handle.data, self.axis, 0) for arg in inputs]
    outs = [np.empty_like(x) for x in data]
    acc = [x[0] for x in data]
    for j, a in enumerate(acc):
        outs[j][0] = a
    affine = self.combine_fn.fn in _AFFINE_COMBINES and len(inputs) == 2
    for i in range(1, data[0].shape[0]):
        if affine:  # (a_l, b_l) then (a_r, b_r) -> (a_l a_r, a_r b_l + b_r), as compose
            a_r, b_r = data[0][i], data[1][i]
            acc = [acc[0] * a_r, a_r * acc[1] + b_r]
        else:
            left = [self.to_tensor(np.ascontiguousarray(a), arg.dtype) for a, arg in zip(acc, inputs)]
            right = [self.to_tensor(np.ascontiguousarray(x[i]), arg.dtype) for x, arg in zip(data, inputs)]
            ret = self.combine_fn.fn(*left, *right)
            acc = [r.handle.data for r in (ret if isinstance(ret, tuple) else (ret,))]
        for j, a in enumerate(acc):
            outs[j][i] = a
    return [
        self.to_tensor(np.ascontiguousarray(np.moveaxis(o, 0, self.axis)), arg.dtype) for o, arg in zip(outs, inputs)
    ]


def _speed_up_interpreter() -> None:
    try:
        from triton.runtime import interpreter
    except ImportError:  # a Triton without an interpreter module: nothing to speed up
        return
    scan_ops = getattr(interpreter, "ScanOps", None)
    if scan_ops is not None and hasattr(scan_ops, "generic_scan"):
        scan_ops.generic_scan = _scan_by_slices


@functools.lru_cache(maxsize=1)
def kernels():
    """The module of Triton kernels (:mod:`.triton_kernels`), compiled or interpreted as Triton runs.

    Raises:
        ImportError: when Triton is not installed.
    """
    from . import triton_kernels

    if interpreter_enabled():
        _speed_up_interpreter()
        _AFFINE_COMBINES.add(triton_kernels.compose.fn)
    return triton_kernels


def check_device(device: torch.device) -> None:
    """Raise ``ValueError`` when the Triton kernels cannot run on ``device``.

    CUDA runs them compiled; the CPU runs them only in Triton's interpreter (``TRITON_INTERPRET=1``).
    """
    if device.type == "cuda" or (device.type == "cpu" and interpreter_enabled()):
        return
    if device.type == "cpu":
        raise ValueError(
            "the triton scan runs on CPU tensors only in Triton's interpreter: set "
            "TRITON_INTERPRET=1 before starting Python, before Triton is imported (slow, for "
            "tests), or use backend 'cpu-fused' or 'torch' on the CPU"
        )
    raise ValueError(f"the triton scan needs CUDA tensors, got {device.type}; use backend 'auto' or 'torch'")


_LOW_PRECISION = (torch.float32, torch.bfloat16, torch.float16)


def _pow2_at_least(x: int) -> int:
    return 1 << max(0, x - 1).bit_length()


def _block_sizes(channels: int, length: int, n_state: int, block_d: int | None, tile: int | None) -> tuple[int, int]:
    interpret = interpreter_enabled()
    if block_d is None:
        block_d = min(INTERPRETER_BLOCK_D if interpret else GPU_BLOCK_D, _pow2_at_least(channels))
    if tile is None:
        tile = min(INTERPRETER_TILE if interpret else GPU_TILE, max(MIN_TILE, _pow2_at_least(length)))
        # Triton's limit on the elements of one block (block_d x d_state x tile)
        tile = max(1, min(tile, _MAX_BLOCK_ELEMENTS // (block_d * _pow2_at_least(n_state))))
    return block_d, tile


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B4, C4, D, z, delta_bias, delta_softplus, save_states, block_d, tile):
        batch, channels, length = u.shape
        groups, n_state = B4.shape[1], A.shape[1]
        block_n = _pow2_at_least(n_state)
        n_tiles = -(-length // tile)
        out = _new(batch, channels, length, device=u.device)
        states = _new(batch, channels, n_tiles, n_state, device=u.device) if save_states else out
        grid = (batch, -(-channels // block_d))
        dummy = A
        _launches[0] += 1
        kernels().scan_forward_kernel[grid](
            u,
            delta,
            A,
            B4,
            C4,
            D if D is not None else dummy,
            z if z is not None else dummy,
            delta_bias if delta_bias is not None else dummy,
            out,
            states,
            length,
            channels,
            channels // groups,
            n_state,
            HAS_D=D is not None,
            HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None,
            SOFTPLUS=delta_softplus,
            SAVE_STATES=save_states,
            BLOCK_D=block_d,
            BLOCK_N=block_n,
            T=tile,
        )
        if save_states:
            ctx.save_for_backward(u, delta, A, B4, C4, D, z, delta_bias, states)
        ctx.options = (delta_softplus, block_d, tile, block_n)
        return out

    @staticmethod
    def backward(ctx, gout):
        u, delta, A, B4, C4, D, z, delta_bias, states = ctx.saved_tensors
        delta_softplus, block_d, tile, block_n = ctx.options
        batch, channels, length = u.shape
        groups, n_state = B4.shape[1], A.shape[1]
        dg = channels // groups
        gout = gout.contiguous().float()
        dev = u.device
        g_u = _new(batch, channels, length, device=dev)
        g_delta = _new(batch, channels, length, device=dev)
        g_z = _new(batch, channels, length, device=dev) if z is not None else g_u
        g_B = torch.zeros(B4.shape, device=dev, dtype=torch.float32)  # accumulated with atomic adds
        g_C = torch.zeros(C4.shape, device=dev, dtype=torch.float32)
        g_A = _new(batch, channels, n_state, device=dev)
        g_D = _new(batch, channels, device=dev) if D is not None else g_A
        grid = (batch, -(-channels // block_d))
        dummy = A
        _launches[0] += 1
        kernels().scan_backward_kernel[grid](
            u,
            delta,
            A,
            B4,
            C4,
            D if D is not None else dummy,
            z if z is not None else dummy,
            delta_bias if delta_bias is not None else dummy,
            states,
            gout,
            g_u,
            g_delta,
            g_z,
            g_B,
            g_C,
            g_A,
            g_D,
            length,
            channels,
            dg,
            n_state,
            HAS_D=D is not None,
            HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None,
            SOFTPLUS=delta_softplus,
            ONE_GROUP_PER_BLOCK=dg % block_d == 0,
            BLOCK_D=block_d,
            BLOCK_N=block_n,
            T=tile,
        )
        grads = [
            g_u.to(u.dtype),
            g_delta.to(delta.dtype),
            g_A.sum(0),
            g_B.to(B4.dtype),
            g_C.to(C4.dtype),
            g_D.sum(0) if D is not None else None,
            g_z.to(z.dtype) if z is not None else None,
            g_delta.sum(dim=(0, 2)) if delta_bias is not None else None,
        ]
        return (*grads, None, None, None, None)


def selective_scan_triton(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, block_d=None, tile=None
):
    """Triton selective scan (differentiable). Legend and recurrence: :mod:`.reference`; design: docs/SCAN.md.

    Args:
        u: (batch, channels, L) input; float32, bfloat16 or float16 (read as float32).
        delta: (batch, channels, L) step size before ``delta_bias`` / softplus; like ``u``.
        A: (channels, d_state) state matrix, negative real.
        B: (batch, d_state, L) or (batch, groups, d_state, L) input projection; like ``u``.
        C: like ``B``, output projection.
        D: optional (channels,) skip connection.
        z: optional (batch, channels, L) gate; the output is multiplied by SiLU(z).
        delta_bias: optional (channels,) added to delta.
        delta_softplus: apply softplus to delta + delta_bias.
        block_d, tile: channels per program and steps per tile (powers of two; by default
            :data:`GPU_BLOCK_D` and :data:`GPU_TILE` compiled, larger in the interpreter).

    Returns:
        (batch, channels, L) float32. The state and all arithmetic are float32; gradients come back in
        the dtype of each input.

    Raises:
        ValueError: for tensors on a device the kernels cannot run on (:func:`check_device`), for float64
            input (use the torch backend), or for block sizes that are not powers of two.
        ImportError: when Triton is not installed.
    """
    check_device(u.device)
    for name, t in (("u", u), ("delta", delta), ("B", B), ("C", C), ("z", z)):
        if t is not None and t.dtype not in _LOW_PRECISION:
            raise ValueError(
                f"the triton scan takes float32, bfloat16 or float16 tensors; {name} is {t.dtype} "
                "(float64 runs on the 'torch' backend)"
            )
    block_d, tile = _block_sizes(u.shape[1], u.shape[2], A.shape[1], block_d, tile)
    for name, v in (("block_d", block_d), ("tile", tile)):
        if v < 1 or v & (v - 1):
            raise ValueError(f"{name} must be a power of two, got {v}")
    B4 = B.unsqueeze(1) if B.dim() == 3 else B
    C4 = C.unsqueeze(1) if C.dim() == 3 else C
    tensors = [u, delta, A, B4, C4, D, z, delta_bias]
    save_states = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    small = [None if t is None else t.float().contiguous() for t in (A, D, delta_bias)]
    out = _SelectiveScanTriton.apply(
        u.contiguous(),
        delta.contiguous(),
        small[0],
        B4.contiguous(),
        C4.contiguous(),
        small[1],
        None if z is None else z.contiguous(),
        small[2],
        bool(delta_softplus),
        save_states,
        block_d,
        tile,
    )
    return out


__all__ = ["selective_scan_triton", "interpreter_enabled", "check_device", "kernels", "launch_count", "KernelOps"]
