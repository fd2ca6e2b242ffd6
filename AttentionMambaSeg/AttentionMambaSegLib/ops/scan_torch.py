"""Blocked selective scan in pure PyTorch with a hand-written, state-recomputing backward.

The sequence is cut into chunks of T steps, T chosen so that one (T, batch, channels, d_state)
float32 buffer is about 8 MB (it stays in cache). Within a chunk the decays exp(dt * A) and inputs
dt * B * u are computed for all T steps at once, and the recurrence h_t = a_t * h_{t-1} + b_t is one
in-place ``addcmul_`` per step. Only products of decays <= 1 and sums are formed, so it cannot
overflow (unlike the log-space cumsum form, see ``shared/design/selective-scan.md``).

Forward saves only the inputs and the state at the start of each chunk ((L / T) x batch x channels
x d_state); backward walks the chunks in reverse, recomputes their states, and runs the reverse-time
recurrence of the state gradient, as mamba-ssm's CUDA kernel does.

Shapes and meaning are those of :func:`AttentionMambaSegLib.ops.reference.selective_scan_reference`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CHUNK_BYTES = 8 * 1024 * 1024


def _chunk_length(batch: int, channels: int, d_state: int, element_size: int) -> int:
    per_step = batch * channels * d_state * element_size
    return max(1, _CHUNK_BYTES // max(per_step, 1))


def _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Common checks and layouts: returns the grouped 4-D/5-D views used by both passes."""
    batch, channels, length = u.shape
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    groups = B.shape[1]
    dt_raw = delta if delta_bias is None else delta + delta_bias[None, :, None]
    dt = F.softplus(dt_raw) if delta_softplus else dt_raw
    return batch, channels, length, groups, B, C, dt_raw, dt


class _SelectiveScanTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        batch, channels, length, groups, B4, C4, _, dt = _prepare(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus
        )
        d_state = A.shape[1]
        dg = channels // groups
        T = _chunk_length(batch, channels, d_state, u.element_size())
        n_chunks = (length + T - 1) // T
        A5 = A.view(groups, dg, d_state)
        u4 = u.view(batch, groups, dg, length)
        dt4 = dt.view(batch, groups, dg, length)
        starts = u.new_empty(n_chunks, batch, groups, dg, d_state)
        y = u.new_empty(batch, groups, dg, length)
        h = u.new_zeros(batch, groups, dg, d_state)
        for k in range(n_chunks):
            t0, t1 = k * T, min(length, (k + 1) * T)
            starts[k] = h
            dA, H = _chunk_states(u4, dt4, A5, B4, t0, t1, h)
            y[..., t0:t1] = torch.einsum("tbgdn,bgnt->bgdt", H, C4[..., t0:t1])
            h = H[-1]
        y = y.view(batch, channels, length)
        if D is not None:
            y = y + u * D[None, :, None]
        out = y * F.silu(z) if z is not None else y
        ctx.delta_softplus = delta_softplus
        ctx.b_was_3d = B.dim() == 3
        ctx.c_was_3d = C.dim() == 3
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, starts)
        return out

    @staticmethod
    def backward(ctx, gout):
        u, delta, A, B, C, D, z, delta_bias, starts = ctx.saved_tensors
        batch, channels, length, groups, B4, C4, dt_raw, dt = _prepare(
            u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus
        )
        gout = gout.contiguous()
        d_state = A.shape[1]
        dg = channels // groups
        n_chunks = starts.shape[0]
        T = _chunk_length(batch, channels, d_state, u.element_size())
        A5 = A.view(groups, dg, d_state)
        u4 = u.view(batch, groups, dg, length)
        dt4 = dt.view(batch, groups, dg, length)

        # Gradient with respect to y (before gating) and z.
        gy = gout * F.silu(z) if z is not None else gout  # d out / d y = SiLU(z)
        gy4 = gy.reshape(batch, groups, dg, length)

        g_u = torch.empty_like(u4)
        g_dt = torch.empty_like(u4)
        g_A = torch.zeros_like(A5)
        g_B = torch.empty_like(B4)
        g_C = torch.empty_like(C4)
        y_pre = u.new_empty(batch, groups, dg, length) if z is not None else None
        carry = u.new_zeros(batch, groups, dg, d_state)  # dA_{t1} * gh_{t1}, flowing into h_{t1-1}
        for k in reversed(range(n_chunks)):
            t0, t1 = k * T, min(length, (k + 1) * T)
            h0 = starts[k]
            dA, H = _chunk_states(u4, dt4, A5, B4, t0, t1, h0)
            Ct = C4[..., t0:t1].permute(3, 0, 1, 2).unsqueeze(3)  # (T, b, g, 1, n)
            Bt = B4[..., t0:t1].permute(3, 0, 1, 2).unsqueeze(3)
            gy_t = gy4[..., t0:t1].permute(3, 0, 1, 2)  # (T, b, g, dg)
            if y_pre is not None:
                y_pre[..., t0:t1] = torch.einsum("tbgdn,tbgon->bgdt", H, Ct)
            # Reverse-time recurrence of the state gradient, in place: G_t += dA_{t+1} * G_{t+1}.
            G = gy_t.unsqueeze(-1) * Ct
            G[-1] += carry
            for t in range(t1 - t0 - 2, -1, -1):
                G[t].addcmul_(dA[t + 1], G[t + 1])
            carry = dA[0] * G[0]
            g_C[..., t0:t1] = torch.einsum("tbgdn,tbgd->bgnt", H, gy_t)
            # h_{t-1} for every step of the chunk
            H_prev = torch.cat([h0.unsqueeze(0), H[:-1]], dim=0)
            gdA = G * H_prev * dA  # gradient with respect to (dt * A) at each step
            dt_t = dt4[..., t0:t1].permute(3, 0, 1, 2)
            u_t = u4[..., t0:t1].permute(3, 0, 1, 2)
            g_A += torch.einsum("tbgdn,tbgd->gdn", gdA, dt_t)
            GB = (G * Bt).sum(-1)  # (T, b, g, dg)
            g_u[..., t0:t1] = (GB * dt_t).permute(1, 2, 3, 0)
            g_dt[..., t0:t1] = (GB * u_t + (gdA * A5).sum(-1)).permute(1, 2, 3, 0)
            g_B[..., t0:t1] = torch.einsum("tbgdn,tbgd->bgnt", G, dt_t * u_t)

        g_u = g_u.view(batch, channels, length)
        g_dt = g_dt.view(batch, channels, length)
        g_D = g_z = g_bias = None
        if D is not None:
            g_u = g_u + gy * D[None, :, None]
            g_D = (gy * u).sum(dim=(0, 2))
        if z is not None:
            y_full = y_pre.view(batch, channels, length)
            if D is not None:
                y_full = y_full + u * D[None, :, None]
            sz = torch.sigmoid(z)
            g_z = gout * y_full * sz * (1 + z * (1 - sz))
        g_delta = g_dt * torch.sigmoid(dt_raw) if ctx.delta_softplus else g_dt
        if delta_bias is not None:
            g_bias = g_delta.sum(dim=(0, 2))
        g_B = g_B.squeeze(1) if ctx.b_was_3d else g_B
        g_C = g_C.squeeze(1) if ctx.c_was_3d else g_C
        return g_u, g_delta, g_A.view_as(A), g_B, g_C, g_D, g_z, g_bias, None


def _chunk_states(u4, dt4, A5, B4, t0, t1, h0):
    """States of one chunk. Returns dA and H, both (T, b, g, dg, n); H[t] is the state after step t."""
    dt_t = dt4[..., t0:t1].permute(3, 0, 1, 2).unsqueeze(-1)  # (T, b, g, dg, 1)
    u_t = u4[..., t0:t1].permute(3, 0, 1, 2).unsqueeze(-1)
    Bt = B4[..., t0:t1].permute(3, 0, 1, 2).unsqueeze(3)  # (T, b, g, 1, n)
    dA = torch.exp(dt_t * A5)
    H = (dt_t * u_t) * Bt
    H[0].addcmul_(dA[0], h0)
    for t in range(1, t1 - t0):
        H[t].addcmul_(dA[t], H[t - 1])
    return dA, H


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Blocked pure-PyTorch selective scan (differentiable). See :mod:`.reference` for the legend.

    Computes in the dtype of ``u`` (float32 or float64); returns (batch, channels, L) like ``u``.
    """
    return _SelectiveScanTorch.apply(
        u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(),
        None if D is None else D.contiguous(), None if z is None else z.contiguous(),
        None if delta_bias is None else delta_bias.contiguous(), delta_softplus,
    )
