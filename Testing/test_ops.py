"""The selective scan: every backend against an independent float64 step-by-step reference."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys

import pytest
import torch

from AttentionMambaSegLib.ops import dispatch, selective_scan, selective_scan_reference, selective_scan_torch

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed: the fused CPU kernels are off")
if HAVE_NUMBA:
    from AttentionMambaSegLib.ops.fused import selective_scan_cpu_fused

    BACKENDS = {"torch": selective_scan_torch, "cpu-fused": selective_scan_cpu_fused}
else:  # the torch backend is still tested against the reference
    BACKENDS = {"torch": selective_scan_torch}


def make_inputs(b, d, n, L, groups, seed=0, dtype=torch.float64, trained_like=False):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, d, L, generator=g, dtype=dtype)
    delta = torch.randn(b, d, L, generator=g, dtype=dtype) * 0.5
    if trained_like:  # strong decays: A down to -60, dt up to ~3
        A = -torch.rand(d, n, generator=g, dtype=dtype) * 60 - 0.01
        delta = delta + 1.0
    else:
        A = -torch.rand(d, n, generator=g, dtype=dtype) * 4 - 0.05
    shape = (b, n, L) if groups == 0 else (b, groups, n, L)
    B = torch.randn(*shape, generator=g, dtype=dtype)
    C = torch.randn(*shape, generator=g, dtype=dtype)
    D = torch.randn(d, generator=g, dtype=dtype)
    z = torch.randn(b, d, L, generator=g, dtype=dtype)
    bias = torch.randn(d, generator=g, dtype=dtype) * 0.2
    return [u, delta, A, B, C, D, z, bias]


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


OPTIONS = [
    dict(D=True, z=True, bias=True, softplus=True),
    dict(D=False, z=False, bias=False, softplus=False),
    dict(D=True, z=False, bias=True, softplus=False),
    dict(D=False, z=True, bias=False, softplus=True),
]


def call(fn, inputs, opt):
    u, delta, A, B, C, D, z, bias = inputs
    if not opt["softplus"]:
        delta = delta.abs() * 0.3  # dt must stay positive without the softplus
    return fn(
        u,
        delta,
        A,
        B,
        C,
        D if opt["D"] else None,
        z if opt["z"] else None,
        bias.abs() if opt["bias"] else None,
        opt["softplus"],
    )


@pytest.mark.parametrize(
    "L,groups", [(1, 0), (2, 1), (63, 4), (64, 0), (65, 1), (257, 4), (1000, 0), (1000, 1), (5000, 4)]
)
def test_forward_matches_reference(L, groups):
    opt = OPTIONS[L % len(OPTIONS)]
    inputs = make_inputs(2, 8, 16, L, groups, seed=L + groups)
    ref = call(selective_scan_reference, inputs, opt)  # float64, one step at a time
    for name, fn in BACKENDS.items():
        got = call(fn, [t.float() for t in inputs], opt)
        assert got.dtype == torch.float32 and got.shape == ref.shape, name
        assert rel_err(got, ref) <= 1e-5, name


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("opt", OPTIONS)
def test_every_option_and_strong_decays(backend, opt):
    inputs = make_inputs(1, 12, 16, 300, 3, seed=7, trained_like=True)
    ref = call(selective_scan_reference, inputs, opt)
    got = call(BACKENDS[backend], [t.float() for t in inputs], opt)
    assert torch.isfinite(got).all()
    assert rel_err(got, ref) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("d_state", [4, 16])
def test_other_state_sizes(d_state):
    inputs = make_inputs(2, 6, d_state, 130, 2, seed=3)
    ref = call(selective_scan_reference, inputs, OPTIONS[0])
    for fn in BACKENDS.values():
        assert rel_err(call(fn, [t.float() for t in inputs], OPTIONS[0]), ref) <= 1e-5


def test_non_contiguous_inputs():
    u, delta, A, B, C, D, z, bias = make_inputs(2, 8, 16, 150, 2, seed=5, dtype=torch.float32)
    ref = selective_scan_reference(
        u.double(), delta.double(), A.double(), B.double(), C.double(), D.double(), z.double(), bias.double(), True
    )
    # the same values, stored transposed
    ut = u.transpose(1, 2).contiguous().transpose(1, 2)
    Bt = B.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not ut.is_contiguous() and not Bt.is_contiguous()
    for fn in BACKENDS.values():
        assert rel_err(fn(ut, delta, A, Bt, C, D, z, bias, True), ref) <= 1e-5


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("groups,L", [(0, 37), (2, 130), (4, 1)])
@pytest.mark.parametrize("opt", OPTIONS[:2])
def test_gradients_match_reference(backend, groups, L, opt):
    inputs = make_inputs(2, 8, 16, L, groups, seed=11)
    if not opt["softplus"]:
        inputs[1] = inputs[1].abs() * 0.3
    leaves = [t.clone().requires_grad_() for t in inputs]
    gout = torch.randn(2, 8, L, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]

    def run(fn, ts):
        u, delta, A, B, C, D, z, bias = ts
        return fn(
            u,
            delta,
            A,
            B,
            C,
            D if opt["D"] else None,
            z if opt["z"] else None,
            bias if opt["bias"] else None,
            opt["softplus"],
        )

    (run(selective_scan_reference, leaves) * gout).sum().backward()
    dtype = torch.float64 if backend == "torch" else torch.float32
    mine = [t.detach().to(dtype).requires_grad_() for t in inputs]
    (run(BACKENDS[backend], mine) * gout.to(dtype)).sum().backward()
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for name, ref, got in zip(names, leaves, mine):
        if ref.grad is None:
            assert got.grad is None or got.grad.abs().max() == 0, name
            continue
        if ref.grad.abs().max() == 0:
            continue
        assert got.grad is not None, f"no gradient for {name}"
        assert rel_err(got.grad, ref.grad) <= tol, name


def test_torch_backend_passes_gradcheck():
    u, delta, A, B, C, D, z, bias = make_inputs(1, 4, 3, 9, 2, seed=2)
    leaves = [t.requires_grad_() for t in (u, delta, A, B, C, D, z, bias)]
    assert torch.autograd.gradcheck(
        lambda *ts: selective_scan_torch(*ts[:5], D=ts[5], z=ts[6], delta_bias=ts[7], delta_softplus=True), leaves
    )


def test_torch_scan_memory_is_bounded_for_long_sequences():
    """L = 16,384, batch 4, d 256, d_state 16: the full state tensor would be 1 GiB; we keep chunks only."""
    from AttentionMambaSegLib.ops import scan_torch

    b, d, n, L = 4, 256, 16, 16384
    T = scan_torch._chunk_length(b, d, n, 4)
    chunk_bytes = T * b * d * n * 4
    assert chunk_bytes <= 16 * 2**20
    saved_starts = -(-L // T) * b * d * n * 4
    assert saved_starts < 0.5 * b * d * L * n * 4  # far below one full (b, d, L, n) tensor


def test_dispatch_rejects_bad_shapes_and_backends():
    u, delta, A, B, C, D, z, bias = make_inputs(1, 8, 16, 10, 2, dtype=torch.float32)
    with pytest.raises(ValueError, match="unknown selective-scan backend"):
        selective_scan(u, delta, A, B, C, backend="gpu")
    with pytest.raises(ValueError, match="A must be"):
        selective_scan(u, delta, A[:4], B, C)
    with pytest.raises(ValueError, match="B must be"):
        selective_scan(u, delta, A, B[..., :5], C)
    with pytest.raises(ValueError, match="multiple of"):
        selective_scan(u, delta, A, torch.randn(1, 3, 16, 10), C)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        selective_scan(u, delta, A, B, C, backend="cuda")


@needs_numba
def test_auto_picks_fused_on_cpu_after_a_check(caplog):
    dispatch._verdicts.clear()
    with caplog.at_level(logging.INFO):
        assert dispatch.resolve_backend("cpu", "auto") == "cpu-fused"
    assert any("cpu-fused agrees with torch" in r.message for r in caplog.records)
    inputs = make_inputs(1, 8, 16, 50, 2, dtype=torch.float32)
    ref = call(selective_scan_reference, [t.double() for t in inputs], OPTIONS[0])
    assert rel_err(call(selective_scan, inputs, OPTIONS[0]), ref) <= 1e-5


@needs_numba
def test_first_check_inside_bf16_autocast_still_picks_fused():
    """Training with --bf16 runs the first forward under autocast: the probe must compare float32 scans
    (a bf16 probe once measured 8e-4 and silently sent training to the slow torch scan)."""
    dispatch._verdicts.clear()
    inputs = make_inputs(1, 8, 16, 50, 2, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dispatch.resolve_backend("cpu", "auto") == "cpu-fused"
        y = call(selective_scan, inputs, OPTIONS[0])
    assert y.dtype == torch.float32
    ref = call(selective_scan_reference, [t.double() for t in inputs], OPTIONS[0])
    assert rel_err(y, ref) <= 1e-5


def test_cuda_backend_is_refused_with_a_reason_where_it_cannot_run():
    ok, reason = dispatch._check_backend("cuda", torch.device("cpu"))
    if importlib.util.find_spec("mamba_ssm") is None:  # CPU machines: the import fails and says so
        assert not ok and reason.startswith("cuda unavailable: ") and "mamba_ssm" in reason
    else:  # mamba-ssm installed: its kernels run on CUDA only, so on CPU tensors they fail or disagree
        assert not ok and ("unavailable" in reason or "disagrees" in reason)
    assert dispatch.resolve_backend("cpu", "auto") in ("torch", "cpu-fused")


@pytest.mark.slow
def test_without_numba_auto_uses_torch():
    """A CPU run without numba still works: 'auto' falls back to 'torch' and says why."""
    code = (
        "import sys, logging; sys.modules['numba'] = None\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "import torch\n"
        "from AttentionMambaSegLib.ops import selective_scan, resolve_backend\n"
        "assert resolve_backend('cpu') == 'torch'\n"
        "u = torch.randn(1, 4, 20); A = -torch.rand(4, 16) - 0.1; B = torch.randn(1, 16, 20)\n"
        "y = selective_scan(u, u.abs(), A, B, B)\n"
        "assert y.shape == u.shape and torch.isfinite(y).all()\n"
        "print('OK')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout
    assert "cpu-fused unavailable" in out.stderr


# --- SS2D's fused four-direction scan ------------------------------------------------------------


def _ss2d_params(D=16, N=16, R=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    K = 4
    x_proj = torch.randn(K, R + 2 * N, D, generator=g, dtype=dtype) / D**0.5
    dt_w = torch.randn(K, D, R, generator=g, dtype=dtype) / R**0.5
    dt_b = torch.randn(K, D, generator=g, dtype=dtype) * 2 - 3  # softplus inputs both sides of 0
    A_log = torch.log(torch.rand(K * D, N, generator=g, dtype=dtype) * 15 + 0.5)
    Ds = torch.randn(K * D, generator=g, dtype=dtype)
    return [x_proj, dt_w, dt_b, A_log, Ds]


def test_scan_orders_visit_every_position_once():
    from AttentionMambaSegLib.ops.ss2d import scan_orders

    orders = scan_orders(3, 4)
    assert orders.shape == (4, 12) and orders.dtype == torch.int32
    assert orders[1].tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]  # column-major
    assert orders[2].tolist() == list(range(11, -1, -1))
    for row in orders:
        assert sorted(row.tolist()) == list(range(12))


@pytest.mark.parametrize("B,H,W", [(2, 5, 7), (1, 1, 1), (1, 16, 3)])
@needs_numba
def test_fused_ss2d_matches_the_unfused_reference(B, H, W):
    from AttentionMambaSegLib.ops.ss2d import ss2d_scan_fused, ss2d_scan_unfused

    params = _ss2d_params(seed=H * W)
    u = torch.randn(B, 16, H, W, generator=torch.Generator().manual_seed(1))
    ref_leaves = [t.double().requires_grad_() for t in [u] + params]
    ref = ss2d_scan_unfused(*ref_leaves, backend="torch")
    gout = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref_grads = torch.autograd.grad((ref * gout).sum(), ref_leaves)
    leaves = [t.clone().requires_grad_() for t in [u] + params]
    got = ss2d_scan_fused(*leaves)
    assert rel_err(got, ref) <= 1e-5
    grads = torch.autograd.grad((got * gout.float()).sum(), leaves)
    for name, a, b in zip(["u", "x_proj", "dt_w", "dt_b", "A_log", "D"], grads, ref_grads):
        assert rel_err(a, b) <= 1e-4, name


def test_ss2d_scan_stays_float32_under_bf16_autocast():
    """The projections may run in bf16 elsewhere, but SS2D's scan (and its input projection) stays
    float32: same result inside and outside autocast."""
    from AttentionMambaSegLib.ops.ss2d import ss2d_scan

    params = _ss2d_params(seed=3)
    u = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(4))
    want = ss2d_scan(u, *params)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ss2d_scan(u, *params)
    assert got.dtype == torch.float32
    assert rel_err(got, want) <= 1e-6


# --- the torch scan's doubling path (GPUs: a few launches per doubling instead of one per step) -----


def test_linear_scan_by_doubling_matches_the_step_loop():
    from AttentionMambaSegLib.ops.scan_torch import _linear_scan_

    g = torch.Generator().manual_seed(0)
    for T in (1, 2, 7, 64, 100):
        a = torch.rand(T, 3, 5, generator=g, dtype=torch.float64)
        x = torch.randn(T, 3, 5, generator=g, dtype=torch.float64)
        fwd, rev = x.clone(), x.clone()
        for t in range(1, T):
            fwd[t] += a[t] * fwd[t - 1]
        for t in range(T - 2, -1, -1):
            rev[t] += a[t] * rev[t + 1]
        got_fwd = _linear_scan_(x.clone(), a.clone(), torch.empty_like(x))
        got_rev = _linear_scan_(x.clone(), a.clone(), torch.empty_like(x), reverse=True)
        assert rel_err(got_fwd, fwd) <= 1e-14 and rel_err(got_rev, rev) <= 1e-14, T


def test_torch_scan_by_doubling_is_exact_and_launches_few_kernels(monkeypatch):
    """The GPU path of the torch scan, run on the CPU: float64 forward and gradients against the
    reference, gradcheck, and the number of aten operators does not grow with every time step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from AttentionMambaSegLib.ops import scan_torch

    monkeypatch.setattr(scan_torch, "DOUBLING_ON_CPU", True)
    inputs = make_inputs(2, 8, 16, 300, 2, seed=13)
    leaves = [t.clone().requires_grad_() for t in inputs]
    mine = [t.clone().requires_grad_() for t in inputs]
    gout = torch.randn(2, 8, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (call(selective_scan_reference, leaves, OPTIONS[0]) * gout).sum().backward()
    y = call(selective_scan_torch, mine, OPTIONS[0])
    assert rel_err(y, call(selective_scan_reference, inputs, OPTIONS[0])) <= 1e-12
    (y * gout).sum().backward()
    for a, b in zip(mine, leaves):
        assert rel_err(a.grad, b.grad) <= 1e-10
    u, delta, A, B, C, D, z, bias = make_inputs(1, 4, 3, 9, 2, seed=2)
    assert torch.autograd.gradcheck(
        lambda *ts: selective_scan_torch(*ts[:5], D=ts[5], z=ts[6], delta_bias=ts[7], delta_softplus=True),
        [t.requires_grad_() for t in (u, delta, A, B, C, D, z, bias)],
    )

    class Ops(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Ops.count += not func.is_view
            return func(*args, **(kwargs or {}))

    counts = {}
    for L in (256, 4096):
        x = make_inputs(1, 8, 16, L, 2, dtype=torch.float32)
        Ops.count = 0
        with torch.no_grad(), Ops():
            call(selective_scan_torch, x, OPTIONS[0])
        counts[L] = Ops.count
    assert counts[4096] < 200 and counts[4096] - counts[256] <= 4 * 4  # four more doublings, not 3,840 steps
