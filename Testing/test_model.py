"""The Attention-Mamba network: parameter counts, shapes, gradients, bad input, backends agree."""

from __future__ import annotations

import pytest
import torch

from AttentionMambaSegLib.model import AttentionMamba
from AttentionMambaSegLib.ops import dispatch


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "in_channels,num_classes,expected", [(1, 9, 14_054_803), (1, 4, 14_049_483), (3, 1, 14_046_291)]
)
def test_parameter_counts_match_the_paper(in_channels, num_classes, expected):
    assert count(AttentionMamba(in_channels, num_classes)) == expected


def test_part_parameter_counts():
    m = AttentionMamba(1, 9)
    assert count(m.backbone) == 11_324_992
    assert count(m.ram) == 56_064
    assert count(m.branches) == 1_353_728
    assert count(m.fusion) == 4_843 + 32 * 9
    assert count(m.neck) == 123_904 + 443_136 + 443_136 + 295_424


def test_shapes_in_eval_and_training_mode():
    torch.manual_seed(0)
    m = AttentionMamba(1, 4)
    x = torch.randn(2, 1, 64, 96)
    m.eval()
    with torch.no_grad():
        y = m(x)
    assert y.shape == (2, 4, 64, 96) and torch.isfinite(y).all()
    m.train()
    outs = m(x)
    assert len(outs) == 9
    assert all(o.shape == (2, 4, 64, 96) for o in outs)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    m = AttentionMamba(3, 1).train()
    outs = m(torch.randn(2, 3, 64, 64))
    sum(o.float().pow(2).mean() for o in outs).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [n for n, p in m.named_parameters() if p.grad.abs().max() == 0]
    assert not zero


@pytest.mark.parametrize(
    "shape,match",
    [
        ((1, 3, 64, 64), "expected 1 input channel"),
        ((1, 64, 64), "4-D tensor"),
        ((1, 1, 64, 70), "multiples of 32"),
        ((1, 1, 0, 64), "multiples of 32"),
    ],
)
def test_bad_input_is_rejected(shape, match):
    m = AttentionMamba(1, 4).eval()
    with pytest.raises(ValueError, match=match):
        m(torch.zeros(shape))


def test_nan_input_is_rejected():
    m = AttentionMamba(1, 4).eval()
    x = torch.zeros(1, 1, 64, 64)
    x[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        m(x)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="in_channels"):
        AttentionMamba(2, 4)
    with pytest.raises(ValueError, match="num_classes"):
        AttentionMamba(1, 0)


def test_fused_and_torch_scans_give_the_same_logits_on_a_real_slice(acdc_slice, monkeypatch):
    image, _ = acdc_slice
    torch.manual_seed(0)
    m = AttentionMamba(1, 4).eval()
    from AttentionMambaSegLib.ops import ss2d

    outs, fused_calls = {}, []
    real_fused = ss2d.ss2d_scan_fused

    def spy(*args, **kwargs):
        fused_calls.append(1)
        return real_fused(*args, **kwargs)

    monkeypatch.setattr(ss2d, "ss2d_scan_fused", spy)
    for backend in ("torch", "cpu-fused"):
        # SS2D reads ss2d.resolve_backend (its own binding); the unfused path reads dispatch's
        for module in (ss2d, dispatch):
            monkeypatch.setattr(module, "resolve_backend", lambda device, b="auto", _n=backend: _n)
        fused_calls.clear()
        with torch.no_grad():
            outs[backend] = m(image)
        assert bool(fused_calls) == (backend == "cpu-fused"), backend  # each arm ran its own path
    err = (outs["cpu-fused"] - outs["torch"]).abs().max() / outs["torch"].abs().max()
    assert err <= 1e-4


def test_backbone_checkpoint_loading(tmp_path):
    from safetensors.torch import save_file

    src = AttentionMamba(1, 4)
    path = tmp_path / "resnet18_deep.safetensors"
    save_file({k: v.contiguous() for k, v in src.backbone.state_dict().items()}, str(path))
    dst = AttentionMamba(1, 4, backbone_checkpoint=path)
    for (k, a), b in zip(src.backbone.state_dict().items(), dst.backbone.state_dict().values()):
        assert torch.equal(a, b), k
    bad = {k: v for k, v in src.backbone.state_dict().items()}
    bad["stem.0.0.weight"] = torch.zeros(64, 3, 7, 7)  # a plain ResNet-18 7x7 stem
    save_file(bad, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="does not fit a deep-stem ResNet-18"):
        AttentionMamba(1, 4, backbone_checkpoint=tmp_path / "plain.safetensors")
    with pytest.raises(FileNotFoundError):
        AttentionMamba(1, 4, backbone_checkpoint=tmp_path / "missing.pt")


def test_two_training_steps_on_a_real_acdc_slice_lower_the_loss(acdc_slice):
    import torch.nn.functional as F

    image, labels = acdc_slice
    torch.manual_seed(1290)
    m = AttentionMamba(1, 4).train()
    opt = torch.optim.AdamW(m.parameters(), lr=5e-4)
    weights = [1, 1, 1, 1, 1, 0.25, 0.25, 0.25, 0.25]
    losses = []
    for _ in range(3):
        outs = m(image)
        loss = sum(w * F.cross_entropy(o, labels) for w, o in zip(weights, outs))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[2] < losses[0]
