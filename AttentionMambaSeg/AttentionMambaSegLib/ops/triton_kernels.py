"""Triton kernels of the selective scan: forward and backward (the "triton" backend, :mod:`.scan_triton`).

This module imports Triton at the top: load it through :func:`.scan_triton.kernels`. The kernels are
compiled for the GPU, or run in Triton's interpreter (CPU tensors, tests) when ``TRITON_INTERPRET=1`` was
set before Triton was first imported.

Work split: one program per (batch element, block of ``BLOCK_D`` channels). It walks the sequence in
tiles of ``T`` steps. Within a tile every step is an affine map of the state, h -> a_t h + b_t with
a_t = exp(dt_t A) <= 1 and b_t = dt_t B_t u_t; ``tl.associative_scan`` composes these maps over the
tile (only products of decays <= 1 and sums are formed, so nothing can overflow; docs/SCAN.md), and the
state at the end of a tile is carried into the next one in registers.

Backward (the reverse-time recurrence of mamba-ssm's CUDA kernel): the forward pass stores the state
at the start of every tile; the backward program visits the tiles in reverse, recomputes their states
from that start, and runs the state-gradient recurrence G_t = C_t gy_t + exp(dt_{t+1} A) G_{t+1} as a
reverse associative scan, carrying G across tiles. The gradients of B and C, shared by the channels of
a group, are accumulated with atomic adds.

Layouts (contiguous): u, delta, z, out, gradients (b, d, L); A (d, n) float32; B, C (b, g, n, L);
D, delta_bias (d,) float32; states (b, d, n_tiles, n) float32. u, delta, z, B and C may be float32,
bfloat16 or float16: they are read as float32, and all arithmetic and the state are float32.
Legend of the symbols: :mod:`.reference`.
"""

import triton
import triton.language as tl


@triton.jit
def compose(a_left, b_left, a_right, b_right):
    # (h -> a_left h + b_left) followed by (h -> a_right h + b_right)
    return a_left * a_right, a_right * b_left + b_right


@triton.jit
def _softplus(x):
    # softplus(x) = max(x, 0) + log1p(exp(-|x|)); log1p(y) = log(w) * y / (w - 1) with w = 1 + y keeps
    # full relative precision for small y (Goldberg's trick) using only log
    y = tl.exp(-tl.abs(x))
    w = 1.0 + y
    log1p = tl.where(w == 1.0, y, tl.log(w) * (y / (w - 1.0)))
    return tl.maximum(x, 0.0) + log1p


@triton.jit
def _dt(delta_ptrs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(raw, dt) of a [BLOCK_D, T] tile: raw = delta + bias, dt = softplus(raw) or raw; 0 where masked."""
    raw = tl.load(delta_ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    if SOFTPLUS:
        dt = _softplus(raw)
    else:
        dt = raw
    return raw, tl.where(mask, dt, 0.0)


@triton.jit
def scan_forward_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    out_ptr,
    states_ptr,
    length,
    channels,
    channels_per_group,
    n_state,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    SAVE_STATES: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    T: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    n_groups = channels // channels_per_group
    n_tiles = tl.cdiv(length, T)

    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = d < channels
    grp = tl.where(d_mask, d, 0) // channels_per_group
    n = tl.arange(0, BLOCK_N)
    n_mask = n < n_state
    dn_mask = d_mask[:, None] & n_mask[None, :]
    A = tl.load(A_ptr + d[:, None] * n_state + n[None, :], mask=dn_mask, other=0.0)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=d_mask, other=0.0)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=d_mask, other=0.0)
    else:
        bias = tl.zeros([BLOCK_D], dtype=tl.float32)

    row = pid_b * channels * length + d[:, None] * length  # [BLOCK_D, 1] offsets of (b, d, 0)
    bc_row = (pid_b * n_groups + grp)[:, None, None] * n_state * length + n[None, :, None] * length
    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for k in range(0, n_tiles):
        t = k * T + tl.arange(0, T)
        t_mask = t < length
        m2 = d_mask[:, None] & t_mask[None, :]
        m3 = dn_mask[:, :, None] & t_mask[None, None, :]
        u = tl.load(u_ptr + row + t[None, :], mask=m2, other=0.0).to(tl.float32)
        _, dt = _dt(delta_ptr + row + t[None, :], m2, bias, HAS_BIAS, SOFTPLUS)
        Bt = tl.load(B_ptr + bc_row + t[None, None, :], mask=m3, other=0.0).to(tl.float32)
        decay = tl.exp(dt[:, None, :] * A[:, :, None])  # <= 1; exactly 1 on masked steps (dt = 0)
        drive = (dt * u)[:, None, :] * Bt
        a_cum, b_cum = tl.associative_scan((decay, drive), 2, compose)
        H = a_cum * h[:, :, None] + b_cum  # state after each step of the tile
        if SAVE_STATES:
            s_ptrs = states_ptr + ((pid_b * channels + d[:, None]) * n_tiles + k) * n_state + n[None, :]
            tl.store(s_ptrs, h, mask=dn_mask)
        Ct = tl.load(C_ptr + bc_row + t[None, None, :], mask=m3, other=0.0).to(tl.float32)
        y = tl.sum(H * Ct, axis=1)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            zt = tl.load(z_ptr + row + t[None, :], mask=m2, other=0.0).to(tl.float32)
            y = y * zt * tl.sigmoid(zt)
        tl.store(out_ptr + row + t[None, :], y, mask=m2)
        last = (tl.arange(0, T) == T - 1)[None, None, :]
        h = tl.sum(tl.where(last, H, 0.0), axis=2)


@triton.jit
def scan_backward_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    states_ptr,
    gout_ptr,
    g_u_ptr,
    g_delta_ptr,
    g_z_ptr,
    g_B_ptr,
    g_C_ptr,
    g_A_ptr,
    g_D_ptr,
    length,
    channels,
    channels_per_group,
    n_state,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    ONE_GROUP_PER_BLOCK: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    T: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    n_groups = channels // channels_per_group
    n_tiles = tl.cdiv(length, T)

    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = d < channels
    grp = tl.where(d_mask, d, 0) // channels_per_group
    n = tl.arange(0, BLOCK_N)
    n_mask = n < n_state
    dn_mask = d_mask[:, None] & n_mask[None, :]
    A = tl.load(A_ptr + d[:, None] * n_state + n[None, :], mask=dn_mask, other=0.0)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=d_mask, other=0.0)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=d_mask, other=0.0)
    else:
        bias = tl.zeros([BLOCK_D], dtype=tl.float32)

    row = pid_b * channels * length + d[:, None] * length
    bc_row = (pid_b * n_groups + grp)[:, None, None] * n_state * length + n[None, :, None] * length
    # the first group of the block, for the B/C gradients summed over the block's channels
    bc_row_block = (pid_b * n_groups + (pid_d * BLOCK_D) // channels_per_group) * n_state * length
    g_next = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)  # state gradient at the first step of the next tile
    g_A = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    g_D = tl.zeros([BLOCK_D], dtype=tl.float32)
    for kk in range(0, n_tiles):
        k = n_tiles - 1 - kk
        t = k * T + tl.arange(0, T)
        t_mask = t < length
        m2 = d_mask[:, None] & t_mask[None, :]
        m3 = dn_mask[:, :, None] & t_mask[None, None, :]
        u = tl.load(u_ptr + row + t[None, :], mask=m2, other=0.0).to(tl.float32)
        raw, dt = _dt(delta_ptr + row + t[None, :], m2, bias, HAS_BIAS, SOFTPLUS)
        Bt = tl.load(B_ptr + bc_row + t[None, None, :], mask=m3, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + bc_row + t[None, None, :], mask=m3, other=0.0).to(tl.float32)

        # states of the tile, recomputed from the stored state at its start
        s_ptrs = states_ptr + ((pid_b * channels + d[:, None]) * n_tiles + k) * n_state + n[None, :]
        h0 = tl.load(s_ptrs, mask=dn_mask, other=0.0)
        decay = tl.exp(dt[:, None, :] * A[:, :, None])
        drive = (dt * u)[:, None, :] * Bt
        a_cum, b_cum = tl.associative_scan((decay, drive), 2, compose)
        H = a_cum * h0[:, :, None] + b_cum

        gout = tl.load(gout_ptr + row + t[None, :], mask=m2, other=0.0).to(tl.float32)
        if HAS_Z:
            zt = tl.load(z_ptr + row + t[None, :], mask=m2, other=0.0).to(tl.float32)
            sz = tl.sigmoid(zt)
            y = tl.sum(H * Ct, axis=1)
            if HAS_D:
                y += Dv[:, None] * u
            tl.store(g_z_ptr + row + t[None, :], gout * y * sz * (1.0 + zt * (1.0 - sz)), mask=m2)
            gy = gout * zt * sz
        else:
            gy = gout

        # G_t = C_t gy_t + exp(dt_{t+1} A) G_{t+1}: a reverse scan of the maps g -> a_t g + b_t
        t1_mask = (t + 1) < length
        _, dt_next = _dt(delta_ptr + row + t[None, :] + 1, d_mask[:, None] & t1_mask[None, :], bias, HAS_BIAS, SOFTPLUS)
        decay_next = tl.exp(dt_next[:, None, :] * A[:, :, None])
        a_rev, b_rev = tl.associative_scan((decay_next, gy[:, None, :] * Ct), 2, compose, reverse=True)
        G = b_rev + a_rev * g_next[:, :, None]
        first = (tl.arange(0, T) == 0)[None, None, :]
        g_next = tl.sum(tl.where(first, G, 0.0), axis=2)

        GB = tl.sum(G * Bt, axis=1)
        g_u = GB * dt
        if HAS_D:
            g_u += gy * Dv[:, None]
            g_D += tl.sum(gy * u, axis=1)
        X = G * (H - drive)  # gradient of the decay times the decay: G_t * exp(dt_t A) * h_{t-1}
        g_dt = GB * u + tl.sum(X * A[:, :, None], axis=1)
        if SOFTPLUS:
            g_dt = g_dt * tl.sigmoid(raw)
        tl.store(g_u_ptr + row + t[None, :], g_u, mask=m2)
        tl.store(g_delta_ptr + row + t[None, :], g_dt, mask=m2)
        g_A += tl.sum(X * dt[:, None, :], axis=2)

        gB = G * (dt * u)[:, None, :]
        gC = H * gy[:, None, :]
        if ONE_GROUP_PER_BLOCK:  # every channel of the block shares one group: sum first, then one add
            m_nt = n_mask[:, None] & t_mask[None, :]
            off = bc_row_block + n[:, None] * length + t[None, :]
            tl.atomic_add(g_B_ptr + off, tl.sum(gB, axis=0), mask=m_nt)
            tl.atomic_add(g_C_ptr + off, tl.sum(gC, axis=0), mask=m_nt)
        else:
            tl.atomic_add(g_B_ptr + bc_row + t[None, None, :], gB, mask=m3)
            tl.atomic_add(g_C_ptr + bc_row + t[None, None, :], gC, mask=m3)

    tl.store(g_A_ptr + (pid_b * channels + d[:, None]) * n_state + n[None, :], g_A, mask=dn_mask)
    if HAS_D:
        tl.store(g_D_ptr + pid_b * channels + d, g_D, mask=d_mask)
