"""Mamba layers: SS2D (VMamba's 2-D selective scan) and the plain 1-D Mamba block.

- SS2D (Liu et al. 2024, VMamba, Sec. 3): in_proj, depthwise 3x3 conv + SiLU,
  four scan orders (row-major, column-major and both reversed) with their own dt/B/C projections, one
  selective scan over the 4 x d_inner channels with B and C grouped by direction, the orders undone
  and summed, LayerNorm, gated by SiLU(z), out_proj.
- Mamba1D (Gu & Dao 2023, Fig. 3): in_proj, causal depthwise Conv1d (kernel 4,
  a padded ``nn.Conv1d``: no causal-conv1d dependency), x_proj, dt_proj, the scan with z gating,
  out_proj. No norm, no residual.

Initialisation as in mamba-ssm: A_log = log(1..d_state); D = 1; dt_proj weight uniform in
+-dt_rank**-0.5; dt_proj bias = softplus^-1(dt) with dt log-uniform in [1e-3, 1e-1], floored at 1e-4
(so the initial step sizes span the range Mamba was tuned for).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import selective_scan
from ..ops.ss2d import ss2d_scan


def _dt_bias_init(size: int, dt_min: float = 1e-3, dt_max: float = 1e-1, floor: float = 1e-4) -> torch.Tensor:
    dt = torch.exp(torch.rand(size) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse softplus


def _a_log_init(channels: int, d_state: int) -> torch.Tensor:
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(channels, 1)


class SS2D(nn.Module):
    """2-D selective scan over four orders.

    Args:
        d_model: channels of the input (128 in Attention-Mamba).
        d_state: SSM state size per channel (16).
        expand: d_inner = expand * d_model (2 -> 256).
        dt_rank: rank of the dt projection (8).
        d_conv: depthwise conv kernel (3).

    Input/output: (B, H, W, d_model) float32, channels last.
    """

    directions = 4

    def __init__(self, d_model: int = 128, d_state: int = 16, expand: int = 2, dt_rank: int = 8, d_conv: int = 3):
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = dt_rank
        K, D = self.directions, self.d_inner
        self.in_proj = nn.Linear(d_model, 2 * D, bias=False)
        self.conv2d = nn.Conv2d(D, D, d_conv, padding=(d_conv - 1) // 2, groups=D, bias=True)
        self.x_proj_weight = nn.Parameter(torch.empty(K, dt_rank + 2 * d_state, D))
        self.dt_projs_weight = nn.Parameter(torch.empty(K, D, dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(K, D))
        self.A_log = nn.Parameter(_a_log_init(K * D, d_state))
        self.D = nn.Parameter(torch.ones(K * D))
        self.out_norm = nn.LayerNorm(D)
        self.out_proj = nn.Linear(D, d_model, bias=False)
        bound = 1.0 / math.sqrt(D)
        nn.init.uniform_(self.x_proj_weight, -bound, bound)  # nn.Linear's default for D inputs
        nn.init.uniform_(self.dt_projs_weight, -(dt_rank**-0.5), dt_rank**-0.5)
        with torch.no_grad():
            self.dt_projs_bias.copy_(_dt_bias_init(K * D).view(K, D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u = F.silu(self.conv2d(u.permute(0, 3, 1, 2).contiguous()))  # (B, D, H, W)
        y = ss2d_scan(u, self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias, self.A_log, self.D)
        y = y.permute(0, 2, 3, 1)  # (B, H, W, D)
        y = self.out_norm(y) * F.silu(z)
        return self.out_proj(y)


class VSSBlock(nn.Module):
    """x <- x + SS2D(LayerNorm(x)), channels last (B, H, W, C). No MLP, no drop-path."""

    def __init__(self, d_model: int = 128, **ss2d_kwargs):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, eps=1e-5)
        self.ss2d = SS2D(d_model, **ss2d_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ss2d(self.norm(x))


class Mamba1D(nn.Module):
    """Plain Mamba block over a sequence (B, L, d_model) -> (B, L, d_model).

    d_inner = 2 d_model, dt_rank = ceil(d_model / 16), d_state 16, causal conv kernel 4.
    """

    def __init__(self, d_model: int, d_state: int = 16, expand: int = 2, d_conv: int = 4):
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16)
        D = self.d_inner
        self.in_proj = nn.Linear(d_model, 2 * D, bias=False)
        self.conv1d = nn.Conv1d(D, D, d_conv, groups=D, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(D, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, D, bias=True)
        self.A_log = nn.Parameter(_a_log_init(D, d_state))
        self.D = nn.Parameter(torch.ones(D))
        self.out_proj = nn.Linear(D, d_model, bias=False)
        nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        with torch.no_grad():
            self.dt_proj.bias.copy_(_dt_bias_init(D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        u, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)  # (B, D, L) each
        u = F.silu(self.conv1d(u)[..., :L])  # causal: keep the first L outputs
        x_dbl = self.x_proj(u.transpose(1, 2))  # (B, L, R + 2N)
        dt, Bm, Cm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # bias goes in as delta_bias
        y = selective_scan(
            u.contiguous(),
            dt.contiguous(),
            -torch.exp(self.A_log.float()),
            Bm.transpose(1, 2).contiguous(),
            Cm.transpose(1, 2).contiguous(),
            self.D.float(),
            z=z.contiguous(),
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )
        return self.out_proj(y.transpose(1, 2))


class BiMamba1D(nn.Module):
    """A forward Mamba1D plus a second one run on the reversed sequence (output reversed back), summed."""

    def __init__(self, d_model: int):
        super().__init__()
        self.forward_mamba = Mamba1D(d_model)
        self.backward_mamba = Mamba1D(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_mamba(x) + self.backward_mamba(x.flip(1)).flip(1)
