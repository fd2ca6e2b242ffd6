"""The Triton selective scan, run on the CPU in Triton's interpreter, and everything that chooses it.

- Forward against the independent float64 step-by-step reference (relative error <= 1e-5) and gradients
  against the torch backend in float64 (<= 1e-4): grouped and 3-D B/C, L = 1, a ragged last tile, a
  channel block spanning two groups, D / z / delta_bias present and absent, bfloat16 inputs.
- The dispatch: Triton for CUDA tensors when mamba-ssm is absent (CUDA faked only where the device type
  is read; the kernels really run), the torch scan with a warning when Triton fails too, the environment
  variable that forces a backend, the refusal on CPU tensors without the interpreter.
- ``--device auto`` skips a GPU that would run only the torch scan; ``doctor --device cuda`` fails clearly
  without CUDA; a whole network forward on Triton issues a fixed number of kernel launches, under 1,000.
- ``benchmarks/gpu_check.py --dry`` runs end to end without SimpleITK.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

# Triton reads this when it is first imported (collection imports this module before any test runs).
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402,F401  (a test dependency on Linux: pip install -e '.[test]')

from AttentionMambaSegLib.ops import (  # noqa: E402
    dispatch,
    scan_triton,
    selective_scan,
    selective_scan_reference,
    selective_scan_torch,  # noqa: E402
)
from AttentionMambaSegLib.ops.scan_triton import selective_scan_triton  # noqa: E402
from conftest import REPO  # noqa: E402

if not scan_triton.interpreter_enabled():
    raise RuntimeError(
        "Triton was imported before TRITON_INTERPRET=1 was set: its interpreter is off in this "
        "process (Testing/conftest.py sets it first)"
    )

NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    """No backend forced and fresh dispatch verdicts in every test (Triton runs in its interpreter)."""
    monkeypatch.delenv(dispatch.BACKEND_ENV, raising=False)
    monkeypatch.setattr(dispatch, "_verdicts", {})
    monkeypatch.setattr(dispatch, "_warned", set())


def make_inputs(b, d, n, L, groups, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, d, L, generator=g, dtype=dtype)
    delta = torch.randn(b, d, L, generator=g, dtype=dtype) * 0.5
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


def run(fn, ts, extras, **kw):
    """Call ``fn`` with the optional inputs (D, z, delta_bias, softplus) that ``extras`` switches on."""
    u, delta, A, B, C, D, z, bias = ts
    if not extras:
        delta = delta.abs() * 0.3  # dt must stay positive without the softplus
    return fn(u, delta, A, B, C, D if extras else None, z if extras else None, bias if extras else None, extras, **kw)


# (batch, channels, d_state, L, groups (0: 3-D B/C), channels per program, steps per tile)
CASES = {
    "grouped-one-group-per-block": (2, 8, 16, 67, 2, 4, 16),  # 5 tiles, the last one ragged (3 of 16)
    "3d-BC-L1": (1, 4, 16, 1, 0, None, None),
    "block-spans-groups": (2, 6, 16, 37, 2, 4, 16),  # 3 channels per group, 4 per program, last block partial
    "default-sizes-odd-state": (1, 12, 5, 130, 3, None, None),  # d_state 5 padded to 8 in the kernel
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("extras", [True, False], ids=["D-z-bias-softplus", "plain"])
def test_forward_matches_float64_reference(case, extras):
    b, d, n, L, groups, block_d, tile = CASES[case]
    inputs = make_inputs(b, d, n, L, groups, seed=L + d)
    ref = run(selective_scan_reference, inputs, extras)
    got = run(selective_scan_triton, [t.float() for t in inputs], extras, block_d=block_d, tile=tile)
    assert got.dtype == torch.float32 and got.shape == (b, d, L)
    assert rel_err(got, ref) <= 1e-5


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("extras", [True, False], ids=["D-z-bias-softplus", "plain"])
def test_gradients_match_torch_backend(case, extras):
    b, d, n, L, groups, block_d, tile = CASES[case]
    inputs = make_inputs(b, d, n, L, groups, seed=3 * L + d)
    gout = torch.randn(b, d, L, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = [t.clone().requires_grad_() for t in inputs]
    (run(selective_scan_torch, ref, extras) * gout).sum().backward()  # float64
    mine = [t.float().requires_grad_() for t in inputs]
    (run(selective_scan_triton, mine, extras, block_d=block_d, tile=tile) * gout.float()).sum().backward()
    for name, r, m in zip(NAMES, ref, mine):
        if r.grad is None:  # an input switched off: no gradient on either side
            assert m.grad is None, name
            continue
        assert m.grad is not None and m.grad.dtype == torch.float32, name
        assert rel_err(m.grad, r.grad) <= 1e-4, name


def test_bfloat16_inputs_keep_a_float32_state():
    inputs = make_inputs(2, 8, 16, 50, 2, seed=5)
    low = [t.to(torch.bfloat16) if t.dim() >= 3 else t.float() for t in inputs]  # u, delta, B, C, z in bf16
    ref = run(selective_scan_reference, [t.double() for t in low], True)  # the same bf16 values, float64 scan
    leaves = [t.clone().requires_grad_() for t in low]
    got = run(selective_scan_triton, leaves, True)
    assert got.dtype == torch.float32
    assert rel_err(got, ref) <= 1e-5
    got.sum().backward()
    assert leaves[0].grad.dtype == torch.bfloat16 and leaves[3].grad.dtype == torch.bfloat16


def test_float64_and_bad_block_sizes_are_refused():
    inputs = make_inputs(1, 4, 16, 10, 0)
    with pytest.raises(ValueError, match="float64 runs on the 'torch' backend"):
        run(selective_scan_triton, inputs, True)
    with pytest.raises(ValueError, match="tile must be a power of two"):
        run(selective_scan_triton, [t.float() for t in inputs], True, tile=24)
    # through the dispatcher float64 goes to the torch scan instead
    y = run(lambda *a: selective_scan(*a, backend="triton"), inputs, True)
    assert y.dtype == torch.float64 and rel_err(y, run(selective_scan_reference, inputs, True)) <= 1e-12


def test_interpreter_shortcut_gives_the_numbers_of_the_combine_function(monkeypatch):
    """The interpreter's affine-map shortcut (numpy) against the kernels' own combine function."""
    inputs = [t.float() for t in make_inputs(2, 6, 16, 40, 2, seed=9)]
    fast = run(selective_scan_triton, inputs, True, block_d=4, tile=16)
    scan_triton.kernels()  # loaded, so that its combine function is registered
    monkeypatch.setattr(scan_triton, "_AFFINE_COMBINES", set())
    generic = run(selective_scan_triton, inputs, True, block_d=4, tile=16)
    assert rel_err(generic, fast) <= 1e-6


def test_triton_on_cpu_tensors_needs_the_interpreter(monkeypatch):
    monkeypatch.setattr(scan_triton, "interpreter_enabled", lambda: False)  # as in a process without it
    inputs = [t.float() for t in make_inputs(1, 4, 16, 10, 0)]
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        run(lambda *a: selective_scan(*a, backend="triton"), inputs, True)
    monkeypatch.setenv(dispatch.BACKEND_ENV, "triton")  # forced for the process: the same refusal
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        run(selective_scan, inputs, True)


def test_environment_variable_forces_the_backend_of_every_scan(monkeypatch):
    from AttentionMambaSegLib.ops.ss2d import ss2d_scan, ss2d_scan_unfused

    inputs = [t.float() for t in make_inputs(1, 8, 16, 30, 2, seed=4)]
    ref = run(selective_scan_reference, [t.double() for t in inputs], True)
    monkeypatch.setenv(dispatch.BACKEND_ENV, "torch")
    assert dispatch.resolve_backend("cpu") == "torch"
    monkeypatch.setenv(dispatch.BACKEND_ENV, "triton")
    assert dispatch.resolve_backend("cpu") == "triton"
    before = scan_triton.launch_count()
    assert rel_err(run(selective_scan, inputs, True), ref) <= 1e-5
    # SS2D's four-direction scan goes through the dispatcher too
    g = torch.Generator().manual_seed(0)
    K, D, N, R = 4, 8, 16, 2
    params = [
        torch.randn(K, R + 2 * N, D, generator=g) / D**0.5,
        torch.randn(K, D, R, generator=g),
        torch.randn(K, D, generator=g) - 2,
        torch.log(torch.rand(K * D, N, generator=g) * 8 + 0.5),
        torch.randn(K * D, generator=g),
    ]
    x = torch.randn(1, D, 3, 5, generator=g)
    want = ss2d_scan_unfused(x.double(), *[p.double() for p in params], backend="torch")
    assert rel_err(ss2d_scan(x, *params), want) <= 1e-5
    assert scan_triton.launch_count() == before + 2  # one launch per scan, both on Triton
    monkeypatch.setenv(dispatch.BACKEND_ENV, "gpu")
    with pytest.raises(ValueError, match=dispatch.BACKEND_ENV):
        dispatch.resolve_backend("cpu")


def test_auto_picks_triton_for_cuda_tensors_when_mamba_ssm_is_absent(monkeypatch, caplog):
    """CUDA is faked only where the dispatcher reads the device type: the probe and the scan really run
    (on CPU tensors, in the interpreter)."""
    if dispatch._check_backend("cuda", torch.device("cpu"))[0]:
        pytest.skip("mamba-ssm runs here")
    monkeypatch.setattr(dispatch, "_verdicts", {})
    monkeypatch.setattr(dispatch, "_device_type", lambda device: "cuda")
    with caplog.at_level(logging.INFO, logger=dispatch.__name__):
        assert dispatch.resolve_backend("cpu") == "triton"
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "cuda unavailable" in messages and "triton agrees with torch" in messages
    inputs = [t.float() for t in make_inputs(2, 8, 16, 45, 2, seed=2)]
    before = scan_triton.launch_count()
    y = run(selective_scan, inputs, True)
    assert scan_triton.launch_count() == before + 1
    assert rel_err(y, run(selective_scan_reference, [t.double() for t in inputs], True)) <= 1e-5
    assert "triton agrees" in dispatch.scan_backend_report("cpu")


def test_auto_falls_back_to_torch_on_cuda_with_a_warning_naming_the_cause(monkeypatch, caplog):
    def broken():
        raise ImportError("No module named 'triton'")

    monkeypatch.setattr(dispatch, "_device_type", lambda device: "cuda")
    monkeypatch.setitem(dispatch._SCANS, "triton", broken)
    with caplog.at_level(logging.WARNING, logger=dispatch.__name__):
        assert dispatch.resolve_backend("cpu") == "torch"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert (
        "slow torch scan" in warnings[0]
        and "triton unavailable: ImportError: No module named 'triton'" in warnings[0]
        and "pip install triton" in warnings[0]
    )


def test_device_auto_skips_a_gpu_that_would_run_only_the_torch_scan(monkeypatch):
    from AttentionMambaSegLib import devices

    if dispatch.resolve_backend("cpu") != "cpu-fused":
        pytest.skip("the CPU runs the torch scan here (no numba): a GPU is never slower")
    if torch.cuda.is_available():
        pytest.skip("a real GPU is present")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Test GPU")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_probe_device", lambda device: None)  # its convolution "passes"
    # The scan checks really run on the "cuda" device: mamba-ssm is absent and Triton cannot move the probe
    # to a GPU this torch build lacks, so the GPU would run the torch scan only.
    device, reason = devices.select_device("auto")
    assert device == torch.device("cpu")
    assert "CUDA GPU Test GPU not used" in reason and "only the slow torch selective scan" in reason
    assert "pip install triton" in reason
    assert devices.select_device("cuda")[0] == torch.device("cuda", 0)  # asked for explicitly: still given


def test_doctor_on_cuda_without_cuda_fails_clearly(capsys):
    from AttentionMambaSegLib import cli

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert cli.main(["doctor", "--device", "cuda"]) == 1
    captured = capsys.readouterr()
    assert "doctor: device 'cuda' is not usable" in captured.err and "CUDA is not available" in captured.err
    assert "not checked (no usable device)" in captured.out
    assert cli.main(["doctor", "--device", "cpu"]) == 0
    assert "scan backend (cpu)" in capsys.readouterr().out


@pytest.mark.slow
def test_network_forward_on_triton_has_a_fixed_number_of_kernel_launches(monkeypatch):
    from AttentionMambaSegLib.model.network import AttentionMamba

    monkeypatch.setenv(dispatch.BACKEND_ENV, "triton")
    torch.manual_seed(0)
    net = AttentionMamba(1, 4).eval()
    counts = {}
    with torch.no_grad():
        net(torch.randn(1, 1, 32, 32))  # the backend check runs once, outside the count
        for size in (32, 64):
            before = scan_triton.launch_count()
            with scan_triton.KernelOps() as ops:
                net(torch.randn(1, 1, size, size))
            counts[size] = (ops.count + scan_triton.launch_count() - before, scan_triton.launch_count() - before)
    assert counts[32][1] == counts[64][1] == 12  # 8 SS2D scans + 4 one-dimensional Mambas, one launch each
    assert counts[32][0] == counts[64][0] < 1000


@pytest.mark.slow
def test_gpu_check_dry_run_needs_no_simpleitk(tmp_path):
    out = tmp_path / "gpu_check.json"
    code = (
        "import runpy, sys; sys.modules['SimpleITK'] = None; "
        f"sys.argv = ['gpu_check.py', '--dry', '--out', {str(out)!r}]; "
        f"runpy.run_path({str(REPO / 'benchmarks' / 'gpu_check.py')!r}, run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "dry" and report["header"]["triton"]
    assert report["scan_correctness"] and all(r["passed"] for r in report["scan_correctness"])
    assert {r["backend"] for r in report["network"]} >= {"triton", "torch"}
    assert report["reference_slices"]["labels_equal"] is True
    assert report["reference_slices"]["max_logit_error"] <= 1e-3
    assert report["launches"]["triton"]["per_forward"] < 1000
    assert "GPU:" in done.stdout and "triton" in done.stdout
