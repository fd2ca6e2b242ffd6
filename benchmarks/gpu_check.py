"""GPU check: the selective scan and the whole network on one NVIDIA GPU, in under 6 minutes.

Needs only torch, triton, numpy and safetensors (plus this repository); no SimpleITK, no MONAI. It measures

1. scan correctness at the network's real shapes (captured from a forward pass of a real slice) against the
   torch scan, forward and backward, with every output and gradient buffer pre-filled with NaN so that an
   element a kernel fails to write shows up;
2. the Triton scan's time against the bytes-moved floor (inputs read once, output written once, at the
   copy bandwidth measured on the same GPU), and a few block sizes;
3. per-slice time of the whole network at 224 and 256, batch 1, 8 and 32, for each available backend
   (cuda = mamba-ssm, triton, torch), and of a plain-torch U-Net of similar size in the same run;
4. kernel counts of one forward: aten operators that launch a kernel (dispatch-mode counter) and, on a
   GPU, real kernels from ``torch.profiler``;
5. one training step at 192 x 192, batch 24, bf16 autocast, and the time the paper's schedule
   (150 epochs of ACDC's 1,304 training slices, arXiv 2402.02286 Sec. 4) would take at that rate;
6. the bundled cardiac model on real ACDC slices preprocessed and run on the CPU beforehand
   (``gpu_check_reference.npz``): labels equal and logits within 1e-3 (relative to the largest logit).

It writes one JSON file and prints a table whose header names the GPU, driver, torch and Triton versions.

Usage (from the repository root):
    python benchmarks/gpu_check.py                  # on the GPU machine; writes gpu_check.json
    python benchmarks/gpu_check.py --dry            # CPU, Triton's interpreter, small shapes (a test runs it)
    python benchmarks/gpu_check.py --save-reference # CPU, needs SimpleITK and the ACDC data: the .npz above
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

if "--dry" in sys.argv:  # Triton reads this when it is first imported: before torch can import it
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "AttentionMambaSeg"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from AttentionMambaSegLib.ops import dispatch, scan_triton  # noqa: E402
from AttentionMambaSegLib.ops.scan_torch import selective_scan_torch  # noqa: E402

REFERENCE = Path(__file__).with_name("gpu_check_reference.npz")
MODEL_DIR = REPO / "AttentionMambaSeg" / "Resources" / "Models" / "cardiac-acdc"
#: ACDC fold-0 training slices and the paper's schedule (arXiv 2402.02286 Sec. 4: 150 epochs, batch 24).
TRAIN_SLICES, PAPER_EPOCHS = 1304, 150

FULL = dict(sizes=(224, 256), batches=(1, 8, 32), train=(192, 24), reps=3, scan_batch=8, budget_s=330)
DRY = dict(sizes=(32,), batches=(1,), train=(32, 2), reps=1, scan_batch=1, budget_s=600)


# ------------------------------------------------------------------------------------------- helpers
def count_launches(fn) -> int:
    """Kernel-launching aten operators plus Triton launches issued by ``fn()``."""
    before = scan_triton.launch_count()
    with scan_triton.KernelOps() as ops:
        fn()
    return ops.count + scan_triton.launch_count() - before


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, reps: int) -> float:
    """Minimum wall time of ``reps`` calls after one warm-up call, in seconds."""
    fn()
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def rel_err(a, b) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if not torch.isfinite(a).all():
        return float("inf")
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


class forced_backend:
    """Force the scan backend of every scan in the process (``ATTENTION_MAMBA_SEG_SCAN_BACKEND``)."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.old = os.environ.get(dispatch.BACKEND_ENV)
        os.environ[dispatch.BACKEND_ENV] = self.name

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop(dispatch.BACKEND_ENV, None)
        else:
            os.environ[dispatch.BACKEND_ENV] = self.old


def available_backends(device) -> list[str]:
    names = []
    for name in ("cuda", "triton", "torch"):
        if name == "cuda" and device.type != "cuda":
            continue
        try:
            if dispatch.resolve_backend(device, name) == name:
                names.append(name)
        except ValueError as e:
            print(f"backend {name}: not available ({e})", file=sys.stderr)
    return names


def header(device, dry: bool) -> dict:
    import triton

    driver = "n/a"
    if device.type == "cuda":
        try:
            driver = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                .stdout.strip()
                .splitlines()[0]
            )
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            driver = f"unknown ({type(e).__name__})"
    return {
        "gpu": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else "none (dry run on the CPU, Triton interpreter)",
        "driver": driver,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.date.today().isoformat(),
        "mode": "dry" if dry else "full",
    }


# ------------------------------------------------------------------------------------- plain U-Net
class PlainUNet(nn.Module):
    """A MONAI-free 2-D U-Net (double 3x3 conv + BN + ReLU per level, max-pool, transposed-conv up)."""

    def __init__(self, in_channels=1, num_classes=4, features=(44, 88, 176, 352, 704)):
        super().__init__()

        def block(i, o):
            return nn.Sequential(
                nn.Conv2d(i, o, 3, padding=1, bias=False),
                nn.BatchNorm2d(o),
                nn.ReLU(inplace=True),
                nn.Conv2d(o, o, 3, padding=1, bias=False),
                nn.BatchNorm2d(o),
                nn.ReLU(inplace=True),
            )

        self.down = nn.ModuleList()
        c = in_channels
        for f in features:
            self.down.append(block(c, f))
            c = f
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(features[i + 1], features[i], 2, stride=2) for i in reversed(range(len(features) - 1))
        )
        self.dec = nn.ModuleList(block(2 * features[i], features[i]) for i in reversed(range(len(features) - 1)))
        self.head = nn.Conv2d(features[0], num_classes, 1)

    def forward(self, x):
        skips = []
        for i, blk in enumerate(self.down):
            x = blk(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips[:-1])):
            x = dec(torch.cat([up(x), skip], 1))
        return self.head(x)


def parameters(net) -> int:
    return sum(p.numel() for p in net.parameters())


# ----------------------------------------------------------------------------------------- sections
def capture_scans(net, x) -> list[dict]:
    """The inputs of every distinct scan of one forward pass (shape, options), on the Triton backend."""
    seen, calls = set(), []
    original = scan_triton.selective_scan_triton

    def record(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, **kw):
        key = (tuple(u.shape), tuple(B.shape), D is not None, z is not None, delta_bias is not None, delta_softplus)
        if key not in seen:
            seen.add(key)
            calls.append(
                dict(
                    args=[t.detach().clone() for t in (u, delta, A, B, C)],
                    kwargs=dict(
                        D=None if D is None else D.detach().clone(),
                        z=None if z is None else z.detach().clone(),
                        delta_bias=None if delta_bias is None else delta_bias.detach().clone(),
                        delta_softplus=delta_softplus,
                    ),
                )
            )
        return original(u, delta, A, B, C, D, z, delta_bias, delta_softplus, **kw)

    scan_triton.selective_scan_triton = record
    try:
        with forced_backend("triton"), torch.no_grad():
            net(x)
    finally:
        scan_triton.selective_scan_triton = original
    return calls


def scan_correctness(calls) -> list[dict]:
    rows = []
    scan_triton.FILL_WITH_NAN = True
    try:
        for call in calls:
            args, kw = call["args"], call["kwargs"]
            gout = torch.randn(args[0].shape, device=args[0].device, generator=None)

            def grads(fn):
                leaves = [t.clone().requires_grad_() for t in args]
                kws = {k: (v.clone().requires_grad_() if torch.is_tensor(v) else v) for k, v in kw.items()}
                y = fn(*leaves, **kws)
                g = torch.autograd.grad((y * gout).sum(), leaves + [v for v in kws.values() if torch.is_tensor(v)])
                return y, g

            y_t, g_t = grads(scan_triton.selective_scan_triton)
            y_r, g_r = grads(selective_scan_torch)
            forward = rel_err(y_t, y_r)
            backward = max(rel_err(a, b) for a, b in zip(g_t, g_r))
            rows.append(
                dict(
                    u=list(args[0].shape),
                    B=list(args[3].shape),
                    forward_rel_err=forward,
                    backward_rel_err=backward,
                    passed=forward <= 1e-4 and backward <= 1e-3,
                )
            )
    finally:
        scan_triton.FILL_WITH_NAN = False
    return rows


def scan_speed(call, device, reps: int, dry: bool) -> dict:
    args, kw = call["args"], call["kwargs"]
    tensors = [*args, *[v for v in kw.values() if torch.is_tensor(v)]]
    moved = sum(t.numel() * t.element_size() for t in tensors) + args[0].numel() * 4  # inputs read + y written
    big = torch.empty(64 * 2**20 if not dry else 2**20, device=device)
    copy_s = timed(lambda: big.clone(), device, reps)
    bandwidth = 2 * big.numel() * 4 / copy_s  # bytes read + written per second
    result = dict(
        u=list(args[0].shape),
        B=list(args[3].shape),
        bytes_moved=moved,
        copy_bandwidth_GBps=bandwidth / 1e9,
        floor_ms=1e3 * moved / bandwidth,
        configs=[],
    )
    configs = [(None, None)] if dry else [(None, None), (2, 64), (4, 32), (4, 128), (8, 32), (8, 64), (16, 32)]
    with torch.no_grad():
        for block_d, tile in configs:
            try:
                s = timed(
                    lambda: scan_triton.selective_scan_triton(*args, **kw, block_d=block_d, tile=tile), device, reps
                )
                result["configs"].append(dict(block_d=block_d or "default", tile=tile or "default", forward_ms=1e3 * s))
            except Exception as e:  # noqa: BLE001 - a block size that does not compile is reported
                result["configs"].append(dict(block_d=block_d, tile=tile, error=f"{type(e).__name__}: {e}"[:200]))
    leaves = [t.clone().requires_grad_() for t in args]
    gout = torch.randn(args[0].shape, device=device)
    result["forward_backward_ms"] = 1e3 * timed(
        lambda: torch.autograd.grad((scan_triton.selective_scan_triton(*leaves, **kw) * gout).sum(), leaves),
        device,
        reps,
    )
    result["forward_ms"] = result["configs"][0].get("forward_ms")
    if result["forward_ms"]:
        result["floor_fraction"] = result["floor_ms"] / result["forward_ms"]
    return result


def network_speed(net, unet, device, backends, cfg, deadline) -> list[dict]:
    rows = []
    with torch.no_grad():
        for size in cfg["sizes"]:
            for batch in cfg["batches"]:
                x = torch.randn(batch, 1, size, size, device=device)
                for name in [*backends, "plain-unet"]:
                    if time.monotonic() > deadline:
                        rows.append(dict(backend=name, size=size, batch=batch, skipped="time budget"))
                        continue
                    try:
                        if name == "plain-unet":
                            s = timed(lambda: unet(x), device, cfg["reps"])
                        else:
                            with forced_backend(name):
                                s = timed(lambda: net(x), device, cfg["reps"])
                        rows.append(
                            dict(
                                backend=name,
                                size=size,
                                batch=batch,
                                ms_per_slice=1e3 * s / batch,
                                slices_per_s=batch / s,
                            )
                        )
                    except torch.cuda.OutOfMemoryError as e:
                        rows.append(dict(backend=name, size=size, batch=batch, error=f"out of memory: {e}"[:200]))
                        torch.cuda.empty_cache()
    return rows


def launches(net, unet, device, backends, size) -> dict:
    out = {}
    x = torch.randn(1, 1, size, size, device=device)
    with torch.no_grad():
        for name in [*backends, "plain-unet"]:
            run = (lambda: unet(x)) if name == "plain-unet" else (lambda: net(x))
            with forced_backend(name if name != "plain-unet" else "torch"):
                run()  # warm-up: backend checks and compilation outside the counts
                entry = dict(per_forward=count_launches(run))
                if device.type == "cuda":
                    from torch.profiler import ProfilerActivity, profile

                    sync(device)
                    with profile(activities=[ProfilerActivity.CUDA]) as prof:
                        run()
                        sync(device)
                    entry["cuda_kernels"] = sum(
                        1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                    )
            out[name] = entry
    return out


def training_step(net, device, size, batch, reps) -> dict:
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, size, size, device=device)
    y = torch.randint(0, 4, (batch, size, size), device=device)
    bf16 = device.type == "cuda"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            outputs = net(x)
            loss = sum(nn.functional.cross_entropy(o.float(), y) for o in outputs)
        loss.backward()
        opt.step()

    with forced_backend("auto"):
        s = timed(step, device, reps)
    net.eval()
    steps = PAPER_EPOCHS * -(-TRAIN_SLICES // 24)
    return dict(
        size=size,
        batch=batch,
        bf16=bf16,
        backend=dispatch.resolve_backend(device),
        seconds_per_step=s,
        paper_schedule_steps=steps,
        paper_schedule_minutes=steps * s / 60 * 24 / batch,
    )


def reference_slices(device, backends, dry: bool) -> dict:
    ref = np.load(REFERENCE)
    n = 1 if dry else len(ref["images"])
    images = torch.from_numpy(ref["images"][:n]).to(device)
    want_logits = torch.from_numpy(ref["logits"][:n])
    want_labels = torch.from_numpy(ref["labels"][:n].astype(np.int64))
    net, _ = load_bundled_model(device)
    result = dict(slices=n, size=list(images.shape[-2:]), reference_backend=str(ref["backend"]), by_backend={})
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # float32 as on the CPU
    try:
        for name in backends if not dry else ["auto"]:
            with forced_backend(name), torch.no_grad():
                logits = net(images).float().cpu()
            err = float((logits - want_logits).abs().max() / want_logits.abs().max())
            result["by_backend"][name] = dict(
                labels_equal=bool(torch.equal(logits.argmax(1), want_labels)),
                max_logit_error=err,
                max_abs_logit_error=float((logits - want_logits).abs().max()),
                differing_pixels=int((logits.argmax(1) != want_labels).sum()),
            )
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    result["labels_equal"] = all(v["labels_equal"] for v in result["by_backend"].values())
    result["max_logit_error"] = max(v["max_logit_error"] for v in result["by_backend"].values())
    result["passed"] = result["labels_equal"] and result["max_logit_error"] <= 1e-3
    return result


def load_bundled_model(device):
    """The bundled cardiac model (float32, eval) and its card, loaded by the model package (which needs
    neither SimpleITK nor the inference stack).

    Raises:
        ModelIntegrityError: when the weights file's SHA-256 differs from model.json's.
        ValueError: model.json is invalid or the weights do not fit the network.
    """
    from AttentionMambaSegLib.package import ModelPackage

    package = ModelPackage(MODEL_DIR)
    return package.build_network(device), package.card


# ------------------------------------------------------------------------------------ reference file
def save_reference(data_dir: Path, cases: list[str], out: Path = REFERENCE, size: int = 160) -> None:
    """Preprocess one real ACDC slice per case on the CPU, run the bundled cardiac model on them and save
    the images, logits and labels (needs SimpleITK). Preprocessing as the model card says: z-score over
    the volume, in-plane resampling to the target spacing (bilinear), a ``size`` crop around the heart."""
    import SimpleITK as sitk

    net, card = load_bundled_model("cpu")
    assert card.target_spacing is not None  # the cardiac model is trained at a fixed spacing
    target = card.target_spacing
    images, truths = [], []
    for case in cases:
        img = sitk.ReadImage(str(data_dir / "imagesTr" / f"{case}_0000.nii.gz"))
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / "labelsTr" / f"{case}.nii.gz")))
        vol = sitk.GetArrayFromImage(img).astype(np.float32)  # (S, H, W)
        vol = (vol - vol.mean()) / (vol.std() + 1e-8)
        k = int(np.argmax((lab > 0).sum(axis=(1, 2))))  # the slice with the most heart
        sx, sy = img.GetSpacing()[:2]
        h, w = vol.shape[1:]
        new = (round(h * sy / target[0]), round(w * sx / target[1]))
        im = torch.nn.functional.interpolate(
            torch.from_numpy(vol[k])[None, None], size=new, mode="bilinear", align_corners=False
        )[0, 0]
        lb = torch.nn.functional.interpolate(
            torch.from_numpy(lab[k].astype(np.float32))[None, None], size=new, mode="nearest"
        )[0, 0]
        ys, xs = torch.nonzero(lb > 0, as_tuple=True)
        cy, cx = int(ys.float().mean()), int(xs.float().mean())
        half = size // 2
        im = torch.nn.functional.pad(im, (half, half, half, half))[cy : cy + size, cx : cx + size]
        lb = torch.nn.functional.pad(lb, (half, half, half, half))[cy : cy + size, cx : cx + size]
        images.append(im[None].numpy())
        truths.append(lb.numpy().astype(np.uint8))
    x = torch.from_numpy(np.stack(images)).float()
    with torch.no_grad():
        logits = net(x).float()
    np.savez_compressed(
        out,
        images=x.numpy(),
        logits=logits.numpy(),
        labels=logits.argmax(1).numpy().astype(np.uint8),
        ground_truth=np.stack(truths),
        cases=np.array(cases),
        model=card.id,
        model_version=card.version,
        backend=dispatch.resolve_backend("cpu"),
        torch=torch.__version__,
    )
    dice = []
    for c in (1, 2, 3):
        p, t = logits.argmax(1).numpy() == c, np.stack(truths) == c
        dice.append(2 * (p & t).sum() / max(1, p.sum() + t.sum()))
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {len(cases)} slices of {size}x{size}, "
        f"backend {dispatch.resolve_backend('cpu')}, Dice against the ground truth {np.round(dice, 3).tolist()}"
    )


# ------------------------------------------------------------------------------------------- report
def print_table(report: dict) -> None:
    h = report["header"]
    print(
        f"GPU: {h['gpu']} | driver {h['driver']} | torch {h['torch']} (CUDA {h['cuda']}) | triton {h['triton']} "
        f"| {h['date']} | mode {h['mode']}"
    )
    print("\nScan correctness (Triton vs torch scan, NaN-prefilled outputs)")
    print(f"{'u shape':>22} {'B shape':>22} {'fwd rel err':>12} {'bwd rel err':>12} ok")
    for r in report["scan_correctness"]:
        print(
            f"{str(r['u']):>22} {str(r['B']):>22} {r['forward_rel_err']:12.1e} {r['backward_rel_err']:12.1e} "
            f"{'yes' if r['passed'] else 'NO'}"
        )
    s = report.get("scan_speed")
    if s:
        print(
            f"\nTriton scan at u {s['u']}: forward {s['forward_ms']:.3f} ms, forward+backward "
            f"{s['forward_backward_ms']:.3f} ms; bytes-moved floor {s['floor_ms']:.3f} ms "
            f"({s['copy_bandwidth_GBps']:.0f} GB/s copy)"
        )
        for c in s["configs"]:
            print(
                f"  block_d {c['block_d']}, tile {c['tile']}: "
                + (f"{c['forward_ms']:.3f} ms" if "forward_ms" in c else c["error"])
            )
    counts = ", ".join(f"{p}: {n / 1e6:.1f} M parameters" for p, n in report["parameters"].items())
    print(f"\nWhole network, inference ({counts})")
    print(f"{'backend':>11} {'size':>5} {'batch':>5} {'ms/slice':>10} {'slices/s':>10}")
    for r in report["network"]:
        if "ms_per_slice" in r:
            print(
                f"{r['backend']:>11} {r['size']:>5} {r['batch']:>5} {r['ms_per_slice']:10.2f} {r['slices_per_s']:10.1f}"
            )
        else:
            print(f"{r['backend']:>11} {r['size']:>5} {r['batch']:>5} {r.get('skipped') or r.get('error')}")
    print("\nKernel launches per forward (batch 1)")
    for name, e in report["launches"].items():
        print(
            f"{name:>11} aten+triton {e['per_forward']:>7}"
            + (f"   CUDA kernels {e['cuda_kernels']}" if "cuda_kernels" in e else "")
        )
    t = report["training"]
    print(
        f"\nTraining step {t['size']}x{t['size']}, batch {t['batch']}, bf16 {t['bf16']}, scan {t['backend']}: "
        f"{t['seconds_per_step']:.3f} s; paper schedule ({t['paper_schedule_steps']} steps of 24) "
        f"about {t['paper_schedule_minutes']:.1f} min"
    )
    r = report["reference_slices"]
    print(
        f"\nBundled cardiac model on {r['slices']} real slice(s) {r['size']} (reference: CPU, {r['reference_backend']})"
    )
    for name, v in r["by_backend"].items():
        print(
            f"{name:>11} labels equal {v['labels_equal']} ({v['differing_pixels']} px differ), "
            f"max logit error {v['max_logit_error']:.1e} (abs {v['max_abs_logit_error']:.1e})"
        )
    print(f"\nall checks passed: {report['passed']} ({report['seconds']:.0f} s)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry", action="store_true", help="CPU, Triton interpreter, small shapes")
    parser.add_argument("--out", default="gpu_check.json", help="JSON report (default gpu_check.json)")
    parser.add_argument(
        "--save-reference",
        action="store_true",
        help="write benchmarks/gpu_check_reference.npz on the CPU (needs SimpleITK and ACDC)",
    )
    parser.add_argument(
        "--data", default=str(REPO.parent / "shared" / "datasets" / "ACDC"), help="ACDC folder for --save-reference"
    )
    args = parser.parse_args(argv)
    if args.save_reference:
        save_reference(
            Path(args.data), ["patient019_frame01", "patient021_frame02", "patient029_frame01"]
        )  # fold-0 validation cases
        return 0
    start = time.monotonic()
    cfg = DRY if args.dry else FULL
    if args.dry:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible to PyTorch; use --dry for a CPU run", file=sys.stderr)
        return 1
    else:
        device = torch.device("cuda", 0)
    deadline = start + cfg["budget_s"]
    torch.manual_seed(0)
    from AttentionMambaSegLib.model.network import AttentionMamba

    report = dict(mode="dry" if args.dry else "full", header=header(device, args.dry))
    net = AttentionMamba(1, 4).to(device).eval()
    unet = PlainUNet().to(device).eval()
    report["parameters"] = {"attention-mamba": parameters(net), "plain-unet": parameters(unet)}
    backends = available_backends(device)
    report["backends"] = backends
    size0 = cfg["sizes"][0]
    calls = capture_scans(net, torch.randn(1, 1, size0, size0, device=device))
    report["scan_correctness"] = scan_correctness(calls)
    ss2d = max(calls, key=lambda c: c["args"][0].shape[1])  # the SS2D scan (4 x 256 channels)
    if cfg["scan_batch"] > 1:
        ss2d = capture_scans(net, torch.randn(cfg["scan_batch"], 1, size0, size0, device=device))
        ss2d = max(ss2d, key=lambda c: c["args"][0].shape[1])
    report["scan_speed"] = scan_speed(ss2d, device, cfg["reps"], args.dry)
    report["network"] = network_speed(net, unet, device, backends, cfg, deadline)
    report["launches"] = launches(net, unet, device, backends, size0)
    report["training"] = training_step(net, device, *cfg["train"], reps=cfg["reps"])
    report["reference_slices"] = reference_slices(device, backends, args.dry)
    report["seconds"] = time.monotonic() - start
    report["passed"] = all(r["passed"] for r in report["scan_correctness"]) and report["reference_slices"]["passed"]
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print_table(report)
    print(f"wrote {args.out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
