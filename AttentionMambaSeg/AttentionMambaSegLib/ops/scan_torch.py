"""Blocked selective scan in pure PyTorch with a hand-written, state-recomputing backward.

The inputs are first copied time-major ((L, batch, channels)), so that a chunk of steps is one
contiguous block (slicing a few steps out of each long (batch, channels, L) row costs a TLB miss per
row: measured here 3.2 s vs 1.7 s forward at (8, 768, 3,136)). The sequence is cut into chunks of T
steps; within a chunk the decays exp(dt * A) and inputs dt * B * u are computed for all T steps at
once, then the recurrence h_t = a_t * h_{t-1} + b_t is solved in one of two ways:

- CPUs: T is chosen so that one (T, batch, channels, d_state) float32 buffer is about 2 MB (it stays in
  the L2 caches; 1, 2, 4 and 8 MB measured 1.00 / 0.76 / 0.71 / 0.78 s forward and 0.53 / 0.50 / 0.57 /
  0.67 s forward + backward at the benchmark shapes on 2 cores), and the recurrence is one in-place
  ``addcmul_`` per step.
- GPUs (CUDA without a faster backend, Apple MPS, AMD): one operation per step would be one kernel
  launch per step (about 57,000 launches per 224 x 224 slice). There chunks are as long as a 128 MB
  buffer allows and the recurrence is solved by doubling (:func:`_linear_scan_`, Hillis & Steele): about
  four operations per doubling, log2(T) doublings per chunk (docs/SCAN.md gives the launch counts).

Both only form products of decays <= 1 and sums, so they cannot overflow (unlike the log-space cumsum
form, see ``docs/SCAN.md``), and both are exact to rounding (the float64 tests hold for both).

Forward saves only the inputs and the state at the start of each chunk ((L / T) x batch x channels
x d_state); backward walks the chunks in reverse, recomputes their states, and runs the reverse-time
recurrence of the state gradient (step by step, or by doubling on GPUs), as mamba-ssm's CUDA kernel does.

Shapes and meaning are those of :func:`AttentionMambaSegLib.ops.reference.selective_scan_reference`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CHUNK_BYTES = 2 * 1024 * 1024
#: Chunk buffer size on GPUs: one chunk is a few tensor operations per doubling step (``_linear_scan_``),
#: so longer chunks mean fewer kernel launches; six buffers of this size are alive in the backward pass.
_CHUNK_BYTES_GPU = 128 * 1024 * 1024


#: Use the doubling scan on CPUs too (tests set it to check that path on the CPU; on a CPU the step loop
#: over cache-sized chunks is faster: 2.2 s vs 4.0 s forward + backward at (8, 192, 3,136), docs/SCAN.md).
DOUBLING_ON_CPU = False


def _doubling(device_type: str) -> bool:
    """Whether chunks are scanned by doubling steps (GPUs: few launches) or step by step (CPUs)."""
    return device_type != "cpu" or DOUBLING_ON_CPU


def _chunk_length(batch: int, channels: int, d_state: int, element_size: int, device_type: str = "cpu") -> int:
    per_step = batch * channels * d_state * element_size
    budget = _CHUNK_BYTES_GPU if _doubling(device_type) else _CHUNK_BYTES
    return max(1, budget // max(per_step, 1))


def _linear_scan_(x, c, tmp, reverse=False):
    """Solve a first-order linear recurrence along dim 0 in place, in ceil(log2 T) doubling steps.

    Forward: x_t <- x_t + c_t x_{t-1} for t = 1..T-1 (c_0 unused). Reverse: x_t <- x_t + c_t x_{t+1}
    for t = T-2..0 (c_{T-1} unused). After the step with offset s, x_t holds the recurrence over the
    s (then 2s) nearest terms and c_t the product of as many coefficients (Hillis & Steele's prefix
    scan): about four tensor operations per doubling instead of one per time step, and only products
    of coefficients (decays <= 1) and sums, so it cannot overflow. ``c`` is overwritten; ``tmp`` is a
    buffer like ``x``.
    """
    T = x.shape[0]
    s = 1
    while s < T:
        dst, src = (slice(0, T - s), slice(s, T)) if reverse else (slice(s, T), slice(0, T - s))
        x[dst].add_(torch.mul(c[dst], x[src], out=tmp[: T - s]))
        if 2 * s < T:
            c[dst].copy_(torch.mul(c[dst], c[src], out=tmp[: T - s]))
        s *= 2
    return x


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
        batch, channels, length, groups, B4, C4, _, dt = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        d_state = A.shape[1]
        dg = channels // groups
        T = _chunk_length(batch, channels, d_state, u.element_size(), u.device.type)
        n_chunks = (length + T - 1) // T
        A5 = A.view(groups, dg, d_state)
        uT, dtT, BT, CT = _time_major(u, dt, B4, C4, groups)
        starts = u.new_empty(n_chunks, batch, groups, dg, d_state)
        yT = u.new_empty(length, batch, groups, dg)
        h = u.new_zeros(batch, groups, dg, d_state)
        bufs = _buffers(min(T, length), batch, groups, dg, d_state, u, 4)
        for k in range(n_chunks):
            t0, t1 = k * T, min(length, (k + 1) * T)
            starts[k] = h
            dA, H = _chunk_states(uT, dtT, A5, BT, t0, t1, h, bufs)
            torch.matmul(H, CT[t0:t1].unsqueeze(-1), out=yT[t0:t1].unsqueeze(-1))
            h = H[-1].clone()
        if D is not None:
            yT.addcmul_(uT, D.view(groups, dg))
        y = yT.view(length, batch, channels).permute(1, 2, 0).contiguous()
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
        d_state = A.shape[1]
        dg = channels // groups
        n_chunks = starts.shape[0]
        T = _chunk_length(batch, channels, d_state, u.element_size(), u.device.type)
        A5 = A.view(groups, dg, d_state)
        uT, dtT, BT, CT = _time_major(u, dt, B4, C4, groups)

        # Gradient with respect to y (before gating) and z.
        gy = gout * F.silu(z) if z is not None else gout  # d out / d y = SiLU(z)
        gyT = gy.permute(2, 0, 1).contiguous().view(length, batch, groups, dg)

        g_uT = torch.empty_like(uT)
        g_dtT = torch.empty_like(uT)
        g_A = torch.zeros_like(A5)
        g_BT = torch.empty_like(BT)
        g_CT = torch.empty_like(CT)
        y_preT = u.new_empty(length, batch, groups, dg) if z is not None else None
        carry = u.new_zeros(batch, groups, dg, d_state)  # dA_{t1} * gh_{t1}, flowing into h_{t1-1}
        bufs = _buffers(min(T, length), batch, groups, dg, d_state, u, 4)
        G_buf, Hp_buf = _buffers(min(T, length), batch, groups, dg, d_state, u, 2)
        for k in reversed(range(n_chunks)):
            t0, t1 = k * T, min(length, (k + 1) * T)
            h0 = starts[k]
            dA, H = _chunk_states(uT, dtT, A5, BT, t0, t1, h0, bufs)
            Ct = CT[t0:t1].unsqueeze(3)  # (T, b, g, 1, n)
            Bt = BT[t0:t1].unsqueeze(3)
            gy_t = gyT[t0:t1]  # (T, b, g, dg)
            if y_preT is not None:
                torch.matmul(H, CT[t0:t1].unsqueeze(-1), out=y_preT[t0:t1].unsqueeze(-1))
            # Reverse-time recurrence of the state gradient, in place: G_t += dA_{t+1} * G_{t+1}.
            G = torch.mul(gy_t.unsqueeze(-1), Ct, out=G_buf[: t1 - t0])
            G[-1] += carry
            if _doubling(u.device.type):
                coef, tmp = bufs[2][: t1 - t0], bufs[3][: t1 - t0]
                coef[:-1] = dA[1:]
                _linear_scan_(G, coef, tmp, reverse=True)
            else:
                for t in range(t1 - t0 - 2, -1, -1):
                    G[t].addcmul_(dA[t + 1], G[t + 1])
            carry = dA[0] * G[0]
            # g_C[t] = sum over d of H[t] * gy[t]: (T, b, g, n, dg) @ (T, b, g, dg, 1)
            torch.matmul(H.transpose(-1, -2), gy_t.unsqueeze(-1), out=g_CT[t0:t1].unsqueeze(-1))
            # gradient with respect to (dt * A) at each step: G_t * h_{t-1} * dA_t (in a reused buffer)
            H_prev = Hp_buf[: t1 - t0]
            H_prev[0] = h0
            H_prev[1:] = H[:-1]
            gdA = H_prev.mul_(G).mul_(dA)
            dt_t = dtT[t0:t1]
            u_t = uT[t0:t1]
            g_A += torch.einsum("tbgdn,tbgd->gdn", gdA, dt_t)
            GB = torch.matmul(G, Bt.transpose(-1, -2)).squeeze(-1)  # (T, b, g, dg)
            torch.mul(GB, dt_t, out=g_uT[t0:t1])
            torch.sum(gdA.mul_(A5), dim=-1, out=g_dtT[t0:t1])  # gdA is not needed after this
            g_dtT[t0:t1].addcmul_(GB, u_t)
            # g_B[t] = sum over d of G[t] * dt[t] * u[t]
            torch.matmul(G.transpose(-1, -2), (dt_t * u_t).unsqueeze(-1), out=g_BT[t0:t1].unsqueeze(-1))

        g_u, g_delta, g_D, g_z, g_bias = _pointwise_gradients(
            gout, gy, u, z, D, y_preT, g_uT, g_dtT, dt_raw, delta_bias, ctx.delta_softplus
        )
        g_B, g_C = _bc_gradient(g_BT, ctx.b_was_3d), _bc_gradient(g_CT, ctx.c_was_3d)
        return g_u, g_delta, g_A.view_as(A), g_B, g_C, g_D, g_z, g_bias, None


def _pointwise_gradients(gout, gy, u, z, D, y_preT, g_uT, g_dtT, dt_raw, delta_bias, delta_softplus):
    """Gradients of u, delta, D, z and delta_bias, from the scan's time-major (L, b, g, dg) gradients of u and
    dt, ``gy`` (the output gradient before gating) and ``y_preT`` (the time-major output before D and the
    gate; None without ``z``). Returns ``(g_u, g_delta, g_D, g_z, g_bias)`` (None for absent inputs)."""
    batch, channels, length = u.shape
    g_u = g_uT.view(length, batch, channels).permute(1, 2, 0)
    g_dt = g_dtT.view(length, batch, channels).permute(1, 2, 0)
    g_D = g_z = g_bias = None
    if D is not None:
        g_u = g_u + gy * D[None, :, None]
        g_D = (gy * u).sum(dim=(0, 2))
    g_u = g_u.contiguous()
    if z is not None:
        y_full = y_preT.view(length, batch, channels).permute(1, 2, 0)
        if D is not None:
            y_full = y_full + u * D[None, :, None]
        sz = torch.sigmoid(z)
        g_z = gout * y_full * sz * (1 + z * (1 - sz))
    g_delta = g_dt * torch.sigmoid(dt_raw) if delta_softplus else g_dt.contiguous()
    if delta_bias is not None:
        g_bias = g_delta.sum(dim=(0, 2))
    return g_u, g_delta, g_D, g_z, g_bias


def _bc_gradient(g_T, was_3d: bool):
    """The gradient of B or C in the caller's layout from its time-major (L, b, g, n) form."""
    g = g_T.permute(1, 2, 3, 0)
    return g.squeeze(1).contiguous() if was_3d else g.contiguous()


def _time_major(u, dt, B4, C4, groups):
    """Time-major copies, so that a chunk of steps is one contiguous block (strided slices of long
    rows cost a TLB miss per row): u, dt -> (L, b, g, dg); B, C -> (L, b, g, n)."""
    batch, channels, length = u.shape
    uT = u.permute(2, 0, 1).contiguous().view(length, batch, groups, channels // groups)
    dtT = dt.permute(2, 0, 1).contiguous().view(length, batch, groups, channels // groups)
    return uT, dtT, B4.permute(3, 0, 1, 2).contiguous(), C4.permute(3, 0, 1, 2).contiguous()


def _chunk_states(uT, dtT, A5, BT, t0, t1, h0, bufs):
    """States of one chunk. Returns dA and H, both (T, b, g, dg, n); H[t] is the state after step t.

    ``bufs`` = four buffers of at least T steps (:func:`_buffers`: dA, H and two scratch buffers for
    :func:`_linear_scan_`), reused across chunks: fresh multi-MB temporaries cost page faults on every
    chunk. The results are views into them.
    """
    dt_t = dtT[t0:t1].unsqueeze(-1)  # (T, b, g, dg, 1)
    u_t = uT[t0:t1].unsqueeze(-1)
    Bt = BT[t0:t1].unsqueeze(3)  # (T, b, g, 1, n)
    dA, H, coef, tmp = (b[: t1 - t0] for b in bufs)
    torch.mul(dt_t, A5, out=dA).exp_()
    torch.mul(dt_t * u_t, Bt, out=H)
    H[0].addcmul_(dA[0], h0)
    if _doubling(H.device.type):
        coef.copy_(dA)
        _linear_scan_(H, coef, tmp)
    else:
        for t in range(1, t1 - t0):
            H[t].addcmul_(dA[t], H[t - 1])
    return dA, H


def _buffers(T, batch, groups, dg, d_state, like, count):
    return tuple(like.new_empty(T, batch, groups, dg, d_state) for _ in range(count))


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Blocked pure-PyTorch selective scan (differentiable). See :mod:`.reference` for the legend.

    Computes in the dtype of ``u`` (float32 or float64); returns (batch, channels, L) like ``u``.
    """
    return _SelectiveScanTorch.apply(
        u.contiguous(),
        delta.contiguous(),
        A.contiguous(),
        B.contiguous(),
        C.contiguous(),
        None if D is None else D.contiguous(),
        None if z is None else z.contiguous(),
        None if delta_bias is None else delta_bias.contiguous(),
        delta_softplus,
    )
