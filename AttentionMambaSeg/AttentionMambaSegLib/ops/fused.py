"""Autograd wrapper around the numba kernels of :mod:`.scan_numba` ("cpu-fused" backend).

The kernels compute the state-space part y = <C_t, h_t>; delta_bias + softplus, the D skip and the z
gate are vectorised torch operations around them, differentiated by autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import scan_numba


class _ScanCore(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, dt, A, B4, C4):
        Bt = B4.transpose(-1, -2).contiguous()  # (b, g, L, n): the kernel reads d_state contiguously
        Ct = C4.transpose(-1, -2).contiguous()
        u, dt, A = u.contiguous(), dt.contiguous(), A.contiguous()
        y = torch.empty_like(u)
        scan_numba.kernels(A.shape[1])[0](u.numpy(), dt.numpy(), A.numpy(), Bt.numpy(), Ct.numpy(), y.numpy())
        ctx.save_for_backward(u, dt, A, Bt, Ct)
        return y

    @staticmethod
    def backward(ctx, gy):
        u, dt, A, Bt, Ct = ctx.saved_tensors
        gy = gy.contiguous()
        g_u, g_dt = torch.empty_like(u), torch.empty_like(dt)
        g_A = torch.empty(u.shape[0], *A.shape, dtype=A.dtype)
        g_Bt, g_Ct = torch.zeros_like(Bt), torch.zeros_like(Ct)
        scan_numba.kernels(A.shape[1])[1](
            u.numpy(),
            dt.numpy(),
            A.numpy(),
            Bt.numpy(),
            Ct.numpy(),
            gy.numpy(),
            g_u.numpy(),
            g_dt.numpy(),
            g_A.numpy(),
            g_Bt.numpy(),
            g_Ct.numpy(),
        )
        return g_u, g_dt, g_A.sum(0), g_Bt.transpose(-1, -2), g_Ct.transpose(-1, -2)


def selective_scan_cpu_fused(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Fused CPU selective scan: float32, differentiable. Shapes and meaning: :mod:`.reference`.

    Raises:
        ValueError: for tensors that are not on the CPU.
    """
    if u.device.type != "cpu":
        raise ValueError(f"the cpu-fused scan needs CPU tensors, got {u.device}; use backend 'auto' or 'torch'")
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    dt = delta if delta_bias is None else delta + delta_bias.float()[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt)
    B4 = B.unsqueeze(1) if B.dim() == 3 else B
    C4 = C.unsqueeze(1) if C.dim() == 3 else C
    y = _ScanCore.apply(u, dt, A, B4, C4)
    if D is not None:
        y = torch.addcmul(y, u, D.float()[None, :, None])
    if z is not None:
        y = y * F.silu(z.float())
    return y
