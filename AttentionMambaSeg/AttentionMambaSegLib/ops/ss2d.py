"""SS2D's four-direction selective scan as one operator (VMamba, Liu et al. 2024, Sec. 3.2).

``ss2d_scan`` takes the depthwise-conv output of SS2D and returns the sum of the four directional
scans (before SS2D's LayerNorm and z gate). Two implementations give the same numbers:

- the unfused path: re-ordered copies, the projections, :func:`selective_scan` (any backend: torch,
  cpu-fused or cuda), flips and transposes back, sum. Used on GPUs and as the reference.
- the fused CPU path (:mod:`.ss2d_numba`): no re-ordered copies; dt projection, softplus, the scans of
  all four directions and the D skip in one kernel; a hand-written backward.

Shapes: u (B, D, H, W) float32; x_proj_weight (K=4, R + 2N, D); dt_projs_weight (K, D, R);
dt_projs_bias (K, D); A_log (K * D, N); Ds (K * D,). Returns (B, D, H, W).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .dispatch import resolve_backend, selective_scan


@functools.lru_cache(maxsize=32)
def _scan_orders_numpy(H: int, W: int) -> np.ndarray:
    rows = np.arange(H * W, dtype=np.int32)
    cols = np.ascontiguousarray(rows.reshape(H, W).T).reshape(-1)
    return np.ascontiguousarray(np.stack([rows, cols, rows[::-1], cols[::-1]]))


def scan_orders(H: int, W: int) -> torch.Tensor:
    """(4, H*W) int32: the row-major position visited at each step of the four SS2D scan orders.

    A fresh tensor per call (over a cached array), so a table made under ``torch.inference_mode``
    never reaches a later autograd graph.
    """
    return torch.from_numpy(_scan_orders_numpy(H, W))


def ss2d_scan_unfused(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_log, Ds, backend="auto"):
    """Reference composition of SS2D's scan from :func:`selective_scan`. Shapes: module docstring."""
    B_, D, H, W = u.shape
    K, C2, _ = x_proj_weight.shape
    R = dt_projs_weight.shape[2]
    N = (C2 - R) // 2
    L = H * W
    rows = u.flatten(2)
    cols = u.transpose(2, 3).flatten(2)
    xs = torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)  # (B, K, D, L)
    x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, x_proj_weight)
    dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, dt_projs_weight)
    y = selective_scan(
        xs.reshape(B_, K * D, L),
        dts.reshape(B_, K * D, L),
        -torch.exp(A_log.float()),
        Bs.contiguous(),
        Cs.contiguous(),
        Ds.float(),
        z=None,
        delta_bias=dt_projs_bias.reshape(-1).float(),
        delta_softplus=True,
        backend=backend,
    ).view(B_, K, D, L)
    y_rows = y[:, 0] + y[:, 2].flip(-1)
    y_cols = (y[:, 1] + y[:, 3].flip(-1)).view(B_, D, W, H).transpose(2, 3).reshape(B_, D, L)
    return (y_rows + y_cols).view(B_, D, H, W)


class _FusedSS2D(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, x_dt, BC, W_dt, dt_bias, A, D_skip, order):
        from .ss2d_numba import ss2d_kernels

        n = A.shape[-1]
        y = torch.zeros_like(u)
        ss2d_kernels(n)[0](
            u.numpy(),
            x_dt.numpy(),
            BC.numpy(),
            W_dt.numpy(),
            dt_bias.numpy(),
            A.numpy(),
            D_skip.numpy(),
            order.numpy(),
            y.numpy(),
        )
        ctx.save_for_backward(u, x_dt, BC, W_dt, dt_bias, A, D_skip, order)
        return y

    @staticmethod
    def backward(ctx, gy):
        from .ss2d_numba import ss2d_kernels

        u, x_dt, BC, W_dt, dt_bias, A, D_skip, order = ctx.saved_tensors
        gy = gy.contiguous().float()
        B_, D, L = u.shape
        K = x_dt.shape[1]
        g_u = torch.empty(B_, K, D, L)
        g_v = torch.empty(B_, K, D, L)
        g_A = torch.empty(B_, *A.shape)
        g_BC = torch.zeros_like(BC)
        ss2d_kernels(A.shape[-1])[1](
            u.numpy(),
            x_dt.numpy(),
            BC.numpy(),
            W_dt.numpy(),
            dt_bias.numpy(),
            A.numpy(),
            order.numpy(),
            gy.numpy(),
            g_u.numpy(),
            g_v.numpy(),
            g_A.numpy(),
            g_BC.numpy(),
        )
        g_u = g_u.sum(1) + gy * D_skip.sum(0)[None, :, None]
        g_x_dt = torch.einsum("bkdl,kdr->bkrl", g_v, W_dt)
        g_W_dt = torch.einsum("bkdl,bkrl->kdr", g_v, x_dt)
        g_bias = g_v.sum(dim=(0, 3))
        g_D = (gy * u).sum(dim=(0, 2)).expand(K, D).contiguous()
        return g_u, g_x_dt, g_BC, g_W_dt, g_bias, g_A.sum(0), g_D, None


def ss2d_scan_fused(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_log, Ds):
    """Fused CPU path (numba). Shapes: module docstring. float32, differentiable."""
    B_, D, H, W = u.shape
    K, C2, _ = x_proj_weight.shape
    R = dt_projs_weight.shape[2]
    N = (C2 - R) // 2
    u_flat = u.float().reshape(B_, D, H * W).contiguous()
    x_dbl = torch.einsum("bdl,kcd->bkcl", u_flat, x_proj_weight.float())  # row-major positions
    x_dt = x_dbl[:, :, :R].contiguous()
    BC = x_dbl[:, :, R:].transpose(-1, -2).contiguous()  # (B, K, L, 2N)
    A = -torch.exp(A_log.float()).view(K, D, N)
    y = _FusedSS2D.apply(
        u_flat,
        x_dt,
        BC,
        dt_projs_weight.float().contiguous(),
        dt_projs_bias.float().contiguous(),
        A.contiguous(),
        Ds.float().view(K, D).contiguous(),
        scan_orders(H, W),
    )
    return y.view(B_, D, H, W)


def ss2d_scan(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_log, Ds, backend="auto"):
    """Sum of SS2D's four directional selective scans of ``u`` (B, D, H, W) -> (B, D, H, W).

    Uses the fused CPU kernel when ``backend`` resolves to "cpu-fused" for ``u``'s device, else the
    unfused composition over :func:`selective_scan` with that backend.
    """
    if resolve_backend(u.device, backend) == "cpu-fused" and u.dtype != torch.float64:
        with torch.autocast(u.device.type, enabled=False):  # float32 scan under bf16 autocast
            return ss2d_scan_fused(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_log, Ds)
    return ss2d_scan_unfused(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_log, Ds, backend)
