"""Tests of losses.py: hand-computed soft Dice, CE/BCE parts, deep-supervision weights, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from AttentionMambaSegLib.losses import (
    DEEP_SUPERVISION_WEIGHTS,
    binary_soft_dice_loss,
    deep_supervision_loss,
    segmentation_loss,
    soft_dice_loss,
)


def test_soft_dice_uniform_probabilities_by_hand():
    # K = 2, zero logits -> p = 0.5 everywhere; 2x2 image, one foreground pixel, batch 1.
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[0, 0], [0, 1]]])
    s = 1e-5
    dice_bg = (2 * 0.5 * 3 + s) / (0.5 * 4 + 3 + s)  # sum(p*g) = 1.5, sum p = 2, sum g = 3
    dice_fg = (2 * 0.5 * 1 + s) / (0.5 * 4 + 1 + s)
    expected = 1 - (dice_bg + dice_fg) / 2
    assert soft_dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_soft_dice_is_computed_over_the_batch_not_per_sample():
    # Sample 0 has no foreground, sample 1 all foreground: over the batch every class is present once.
    logits = torch.zeros(2, 2, 1, 2)
    target = torch.tensor([[[0, 0]], [[1, 1]]])
    s = 1e-5
    d = (2 * 0.5 * 2 + s) / (0.5 * 4 + 2 + s)  # same for both classes
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 - d, rel=1e-6)


def test_multiclass_loss_is_half_ce_plus_half_dice_and_near_zero_when_perfect():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8)
    target = torch.randint(0, 4, (2, 8, 8))
    expected = 0.5 * F.cross_entropy(logits, target) + 0.5 * soft_dice_loss(logits, target)
    assert segmentation_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    perfect = 50.0 * F.one_hot(target, 4).permute(0, 3, 1, 2).float()
    assert segmentation_loss(perfect, target).item() < 1e-6


def test_binary_dice_per_sample_with_smooth_one_by_hand():
    logits = torch.zeros(2, 1, 1, 2)  # p = 0.5
    target = torch.tensor([[[1, 0]], [[0, 0]]])
    d0 = (2 * 0.5 + 1) / (1.0 + 1 + 1)  # sample 0: sum(p*g) = .5, sum p = 1, sum g = 1
    d1 = (0 + 1) / (1.0 + 0 + 1)  # sample 1: empty target
    assert binary_soft_dice_loss(logits, target).item() == pytest.approx(1 - (d0 + d1) / 2, rel=1e-6)
    bce = F.binary_cross_entropy_with_logits(logits[:, 0], target.float())
    assert segmentation_loss(logits, target).item() == pytest.approx(bce.item() + 1 - (d0 + d1) / 2, rel=1e-6)
    assert bce.item() == pytest.approx(math.log(2), rel=1e-6)


def test_deep_supervision_weights_and_dtype():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    outputs = [logits] * 9
    total = deep_supervision_loss(outputs, target)
    assert sum(DEEP_SUPERVISION_WEIGHTS) == 6.0
    assert total.item() == pytest.approx(6.0 * segmentation_loss(logits, target).item(), rel=1e-6)
    total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    bf = deep_supervision_loss([logits.detach().bfloat16()] * 9, target)
    assert bf.dtype == torch.float32


def test_errors_are_clear():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="9 outputs|outputs but"):
        deep_supervision_loss([torch.zeros(1, 2, 4, 4)] * 3, target)
    with pytest.raises(ValueError, match="target must be"):
        segmentation_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 5))
    with pytest.raises(ValueError, match="out of range"):
        segmentation_loss(torch.zeros(1, 2, 4, 4), torch.full((1, 4, 4), 2))
    with pytest.raises(ValueError, match=r"\{0, 1\}"):
        segmentation_loss(torch.zeros(1, 1, 4, 4), torch.full((1, 4, 4), 2))
