"""Segmentation losses of Attention-Mamba (arXiv 2402.02286 v4, Sec. 4).

Multi-class models (K > 1 output channels, softmax): each output costs
``0.5 * cross-entropy + 0.5 * soft Dice``, where the soft Dice uses softmax probabilities, a one-hot
target, all K classes including background, sums over the whole batch (not per sample), smooth 1e-5, and
the loss is ``1 - mean over classes of Dice``.

Binary models (K = 1 output channel, sigmoid): each output costs ``BCE + soft Dice`` with sigmoid
probabilities, smooth 1, Dice computed per sample and averaged over the batch.

Deep supervision: the network returns 9 logits maps in training mode (fused, four branch score maps,
four auxiliary maps); their losses are summed with weights 1, 1, 1, 1, 1, 0.25, 0.25, 0.25, 0.25 (a
weighted sum, not normalised by the sum of the weights, as in the authors' recipe).

All functions take logits (not probabilities) and compute in float32 whatever the logits dtype is, so
that they are safe under bf16 autocast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "DEEP_SUPERVISION_WEIGHTS",
    "soft_dice_loss",
    "binary_soft_dice_loss",
    "segmentation_loss",
    "deep_supervision_loss",
]

#: Weights of the 9 training outputs: [fused, S1..S4, aux1..aux4].
DEEP_SUPERVISION_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 0.25, 0.25, 0.25, 0.25)


def _check_pair(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, K, H, W), got shape {tuple(logits.shape)}")
    if target.ndim != 3 or target.shape[0] != logits.shape[0] or target.shape[1:] != logits.shape[2:]:
        raise ValueError(
            f"target must be (B, H, W) = {(logits.shape[0], *logits.shape[2:])} to match logits "
            f"{tuple(logits.shape)}, got {tuple(target.shape)}"
        )


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    smooth: float = 1e-5,
    sum_across: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Multi-class soft Dice loss over the batch (softmax, one-hot, all classes incl. background).

    Args:
        logits: (B, K, H, W) float logits, K >= 2.
        target: (B, H, W) integer labels in ``[0, K)``.
        smooth: added to numerator and denominator of every class Dice.

    Returns:
        0-dim float32 tensor: ``1 - mean_k (2 sum(p_k g_k) + s) / (sum(p_k) + sum(g_k) + s)``, the sums
        running over batch and pixels.

    Raises:
        ValueError: if the shapes do not match or K < 2.
    """
    _check_pair(logits, target)
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError("soft_dice_loss needs K >= 2 channels; use binary_soft_dice_loss for K = 1")
    probabilities = torch.softmax(logits.float(), dim=1)
    one_hot = F.one_hot(target.long(), num_classes).permute(0, 3, 1, 2).to(probabilities.dtype)
    dims = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dims)
    denominator = probabilities.sum(dims) + one_hot.sum(dims)
    if sum_across is not None:
        sums = sum_across(torch.cat([intersection, denominator]))
        intersection, denominator = sums[:num_classes], sums[num_classes:]
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    return 1.0 - dice.mean()


def binary_soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Binary soft Dice loss per sample (sigmoid), averaged over the batch.

    Args:
        logits: (B, 1, H, W) float logits.
        target: (B, H, W) labels, 0 = background, 1 = foreground (any dtype).
        smooth: added to numerator and denominator of every sample's Dice.

    Returns:
        0-dim float32 tensor: ``1 - mean_b Dice_b``.

    Raises:
        ValueError: if the shapes do not match or K != 1.
    """
    _check_pair(logits, target)
    if logits.shape[1] != 1:
        raise ValueError(f"binary_soft_dice_loss needs K = 1 channel, got {logits.shape[1]}")
    probabilities = torch.sigmoid(logits.float()[:, 0]).flatten(1)
    reference = target.float().flatten(1)
    intersection = (probabilities * reference).sum(1)
    dice = (2.0 * intersection + smooth) / (probabilities.sum(1) + reference.sum(1) + smooth)
    return 1.0 - dice.mean()


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, sum_across: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """Loss of one output map: 0.5 CE + 0.5 soft Dice (K > 1), or BCE + soft Dice (K = 1).

    Args:
        logits: (B, K, H, W) float logits.
        target: (B, H, W) integer labels in ``[0, K)`` (K > 1) or in {0, 1} (K = 1).

    Returns:
        0-dim float32 tensor.

    Raises:
        ValueError: if the shapes do not match, or a label is out of range.
    """
    _check_pair(logits, target)
    num_classes = logits.shape[1]
    if num_classes == 1:
        if target.numel() and int(target.max()) > 1:
            raise ValueError(f"a K = 1 (sigmoid) model needs labels in {{0, 1}}, found {int(target.max())}")
        bce = F.binary_cross_entropy_with_logits(logits.float()[:, 0], target.float())
        return bce + binary_soft_dice_loss(logits, target)
    if target.numel() and int(target.max()) >= num_classes:
        raise ValueError(f"label {int(target.max())} is out of range for K = {num_classes} classes")
    ce = F.cross_entropy(logits.float(), target.long())
    return 0.5 * ce + 0.5 * soft_dice_loss(logits, target, sum_across=sum_across)


def deep_supervision_loss(
    outputs: Sequence[torch.Tensor] | torch.Tensor,
    target: torch.Tensor,
    weights: Sequence[float] = DEEP_SUPERVISION_WEIGHTS,
    sum_across: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Weighted sum of :func:`segmentation_loss` over the network's training outputs.

    Args:
        outputs: the list of 9 (B, K, H, W) logits maps of the network in training mode (fused first),
            or a single (B, K, H, W) tensor (then the loss of that map alone, weight 1).
        target: (B, H, W) integer labels.
        weights: one weight per output.
        sum_across: passed to :func:`soft_dice_loss` (several ranks); the sigmoid loss is per sample.

    Returns:
        0-dim float32 tensor ``sum_i w_i * segmentation_loss(outputs[i], target)``.

    Raises:
        ValueError: if the number of outputs and weights differ.
    """
    if isinstance(outputs, torch.Tensor):
        return segmentation_loss(outputs, target, sum_across)
    if len(outputs) != len(weights):
        raise ValueError(f"got {len(outputs)} outputs but {len(weights)} loss weights")
    total = outputs[0].new_zeros((), dtype=torch.float32)
    for weight, logits in zip(weights, outputs):
        total = total + float(weight) * segmentation_loss(logits, target, sum_across)
    return total
