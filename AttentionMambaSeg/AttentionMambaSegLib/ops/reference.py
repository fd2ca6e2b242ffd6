"""Step-by-step reference of the selective scan (Mamba, Gu & Dao 2023, Algorithm 2 / eq. 2a-2b).

Slow and simple on purpose: every other backend is checked against it. It keeps only the running
state (batch, channels, d_state), never (batch, channels, length, d_state) tensors, and works in the
dtype of its inputs (use float64 for tests).

Legend (mamba-ssm's names):
    u      (batch, channels, L)          input sequence
    delta  (batch, channels, L)          step size before ``delta_bias`` and softplus
    A      (channels, d_state)           continuous-time state matrix (diagonal), negative real
    B, C   (batch, d_state, L) or (batch, groups, d_state, L)   input / output projections;
           channel c uses group ``c // (channels // groups)``
    D      (channels,)                   skip connection
    z      (batch, channels, L)          gate: the output is multiplied by SiLU(z)
    delta_bias (channels,)               added to delta before the softplus

    dt_t = softplus(delta_t + delta_bias)        (softplus only if ``delta_softplus``)
    h_t  = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t  = <C_t, h_t> + D * u_t,   out_t = y_t * SiLU(z_t)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def expand_groups(M: torch.Tensor, channels: int) -> torch.Tensor:
    """Return B or C as (batch, channels, d_state, L), one row per channel.

    Args:
        M: (batch, d_state, L) or (batch, groups, d_state, L).
        channels: the number of channels d; must be a multiple of groups.

    Raises:
        ValueError: if ``channels`` is not a multiple of the number of groups.
    """
    if M.dim() == 3:
        M = M.unsqueeze(1)
    groups = M.shape[1]
    if channels % groups:
        raise ValueError(f"channels ({channels}) must be a multiple of the B/C groups ({groups})")
    return M.repeat_interleave(channels // groups, dim=1)


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Selective scan, one time step at a time. Shapes and meaning: see the module docstring.

    Returns:
        Tensor (batch, channels, L) in the dtype of ``u``.
    """
    batch, channels, length = u.shape
    dt = delta if delta_bias is None else delta + delta_bias[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Bx = expand_groups(B, channels)
    Cx = expand_groups(C, channels)
    h = u.new_zeros(batch, channels, A.shape[1])
    ys = []
    for t in range(length):
        dt_t = dt[:, :, t, None]
        h = torch.exp(dt_t * A) * h + dt_t * Bx[..., t] * u[:, :, t, None]
        ys.append((h * Cx[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, channels, 0)
    if D is not None:
        y = y + u * D[None, :, None]
    if z is not None:
        y = y * F.silu(z)
    return y
