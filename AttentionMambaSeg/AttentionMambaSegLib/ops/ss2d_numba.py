"""Fused CPU kernels for SS2D's four-direction selective scan (the "cpu-fused" path of :mod:`.ss2d`).

SS2D scans the same (B, D, H, W) map in four orders (row-major, column-major, both reversed). The
unfused path materialises the four re-ordered copies, a (B, 4, D, L) dt tensor, the softplus, the
flips and transposes back, and the sum: memory passes that cost more than the scan itself on a CPU
(measured here at 224x224: about 60 % of SS2D's time). These kernels instead read every tensor in
row-major position order through a per-direction index table ``order`` (K, L) and:

- compute dt = softplus(W_dt @ x_dt + dt_bias) for a block of channels, vectorised over positions
  (a polynomial exp and log1p: only multiplies, adds and integer ops);
- run the recurrence of each direction with the state of 4 channels in local arrays;
- accumulate the four directions' outputs and the D skip straight into y (B, D, L), row-major.

The backward walks each direction in reverse with states recomputed from checkpoints, as
:mod:`.scan_numba` does, and returns per-direction gradients that the caller sums.

Legend: B batch, D = d_inner channels, L = H * W positions (row-major), K = 4 directions, R dt rank,
N d_state. Inputs (float32, C-contiguous): u (B, D, L); x_dt (B, K, R, L); BC (B, K, L, 2N) with B
in [..., :N] and C in [..., N:]; W_dt (K, D, R); dt_bias (K, D); A (K, D, N) (negative); D_skip
(K, D); order (K, L) int32: order[k, t] is the row-major position of step t of direction k.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from .scan_numba import BLOCK, CHECKPOINT, exp_neg


@njit(inline="always", fastmath=True)
def _softplus_and_sigmoid(v, bits, scale, i):
    """softplus(v) = max(v, 0) + log1p(exp(-|v|)) and sigmoid(v), vectorisable (bits/scale: scratch)."""
    w = exp_neg(-abs(v), bits, i) * scale[i]
    s = w / (np.float32(2.0) + w)  # log1p(w) = 2 atanh(s), s in (0, 1/3]
    s2 = s * s
    p = np.float32(1.0 / 15.0)
    p = p * s2 + np.float32(1.0 / 13.0)
    p = p * s2 + np.float32(1.0 / 11.0)
    p = p * s2 + np.float32(1.0 / 9.0)
    p = p * s2 + np.float32(1.0 / 7.0)
    p = p * s2 + np.float32(1.0 / 5.0)
    p = p * s2 + np.float32(1.0 / 3.0)
    p = p * s2 + np.float32(1.0)
    sp = max(v, np.float32(0.0)) + np.float32(2.0) * s * p
    inv = np.float32(1.0) / (np.float32(1.0) + w)
    sig = inv if v >= 0 else w * inv
    return sp, sig


@njit(inline="always", fastmath=True)
def _step_sizes(x_dt, W_dt, dt_bias, bi, k, di, dtb, sgb, j, bits, scale, L, R):
    """dtb[j, :] = softplus(W_dt[k, di] @ x_dt[bi, k, :, :] + dt_bias[k, di]); sgb[j, :] = sigmoid(...)."""
    for p in range(L):
        dtb[j, p] = dt_bias[k, di]
    for r in range(R):
        w = W_dt[k, di, r]
        for p in range(L):
            dtb[j, p] += w * x_dt[bi, k, r, p]
    for p in range(L):
        sp, sg = _softplus_and_sigmoid(dtb[j, p], bits, scale, p)
        dtb[j, p] = sp
        sgb[j, p] = sg


@functools.cache
def ss2d_kernels(n: int):
    """Return (forward, backward) kernels specialised for d_state = ``n``.

    forward(u, x_dt, BC, W_dt, dt_bias, A, D_skip, order, y): y (B, D, L) zeroed by the caller.
    backward(u, x_dt, BC, W_dt, dt_bias, A, order, gy, g_u, g_v, g_A, g_BC): per direction,
    g_u (B, K, D, L) (scan part only), g_v (B, K, D, L) gradient of the pre-softplus dt, g_A
    (B, K, D, N), g_BC (B, K, L, 2N) zeroed by the caller.
    """
    CH = BLOCK
    CK = CHECKPOINT

    @njit(parallel=True, fastmath=True, cache=True)
    def forward(u, x_dt, BC, W_dt, dt_bias, A, D_skip, order, y):  # pragma: no cover - compiled
        nb, nd, L = u.shape
        K = x_dt.shape[1]
        R = x_dt.shape[2]
        nblk = (nd + CH - 1) // CH
        for task in prange(nb * nblk):
            bi = task // nblk
            d0 = (task % nblk) * CH
            cnt = min(CH, nd - d0)
            h = np.zeros((CH, n), np.float32)
            a = np.zeros((CH, n), np.float32)
            dtb = np.empty((CH, L), np.float32)
            sgb = np.empty((CH, L), np.float32)
            bits = np.empty(max(n, L), np.int32)
            scale = bits.view(np.float32)
            for k in range(K):
                for j in range(cnt):
                    _step_sizes(x_dt, W_dt, dt_bias, bi, k, d0 + j, dtb, sgb, j, bits, scale, L, R)
                    for kk in range(n):
                        a[j, kk] = A[k, d0 + j, kk]
                        h[j, kk] = 0.0
                for t in range(L):
                    p = order[k, t]
                    for j in range(cnt):
                        dtt = dtb[j, p]
                        x = dtt * u[bi, d0 + j, p]
                        acc = np.float32(0.0)
                        for kk in range(n):
                            e = exp_neg(dtt * a[j, kk], bits, kk)
                            hk = e * scale[kk] * h[j, kk] + x * BC[bi, k, p, kk]
                            h[j, kk] = hk
                            acc += hk * BC[bi, k, p, n + kk]
                        y[bi, d0 + j, p] += acc
            for j in range(cnt):
                dsum = np.float32(0.0)
                for k in range(K):
                    dsum += D_skip[k, d0 + j]
                for p in range(L):
                    y[bi, d0 + j, p] += dsum * u[bi, d0 + j, p]

    @njit(parallel=True, fastmath=True, cache=True)
    def backward(u, x_dt, BC, W_dt, dt_bias, A, order, gy, g_u, g_v, g_A, g_BC):  # pragma: no cover
        nb, nd, L = u.shape
        K = x_dt.shape[1]
        R = x_dt.shape[2]
        n_ck = (L + CK - 1) // CK
        for task in prange(nb * K):
            bi = task // K
            k = task % K
            ck = np.empty((n_ck, CH, n), np.float32)
            H = np.empty((CK + 1, CH, n), np.float32)
            dA = np.empty((CK, CH, n), np.float32)
            gh = np.empty((CH, n), np.float32)
            a = np.zeros((CH, n), np.float32)
            gA = np.empty((CH, n), np.float32)
            dtb = np.empty((CH, L), np.float32)
            sgb = np.empty((CH, L), np.float32)
            bits = np.empty(max(n, L), np.int32)
            scale = bits.view(np.float32)
            for d0 in range(0, nd, CH):
                cnt = min(CH, nd - d0)
                for j in range(cnt):
                    _step_sizes(x_dt, W_dt, dt_bias, bi, k, d0 + j, dtb, sgb, j, bits, scale, L, R)
                    for kk in range(n):
                        a[j, kk] = A[k, d0 + j, kk]
                        gh[j, kk] = 0.0
                        gA[j, kk] = 0.0
                        H[0, j, kk] = 0.0
                for c in range(n_ck):  # pass 1: state at the start of every chunk
                    for j in range(cnt):
                        for kk in range(n):
                            ck[c, j, kk] = H[0, j, kk]
                    for t in range(c * CK, min(L, (c + 1) * CK)):
                        p = order[k, t]
                        for j in range(cnt):
                            dtt = dtb[j, p]
                            x = dtt * u[bi, d0 + j, p]
                            for kk in range(n):
                                e = exp_neg(dtt * a[j, kk], bits, kk)
                                H[0, j, kk] = e * scale[kk] * H[0, j, kk] + x * BC[bi, k, p, kk]
                for c in range(n_ck - 1, -1, -1):  # pass 2: chunks in reverse
                    t0 = c * CK
                    steps = min(L, t0 + CK) - t0
                    for j in range(cnt):
                        for kk in range(n):
                            H[0, j, kk] = ck[c, j, kk]
                    for s in range(steps):
                        p = order[k, t0 + s]
                        for j in range(cnt):
                            dtt = dtb[j, p]
                            x = dtt * u[bi, d0 + j, p]
                            for kk in range(n):
                                e = exp_neg(dtt * a[j, kk], bits, kk) * scale[kk]
                                dA[s, j, kk] = e
                                H[s + 1, j, kk] = e * H[s, j, kk] + x * BC[bi, k, p, kk]
                    for s in range(steps - 1, -1, -1):
                        p = order[k, t0 + s]
                        for j in range(cnt):
                            di = d0 + j
                            dtt = dtb[j, p]
                            ut = u[bi, di, p]
                            gyt = gy[bi, di, p]
                            dtu = dtt * ut
                            sB = np.float32(0.0)
                            sA = np.float32(0.0)
                            for kk in range(n):
                                ghk = gh[j, kk] + gyt * BC[bi, k, p, n + kk]
                                g_BC[bi, k, p, n + kk] += gyt * H[s + 1, j, kk]
                                g_BC[bi, k, p, kk] += ghk * dtu
                                sB += ghk * BC[bi, k, p, kk]
                                gdA = ghk * H[s, j, kk] * dA[s, j, kk]
                                sA += gdA * a[j, kk]
                                gA[j, kk] += gdA * dtt
                                gh[j, kk] = ghk * dA[s, j, kk]
                            g_u[bi, k, di, p] = sB * dtt
                            g_v[bi, k, di, p] = (sB * ut + sA) * sgb[j, p]
                for j in range(cnt):
                    for kk in range(n):
                        g_A[bi, k, d0 + j, kk] = gA[j, kk]

    return forward, backward
