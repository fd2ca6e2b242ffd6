"""Training of Attention-Mamba on an nnU-Net v2 raw dataset (arXiv 2402.02286 v4, Sec. 4).

The recipe of the paper, as one function, :func:`train`:

- 2D slices of the training cases (:mod:`data`, :mod:`preprocessing`), resampled in-plane to the median
  in-plane spacing of the training cases, normalised per modality (MRI z-score per case, RGB ImageNet);
- random fixed-size crops of whole slices (zero padding first when a slice is smaller than the patch);
- augmentation: rotation (p 0.2, any angle), horizontal and vertical flips (p 0.5 each), zoom (p 0.2,
  factor 0.7-1.4), gamma (p 0.3, 0.7-1.5). Rotation, zoom and the crop are one bilinear resampling
  (nearest neighbour for labels) straight from the whole slice, so no empty corners are cut in;
- deep supervision over the 9 training outputs (:mod:`losses`);
- AdamW (betas 0.9/0.999, weight decay on every parameter), cosine annealing stepped once per epoch
  with T_max = epochs / 3 and eta_min 1e-5 (the rate falls, rises and falls again);
- seed 1290; checkpoint selection by validation Dice (on the fold's validation cases).

Deviations from the paper, and additions:

- Validation each epoch runs on whole slices (zero-padded to a multiple of 32, no test-time
  augmentation) of a fixed random subset of the validation slices, sized so that validation costs about
  a tenth of the training time; the score is the Dice per class pooled over that subset, averaged over
  the foreground classes. The selected model is then scored per case (Dice and HD95 on the original
  grids, with flip test-time augmentation) by :func:`evaluation.evaluate`, and those figures go into
  model.json.
- ``time_budget_minutes`` fits the whole cosine schedule into a wall-clock budget: the first
  iterations are timed on a throw-away copy of the network, then epochs and iterations per epoch are set
  (:func:`plan_schedule`). An epoch is one pass over the training slices unless the budget says
  otherwise.
- Every epoch ends with a checkpoint; ``resume=True`` restores model, optimiser, scheduler, random
  number generators and epoch, so a resumed run is bit-identical to an uninterrupted one (same device,
  same number of threads).
- The ISIC-2018 recipe (lowest *training* loss) is not used: every model is selected on validation data.

Output folder::

    OUTPUT/
      model/                  the model package (model.json + model.safetensors), written at the end
      checkpoint_latest.pt    full training state after the last finished epoch (for --resume)
      checkpoint_best.pt      network weights of the best validation epoch
      training_config.json    the resolved settings and schedule
      training_log.csv        one row per epoch
      training_curves.png     train / validation loss and validation Dice
      val_metrics.csv, val_metrics.png   per-case evaluation of the final model (if final_evaluation)
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import pickle
import platform
import re
import shlex
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__
from .augmentation import NO_AUGMENTATION, PAPER, AugmentationParams, appearance
from .data import DatasetInfo, SliceData, default_normalization, load_slices, split_cases, target_inplane_spacing, validate_dataset
from .losses import deep_supervision_loss, segmentation_loss

__all__ = [
    "AugmentationParams",
    "SchedulePlan",
    "train",
    "plan_schedule",
    "sample_batch",
    "cosine_factor",
    "default_classes",
    "resolve_device",
]

logger = logging.getLogger(__name__)

#: Epochs of the cosine schedule are T_max = epochs / 3 long, with this floor of the learning rate.
ETA_MIN = 1e-5
#: Target share of an epoch spent on validation when the number of validation slices is automatic.
VALIDATION_SHARE = 0.10
#: Never validate on fewer slices than this (unless there are fewer).
MIN_VALIDATION_SLICES = 16
#: Fewest epochs a time-budgeted schedule may have (one fall, rise and fall of the cosine).
MIN_EPOCHS = 3
CHECKPOINT_LATEST = "checkpoint_latest.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"
PACKAGE_FOLDER = "model"

#: model.json "task" / "modality" of the shipped datasets.
KNOWN_DATASETS: dict[str, dict] = {
    "ACDC": {"task": "cardiac cine-MRI segmentation (short axis): RV, LV myocardium, LV", "modality": "MR"},
    "Hippocampus": {"task": "hippocampus segmentation on T1 MRI crops: anterior, posterior", "modality": "MR"},
    "PH2": {"task": "skin lesion segmentation on dermoscopy photographs", "modality": "dermoscopy (RGB)"},
}

#: Colours of labels without terminology: pairwise at least terminology.MIN_COLOR_DISTANCE apart.
_FALLBACK_COLORS = [[128, 174, 128], [241, 214, 145], [0, 151, 206], [216, 101, 79], [183, 156, 220],
                    [250, 210, 80], [60, 60, 200], [200, 60, 160], [20, 120, 60], [120, 70, 30], [90, 200, 200]]


# --------------------------------------------------------------------------------------------------
# small pure helpers


def cosine_factor(epoch: int, epochs: int, base_lr: float, eta_min: float = ETA_MIN) -> float:
    """Learning-rate multiplier of epoch ``epoch`` (0-based) for cosine annealing with T_max = epochs / 3.

    The closed form of ``torch.optim.lr_scheduler.CosineAnnealingLR`` continued past T_max (so the rate
    falls to eta_min at epochs/3, climbs back to the base rate at 2 epochs/3 and falls again):
    ``lr = eta_min + (base - eta_min) (1 + cos(pi epoch / T_max)) / 2``.

    Args:
        epoch: epochs finished so far (the scheduler's ``last_epoch``).
        epochs: total number of epochs.
        base_lr: the initial learning rate.
        eta_min: the floor.

    Returns:
        ``lr / base_lr``.
    """
    t_max = max(epochs / 3.0, 1e-9)
    lr = eta_min + (base_lr - eta_min) * (1.0 + math.cos(math.pi * epoch / t_max)) / 2.0
    return lr / base_lr


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a torch device.

    Uses :func:`AttentionMambaSegLib.inference.select_device` when that module is present, so training
    and inference agree.

    Raises:
        ValueError: for an unknown device string.
        RuntimeError: if CUDA is requested but not available.
    """
    try:
        from .inference import select_device
    except ImportError:  # inference not installed in a stripped-down checkout: plain rules
        select_device = None
    if select_device is not None:
        chosen, reason = select_device(device)
        logger.info("device: %s", reason)
        return torch.device(chosen)
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {text!r} requested but CUDA is not available; use --device cpu")
        return torch.device(text)
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {text!r}")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this x86 CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX BF16).

    Without either, PyTorch emulates bf16 on the CPU: on a 2-core AVX2 EPYC the ``--time-budget`` planner
    measured 34.3 s per training step of 8 x 128 x 128 crops under bf16 autocast and 4.7 s in float32
    (session 10), while on an AVX-512 BF16 machine bf16 was 1.1-1.5x faster than float32 (README, Speed).

    Args:
        cpuinfo: text of ``/proc/cpuinfo`` (read when None).

    Returns:
        True or False on Linux x86, where the ``flags`` line tells; None where it cannot be told
        (another OS or architecture, or no flags line).
    """
    if cpuinfo is None:
        if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
            return None
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return None


def _warn_if_bf16_is_emulated(device: torch.device, bf16: bool) -> None:
    if bf16 and device.type == "cpu" and cpu_has_native_bf16() is False:
        logger.warning(
            "bf16 autocast on a CPU without AVX-512 BF16 or AMX: PyTorch emulates bfloat16 here, which was "
            "measured 6-7x slower than float32 on such a CPU; drop --bf16 (bf16=False) on this machine"
        )


def default_classes(info: DatasetInfo, activation: str, reference_classes: list[dict] | None = None) -> list[dict]:
    """model.json "classes" for a dataset: names, colours, SNOMED CT codes.

    Each label's entry comes from, in this order: the dataset's own ``dataset.json`` block
    ``"label_terminology": {label name: {"name", "color", "snomed"}}``; the class of ``reference_classes``
    (the ``--init-from`` model) with the same ``dataset_label``; else the label's name, a palette colour
    and no codes, with a warning. The dataset's folder name plays no part.

    Args:
        info: the dataset.
        activation: "softmax" (one class per foreground label value) or "sigmoid" (label value 1).
        reference_classes: model.json classes of the model training starts from, or None.

    Returns:
        one dict per foreground class: label_value, name, dataset_label, color, snomed {category, type, ...}.

    Raises:
        ValueError: an invalid ``label_terminology`` entry (naming it), or classes that are not distinct.
    """
    from .terminology import ClassEntry, read_classes

    by_label = {c.get("dataset_label"): c for c in reference_classes or [] if c.get("dataset_label")}
    classes = []
    for i, (label_name, value) in enumerate(info.foreground_labels.items()):
        known = info.label_terminology.get(label_name) or by_label.get(label_name)
        if known is None:
            logger.warning(
                "no terminology for label '%s' of dataset %s: its segments get a name and colour but no "
                "SNOMED CT codes; add a 'label_terminology' block to its dataset.json (or edit the model.json "
                "written)", label_name, info.root,
            )
            known = {"name": label_name, "color": _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)]}
        entry = {"label_value": int(value), "name": known.get("name", label_name), "dataset_label": label_name,
                 "color": known.get("color"), "snomed": copy.deepcopy(known.get("snomed"))}
        classes.append(ClassEntry.from_dict(entry, f"dataset.json label_terminology.{label_name}").to_dict())
    read_classes(classes, f"classes of dataset {info.root}")  # distinct codes and colours
    if activation == "sigmoid" and len(classes) != 1:
        raise ValueError(f"a sigmoid model has one foreground class; dataset {info.name} has {len(classes)}")
    return classes


# --------------------------------------------------------------------------------------------------
# augmentation and batches


def _uniform(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _crop_padded(array: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    """Crop (..., size, size) at (top, left) of the last two axes; outside the array reads 0."""
    h, w = array.shape[-2:]
    out = array.new_zeros((*array.shape[:-2], size, size))
    y0, y1 = max(top, 0), min(top + size, h)
    x0, x1 = max(left, 0), min(left + size, w)
    if y1 > y0 and x1 > x0:
        out[..., y0 - top : y1 - top, x0 - left : x1 - left] = array[..., y0:y1, x0:x1]
    return out


def _sample_patch(
    image: np.ndarray, label: np.ndarray, patch_size: int, gen: torch.Generator, aug: AugmentationParams,
    rgb: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented random crop: image (C, P, P) float32, label (P, P) int64."""
    img = torch.from_numpy(image)
    lab = torch.from_numpy(label)
    h, w = lab.shape
    # The crop of the zero-padded slice (pad first, to at least the patch size, centred).
    top = int(torch.randint(0, max(h, patch_size) - patch_size + 1, (), generator=gen)) - (max(h, patch_size) - h) // 2
    left = int(torch.randint(0, max(w, patch_size) - patch_size + 1, (), generator=gen)) - (max(w, patch_size) - w) // 2
    # Draw every decision, used or not, so that the random stream does not depend on the outcomes.
    r_rot, angle = _uniform(gen), _uniform(gen, -math.pi, math.pi)
    r_zoom, zoom = _uniform(gen), _uniform(gen, *aug.zoom_range)
    r_hflip, r_vflip = _uniform(gen), _uniform(gen)
    r_gamma, gammas = _uniform(gen), [_uniform(gen, *aug.gamma_range) for _ in range(img.shape[0])]
    rotate, scale = r_rot < aug.p_rotation, r_zoom < aug.p_zoom
    if rotate or scale:
        a = angle if rotate else 0.0
        z = zoom if scale else 1.0
        c = (patch_size - 1) / 2.0
        q = torch.arange(patch_size, dtype=torch.float64) - c
        qy, qx = torch.meshgrid(q, q, indexing="ij")
        cos, sin = math.cos(a) / z, math.sin(a) / z
        # Source pixel (row, col) of every output pixel: rotate and scale about the crop centre.
        src_y = top + c + cos * qy - sin * qx
        src_x = left + c + sin * qy + cos * qx
        grid = torch.stack(
            [src_x * 2.0 / max(w - 1, 1) - 1.0, src_y * 2.0 / max(h - 1, 1) - 1.0], dim=-1
        ).to(torch.float32)[None]
        img_out = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        lab_out = F.grid_sample(lab[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=True)[0, 0]
        lab_out = lab_out.round().long()
    else:
        img_out = _crop_padded(img, top, left, patch_size)
        lab_out = _crop_padded(lab, top, left, patch_size).long()
    if r_hflip < aug.p_flip:
        img_out, lab_out = img_out.flip(-1), lab_out.flip(-1)
    if r_vflip < aug.p_flip:
        img_out, lab_out = img_out.flip(-2), lab_out.flip(-2)
    if r_gamma < aug.p_gamma:
        img_out = img_out.clone()
        for ch, gamma in enumerate(gammas):
            x = img_out[ch]
            lo, hi = x.min(), x.max()
            span = hi - lo
            if float(span) > 1e-8:
                img_out[ch] = ((x - lo) / span).clamp_(0, 1).pow_(gamma) * span + lo
    if aug.has_appearance:
        img_out = appearance(img_out, gen, aug, rgb)
    return img_out.contiguous(), lab_out.contiguous()


def sample_batch(
    slices: SliceData,
    indices: Sequence[int],
    patch_size: int,
    gen: torch.Generator,
    augmentation: AugmentationParams = PAPER,
    rgb: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random augmented crops of the given slices.

    Args:
        slices: the cached training slices.
        indices: one slice index per batch element.
        patch_size: P, the crop size in pixels (slices smaller than P are zero-padded first).
        gen: the generator all random decisions are drawn from (in a fixed order).
        augmentation: probabilities and ranges (:mod:`augmentation`).
        rgb: the slices are ImageNet-normalised RGB photographs (for the colour augmentations).

    Returns:
        ``(images, labels)``: float32 (B, C, P, P) normalised intensities and int64 (B, P, P) labels.
    """
    pairs = [_sample_patch(slices.images[i], slices.labels[i], patch_size, gen, augmentation, rgb) for i in indices]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def _epoch_indices(num_slices: int, count: int, gen: torch.Generator) -> list[int]:
    """``count`` slice indices: shuffled passes over all slices, a new permutation per pass."""
    out: list[int] = []
    while len(out) < count:
        out.extend(torch.randperm(num_slices, generator=gen).tolist())
    return out[:count]


# --------------------------------------------------------------------------------------------------
# validation


def _pad_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    dh, dw = h - x.shape[-2], w - x.shape[-1]
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def _validation_groups(slices: SliceData, patch_size: int, batch_size: int) -> list[tuple[list[int], int, int]]:
    """Batches of validation slices with the same padded size (multiples of 32, at least the patch)."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, lab in enumerate(slices.labels):
        h, w = lab.shape
        hp = max(patch_size, 32 * math.ceil(h / 32))
        wp = max(patch_size, 32 * math.ceil(w / 32))
        by_shape.setdefault((hp, wp), []).append(i)
    groups = []
    for (hp, wp), idx in sorted(by_shape.items()):
        for start in range(0, len(idx), batch_size):
            groups.append((idx[start : start + batch_size], hp, wp))
    return groups


@torch.no_grad()
def validate(
    network: torch.nn.Module,
    slices: SliceData,
    num_classes: int,
    patch_size: int,
    device: torch.device,
    batch_size: int = 4,
    bf16: bool = False,
    reduce: Callable[[list[float]], list[float]] | None = None,
) -> dict:
    """Loss and Dice of the fused output on whole validation slices (no augmentation, no TTA).

    Each slice is zero-padded (centred) to a multiple of 32 and at least ``patch_size``, predicted
    whole, and cropped back. Dice per class is pooled over all slices (sum of intersections over sum of
    sizes), 1 for a class absent from both prediction and reference.

    Args:
        network: the network (switched to eval mode here, restored after).
        slices: validation slices.
        num_classes: K (1 = sigmoid).
        patch_size: minimum padded size.
        device: where to run.
        batch_size: slices per forward pass.
        bf16: run the forward under bf16 autocast.
        reduce: sums the pooled counts over ranks (each rank validating its share of the slices);
            :func:`~AttentionMambaSegLib.distributed.all_reduce_sum`.

    Returns:
        ``{"loss": float, "dice": {label_value: float}, "mean_dice": float}`` (mean over foreground).
    """
    was_training = network.training
    network.eval()
    labels_fg = [1] if num_classes == 1 else list(range(1, num_classes))
    inter = dict.fromkeys(labels_fg, 0)
    total = dict.fromkeys(labels_fg, 0)
    loss_sum, count = 0.0, 0
    try:
        for idx, hp, wp in _validation_groups(slices, patch_size, batch_size):
            shapes = [slices.labels[i].shape for i in idx]
            x = torch.stack([_pad_to(torch.from_numpy(slices.images[i]), hp, wp) for i in idx]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = network(x)
            if isinstance(logits, (list, tuple)):
                logits = logits[0]
            logits = logits.float().cpu()
            for b, (i, (h, w)) in enumerate(zip(idx, shapes)):
                top, left = (hp - h) // 2, (wp - w) // 2
                lg = logits[b : b + 1, :, top : top + h, left : left + w]
                ref = torch.from_numpy(slices.labels[i]).long()
                loss_sum += float(segmentation_loss(lg, ref[None]))
                count += 1
                pred = (lg[0, 0] > 0).long() if num_classes == 1 else lg[0].argmax(0)
                for v in labels_fg:
                    p, r = pred == v, ref == v
                    inter[v] += int((p & r).sum())
                    total[v] += int(p.sum()) + int(r.sum())
    finally:
        network.train(was_training)
    if reduce is not None:
        sums = reduce([loss_sum, count, *(inter[v] for v in labels_fg), *(total[v] for v in labels_fg)])
        loss_sum, count = sums[0], int(round(sums[1]))
        n = len(labels_fg)
        inter = {v: int(round(x)) for v, x in zip(labels_fg, sums[2:2 + n])}
        total = {v: int(round(x)) for v, x in zip(labels_fg, sums[2 + n:])}
    dice = {v: (2.0 * inter[v] / total[v] if total[v] else 1.0) for v in labels_fg}
    return {"loss": loss_sum / max(count, 1), "dice": dice, "mean_dice": float(np.mean(list(dice.values())))}


# --------------------------------------------------------------------------------------------------
# schedule


@dataclass(frozen=True)
class SchedulePlan:
    """How long the run is.

    Attributes:
        epochs: number of epochs (the cosine schedule's length; T_max = epochs / 3).
        iterations_per_epoch: optimiser steps per epoch.
        val_slices: validation slices scored after every epoch.
        seconds_per_iteration: measured training step time (0 when not measured).
        seconds_per_val_slice: measured whole-slice validation time per slice (0 when not measured).
    """

    epochs: int
    iterations_per_epoch: int
    val_slices: int
    seconds_per_iteration: float = 0.0
    seconds_per_val_slice: float = 0.0


def plan_schedule(
    *,
    epochs: int,
    num_train_slices: int,
    num_val_slices: int,
    batch_size: int,
    budget_seconds: float | None = None,
    seconds_per_iteration: float = 0.0,
    seconds_per_val_slice: float = 0.0,
    seconds_per_checkpoint: float = 0.0,
    iterations_per_epoch: int | None = None,
    val_slices: int | None = None,
) -> SchedulePlan:
    """Choose epochs, iterations per epoch and validation size.

    Without a budget: ``epochs`` epochs of ``iterations_per_epoch`` steps (default one pass over the
    training slices, ``ceil(num_train_slices / batch_size)``), validation on ``val_slices`` slices
    (default all).

    With a budget (seconds for the epochs, validation and checkpoints): the number of steps that fit is
    ``budget / seconds_per_iteration`` minus validation. If the full recipe (``epochs`` passes) fits,
    the epochs are kept and lengthened to use the budget. Otherwise epochs are shortened no further than
    needed to keep validation (at least 16 slices) near 10 % of an epoch, and their number is reduced
    (never below 3) so the cosine schedule still completes. The number of validation slices is then
    the most that fits in ~10 % of an epoch.

    Args:
        epochs: the requested number of epochs (an upper bound under a budget that cannot hold it).
        num_train_slices: training slices.
        num_val_slices: available validation slices.
        batch_size: slices per step.
        budget_seconds: seconds available for the training loop, or None.
        seconds_per_iteration: measured step time (needed with a budget).
        seconds_per_val_slice: measured validation time per slice.
        seconds_per_checkpoint: time to write one checkpoint.
        iterations_per_epoch: fixed steps per epoch (overrides the budget's choice).
        val_slices: fixed number of validation slices (overrides the automatic choice).

    Returns:
        the plan.

    Raises:
        ValueError: for non-positive epochs, batch size or budget, or a budget without a step time.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    one_pass = max(1, math.ceil(num_train_slices / batch_size))
    all_val = num_val_slices
    min_val = min(MIN_VALIDATION_SLICES, all_val)
    if budget_seconds is None:
        ipe = iterations_per_epoch or one_pass
        nval = all_val if val_slices is None else min(val_slices, all_val)
        return SchedulePlan(epochs, ipe, nval, seconds_per_iteration, seconds_per_val_slice)
    if budget_seconds <= 0:
        raise ValueError(f"the time budget leaves no time for training ({budget_seconds:.0f} s)")
    if seconds_per_iteration <= 0:
        raise ValueError("a time budget needs the measured seconds per iteration")
    t_it, t_val, t_ck = seconds_per_iteration, seconds_per_val_slice, seconds_per_checkpoint
    nval_fixed = None if val_slices is None else min(val_slices, all_val)
    overhead_min = (nval_fixed if nval_fixed is not None else min_val) * t_val + t_ck
    if iterations_per_epoch:
        ipe = iterations_per_epoch
        n_epochs = int(budget_seconds // (ipe * t_it + overhead_min))
        n_epochs = max(1, min(epochs, n_epochs))
    else:
        # Shortest epoch that keeps the minimum validation near VALIDATION_SHARE of the epoch.
        ipe_min = max(1, math.ceil(overhead_min * (1 - VALIDATION_SHARE) / (VALIDATION_SHARE * t_it)))
        full_epoch = one_pass * t_it + overhead_min
        if epochs * full_epoch <= budget_seconds:
            n_epochs = epochs
        else:
            n_epochs = int(budget_seconds // (max(ipe_min, 1) * t_it + overhead_min))
            n_epochs = max(min(MIN_EPOCHS, epochs), min(epochs, n_epochs))
        per_epoch = budget_seconds / n_epochs
        ipe = max(1, int((per_epoch - overhead_min) // t_it))
    if nval_fixed is not None:
        nval = nval_fixed
    else:
        share = VALIDATION_SHARE / (1 - VALIDATION_SHARE) * ipe * t_it
        nval = all_val if t_val <= 0 else int(max(min_val, min(all_val, share // t_val)))
        # Validation above the minimum comes out of the steps.
        extra = (nval - min_val) * t_val
        if not iterations_per_epoch and extra > 0:
            ipe = max(1, ipe - int(math.ceil(extra / t_it)))
    return SchedulePlan(n_epochs, ipe, nval, t_it, t_val)


# --------------------------------------------------------------------------------------------------
# network, checkpoints, logs


def _build_network(in_channels: int, num_classes: int, backbone_checkpoint: str | None = None,
                   init_package=None) -> torch.nn.Module:
    """A new Attention-Mamba; ``init_package`` (a loaded ``ModelPackage``, the ``--init-from`` model) gives its weights."""
    from .model import AttentionMamba

    network = AttentionMamba(in_channels, num_classes, backbone_checkpoint=backbone_checkpoint or None)
    if init_package is not None:
        source = init_package.build_network("cpu")
        if (source.in_channels, source.num_classes) != (in_channels, num_classes):
            raise ValueError(
                f"--init-from model {init_package.config.get('id')} ({init_package.path}) has {source.in_channels} input "
                f"channel(s) and {source.num_classes} output(s); this dataset needs {in_channels} and {num_classes}"
            )
        network.load_state_dict({k: v.float() for k, v in source.state_dict().items()})
        logger.info("initialised the network from model %s %s (fine-tuning)", init_package.config.get("id"),
                    init_package.config.get("version"))
    return network


def _initial_target_spacing(settings: dict, info, train_cases: list[str], init_package=None) -> tuple[float, float]:
    """In-plane (row, column) spacing of a new run: the one asked for, else the ``init_from`` model's, else
    the median of the training cases (the paper's choice).

    Continuing a model at another spacing than it was trained at changes the size of every structure it
    sees, so without an explicit ``target_spacing`` a run started from a package keeps the package's.
    """
    if settings.get("target_spacing"):
        return tuple(float(v) for v in settings["target_spacing"])
    if init_package is not None:
        spacing = init_package.config.get("target_spacing")
        if spacing:
            logger.info("target spacing %s mm taken from the --init-from model %s (pass --target-spacing to "
                        "change it)", list(spacing), settings["init_from"])
            return tuple(float(v) for v in spacing)
    return target_inplane_spacing(info, train_cases, settings["axes_code"])


def training_lineage(source) -> dict:
    """Where a continued model's weights came from, for its model.json ``training`` block.

    A run started with ``--init-from`` reproduces only from that package's weights, so the new package
    records the source (``initialised_from``: id, version, SHA-256 of its weights) and the source's own
    training, appended to the lineage the source already carries (``earlier_training``, oldest first:
    version, command, steps, time, selection and validation mean Dice of each step).

    Args:
        source: the loaded ``ModelPackage`` the run started from.

    Returns:
        ``{"initialised_from": {...}, "earlier_training": [...]}``.
    """
    cfg = source.config
    t = cfg.get("training") or {}
    val = (cfg.get("metrics") or {}).get("val") or {}
    step = {
        "version": cfg.get("version"),
        "sha256": cfg.get("sha256"),
        "command": t.get("command"),
        "epochs": t.get("epochs_completed", t.get("epochs")),
        "iterations_per_epoch": t.get("iterations_per_epoch"),
        "batch_size": t.get("batch_size"),
        "patch_size": cfg.get("patch_size"),
        "target_spacing": cfg.get("target_spacing"),
        "time": t.get("time"),
        "selected_epoch": t.get("selected_epoch"),
        "val_mean_dice": val.get("mean_dice"),
        "val_cases": val.get("cases"),
    }
    return {
        "initialised_from": {"id": cfg.get("id"), "version": cfg.get("version"), "sha256": cfg.get("sha256")},
        "earlier_training": list(t.get("earlier_training") or []) + [{k: v for k, v in step.items() if v is not None}],
    }


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(obj):
    """``obj`` with numpy scalars/arrays, paths and sets turned into types ``torch.load(weights_only=True)`` accepts."""
    if type(obj) is dict:  # state_dicts (OrderedDict, with _metadata) are kept as they are
        return {_plain(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, (set, frozenset)):
        return [_plain(v) for v in sorted(obj, key=repr)]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(_plain(obj), tmp)
    os.replace(tmp, path)


def _unpickle_reason(error: BaseException) -> str:
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(error).__name__


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a training checkpoint safely (``torch.load(weights_only=True)``: tensors and plain types only).

    Raises:
        ValueError: the file is empty, truncated or not a checkpoint (the message names it).
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes), probably from an interrupted copy; delete it and "
                         "start again without --resume, or restore it from a backup")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):
            raise ValueError(f"checkpoint {path} ({size} bytes) is corrupt or not a checkpoint "
                             f"({_unpickle_reason(e)}); delete it and start again without --resume, or restore "
                             "it from a backup") from e
        # Written by an older version (before checkpoints held plain types only): this run's own file.
        logger.warning("checkpoint %s holds non-tensor objects; loading it with weights_only=False", path)
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e2:
            raise ValueError(f"checkpoint {path} ({size} bytes) is corrupt: {e2}") from e2
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError, OSError) as e:
        raise ValueError(f"checkpoint {path} ({size} bytes) is corrupt or truncated ({_unpickle_reason(e)}); "
                         "delete it and start again without --resume, or restore it from a backup") from e
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"{path} is not a training checkpoint of this program (no 'model' entry)")
    return checkpoint


def _write_log(history: list[dict], path: Path) -> None:
    if not history:
        return
    fields = list(history[0].keys())
    for row in history[1:]:
        fields.extend(k for k in row if k not in fields)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def _plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], label="train loss (deep supervision, 9 outputs)")
    ax1.plot(epochs, [r["train_loss_fused"] for r in history], label="train loss (fused output)")
    ax1.plot(epochs, [r["val_loss"] for r in history], label="val loss (fused output)")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    ax2.plot(epochs, [r["val_dice_mean"] for r in history], label="mean", linewidth=2)
    for key in history[0]:
        if key.startswith("val_dice_") and key != "val_dice_mean":
            ax2.plot(epochs, [r[key] for r in history], label=key[len("val_dice_"):], linewidth=1)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation Dice (pooled over slices)")
    ax2.set_ylim(0, 1)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _time_steps(
    network, optimizer_args: dict, slices: SliceData, patch_size: int, batch_size: int, device, bf16: bool, steps: int = 3
) -> float:
    """Median seconds of a training step, on a throw-away copy of the network and optimiser."""
    net = copy.deepcopy(network).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), **optimizer_args)
    gen = torch.Generator().manual_seed(0)
    times = []
    for step in range(steps + 1):
        idx = torch.randint(0, len(slices), (batch_size,), generator=gen).tolist()
        t0 = time.perf_counter()
        x, y = sample_batch(slices, idx, patch_size, gen)
        _train_step(net, opt, x.to(device), y.to(device), device, bf16)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    del net, opt
    return float(np.median(times))


def _train_step(network, optimizer, x, y, device, bf16: bool, sum_across=None) -> tuple[float, float]:
    """One optimiser step; ``sum_across`` (several ranks) makes the Dice term that of the global batch."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        outputs = network(x)
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    if len(outputs) == 9:
        loss = deep_supervision_loss(outputs, y, sum_across=sum_across)
    else:
        loss = deep_supervision_loss(list(outputs), y, weights=[1.0] * len(outputs), sum_across=sum_across)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        fused = float(segmentation_loss(outputs[0].detach(), y))
    return float(loss.detach()), fused


# --------------------------------------------------------------------------------------------------
# train


def train(
    dataset: str | os.PathLike,
    output: str | os.PathLike,
    fold: int = 0,
    epochs: int = 150,
    patch_size: int = 192,
    batch_size: int = 24,
    time_budget_minutes: float | None = None,
    resume: bool = False,
    device: str = "auto",
    seed: int = 1290,
    lr: float = 5e-4,
    weight_decay: float = 5e-2,
    bf16: bool = False,
    model_id: str | None = None,
    model_version: str = "1.0.0",
    activation: str = "auto",
    axes_code: str = "LPS",
    iterations_per_epoch: int | None = None,
    val_slices: int | None = None,
    final_evaluation: bool = True,
    backbone_checkpoint: str | None = None,
    init_from: str | None = None,
    target_spacing: Sequence[float] | None = None,
    stop_after_epoch: int | None = None,
    package_on_stop: bool = False,
    augmentation: AugmentationParams = PAPER,
    command: str | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    cancel: threading.Event | None = None,
) -> Path | None:
    """Train Attention-Mamba on one fold of an nnU-Net v2 raw dataset and write a model package.

    Args:
        dataset: dataset folder (nnU-Net v2 raw layout, see :mod:`data`).
        output: run folder; created. The model package goes to ``output/model``.
        fold: fold of splits_final.json (its "train" cases train, its "val" cases select the model).
        epochs: epochs of the schedule (paper: 150 ACDC / ISIC, 300 Synapse). Under a time budget, an
            upper bound.
        patch_size: P, crop size in pixels (multiple of 32; paper 192 ACDC, 224 Synapse, 256 ISIC).
        batch_size: crops per step (paper 24; 12 for ISIC).
        time_budget_minutes: wall-clock minutes for the whole run (data loading, schedule, final
            evaluation); the schedule is fitted into it (:func:`plan_schedule`). None: no budget.
        resume: continue from ``output/checkpoint_latest.pt`` (settings are taken from the checkpoint).
        device: "auto", "cpu", "cuda" or "cuda:N".
        seed: seeds the network initialisation, crops and augmentations.
        lr: AdamW learning rate (paper 5e-4; 1.5e-4 ISIC).
        weight_decay: AdamW weight decay on every parameter (paper 5e-2 ACDC; 1e-2 Synapse, ISIC).
        bf16: bfloat16 autocast for forward passes (losses in float32).
        model_id: model.json "id" (default ``<dataset name lower-case>-attention-mamba``).
        model_version: model.json "version".
        activation: "softmax", "sigmoid" (one foreground label only) or "auto" (sigmoid when the
            dataset has a single foreground label, as the paper's ISIC model; softmax otherwise).
        axes_code: orientation volumes are reoriented to before slicing (model.json "axes_code").
        iterations_per_epoch: fixed steps per epoch (default: one pass over the slices, or the budget's).
        val_slices: fixed number of validation slices per epoch (default: all, or the budget's).
        final_evaluation: score the selected model per case on the validation cases
            (:func:`evaluation.evaluate`, with TTA) and store the figures in model.json.
        backbone_checkpoint: optional pretrained ResNet-18 deep-stem weights for the backbone.
        target_spacing: in-plane (row, column) spacing in mm (pixels for 2D photos) that slices are resampled
            to; default the ``init_from`` model's target spacing when there is one, else the median of the
            training cases (the paper's choice).
        init_from: optional model package (id or folder) whose weights initialise the whole network, to
            continue training a model with a new schedule (e.g. a longer one on a later session).
        package_on_stop: with ``stop_after_epoch``, write the model package of the best epoch so far
            instead of returning None (model.json records the epochs completed).
        stop_after_epoch: stop (with a checkpoint, without a package) once this many epochs are done;
            resume later. For splitting a run into jobs.
        augmentation: augmentation probabilities and ranges (:data:`augmentation.PAPER` or
            :data:`augmentation.SITE`, or any :class:`~augmentation.AugmentationParams`).
        command: the command line to record in model.json (default: ``sys.argv``).
        progress: called after every step as ``progress(done_steps, total_steps, info)`` with info keys
            epoch, epochs, loss, lr.
        cancel: when set, training stops after the current step; the last epoch checkpoint is kept
            and None is returned.

    Several processes: under ``torchrun`` each process trains on its shard of every global batch
    (``batch_size`` is the global batch, divisible by the number of processes) with
    DistributedDataParallel; see :mod:`AttentionMambaSegLib.distributed`. Rank 0 writes every file.

    Returns:
        the model package folder, or None when stopped early (``stop_after_epoch`` or ``cancel``) and
        on ranks other than 0.

    Raises:
        DatasetError: if the dataset is invalid (checked before anything else).
        FileExistsError: if ``output`` holds a run and ``resume`` is False.
        FileNotFoundError: if ``resume`` is True and there is no checkpoint.
        ValueError: for invalid settings (patch size not a multiple of 32, unknown activation, ...).
    """
    start_time = time.monotonic()
    out = Path(output)
    latest_path = out / CHECKPOINT_LATEST
    settings = {
        "dataset": str(Path(dataset).resolve()),
        "fold": int(fold),
        "epochs": int(epochs),
        "patch_size": int(patch_size),
        "batch_size": int(batch_size),
        "time_budget_minutes": time_budget_minutes,
        "seed": int(seed),
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "bf16": bool(bf16),
        "model_id": model_id,
        "model_version": model_version,
        "activation": activation,
        "axes_code": axes_code,
        "iterations_per_epoch": iterations_per_epoch,
        "val_slices": val_slices,
        "final_evaluation": bool(final_evaluation),
        "backbone_checkpoint": backbone_checkpoint,
        "init_from": str(init_from) if init_from else None,
        "target_spacing": [float(v) for v in target_spacing] if target_spacing else None,
        "augmentation": asdict(augmentation),
        "command": command or " ".join(shlex.quote(a) for a in sys.argv),
    }
    checkpoint = None
    if resume:
        if not latest_path.exists():
            raise FileNotFoundError(f"cannot resume: {latest_path} does not exist (start without --resume)")
        checkpoint = load_checkpoint(latest_path)
        if "settings" not in checkpoint or "epoch" not in checkpoint:
            raise ValueError(f"cannot resume: {latest_path} is not a full training checkpoint (no settings/epoch)")
        stored = checkpoint["settings"]
        changed = {k: (stored.get(k), v) for k, v in settings.items()
                   if k not in ("command", "time_budget_minutes", "final_evaluation") and stored.get(k) != v}
        if changed:
            logger.warning("resuming with the checkpoint's settings; ignored differing arguments: %s", changed)
        settings = {**stored, "final_evaluation": bool(final_evaluation)}
        augmentation = AugmentationParams.from_dict(settings["augmentation"])
    elif latest_path.exists():
        raise FileExistsError(f"{out} already holds a training run ({CHECKPOINT_LATEST}); pass resume=True (--resume) to "
                              "continue it, or choose another output folder (--output)")

    if settings["patch_size"] % 32 or settings["patch_size"] < 32:
        raise ValueError(f"patch_size must be a positive multiple of 32, got {settings['patch_size']}")
    from . import distributed

    ctx = distributed.setup(device)  # torchrun: join the process group (one process: nothing to do)
    dev = resolve_device(distributed.device_for(ctx, device))
    if settings["batch_size"] % ctx.world_size:
        raise ValueError(f"the batch size {settings['batch_size']} (the global batch) must be divisible by the "
                         f"{ctx.world_size} processes")
    local_batch = settings["batch_size"] // ctx.world_size
    use_bf16 = settings["bf16"]
    _warn_if_bf16_is_emulated(dev, use_bf16)
    info = validate_dataset(settings["dataset"])
    train_cases = split_cases(info, "train", settings["fold"])
    val_cases = split_cases(info, "val", settings["fold"])
    if not train_cases or not val_cases:
        raise ValueError(f"fold {settings['fold']} of {info.root} needs training and validation cases")
    act = settings["activation"]
    if act == "auto":
        act = "sigmoid" if len(info.foreground_labels) == 1 else "softmax"
    if act not in ("softmax", "sigmoid"):
        raise ValueError(f"activation must be 'auto', 'softmax' or 'sigmoid', got {act!r}")
    num_classes = 1 if act == "sigmoid" else len(info.labels)

    init_package = None  # the --init-from model, read once (a resumed run takes its weights from the checkpoint)
    if checkpoint is not None:
        target_spacing = tuple(checkpoint["target_spacing"])
        normalization = checkpoint["normalization"]
        lineage = checkpoint.get("lineage") or {}
    else:
        lineage = {}
        if settings.get("init_from"):
            from .package import load_model_package

            init_package = load_model_package(settings["init_from"])
            lineage = training_lineage(init_package)
        target_spacing = _initial_target_spacing(settings, info, train_cases, init_package)
        normalization = default_normalization(info)
    reference = init_package
    if reference is None and settings.get("init_from"):  # a resumed run that started from a model
        from .package import load_model_package

        reference = load_model_package(settings["init_from"])
    classes = default_classes(info, act, reference.config["classes"] if reference is not None else None)
    logger.info(
        "dataset %s fold %d: %d training / %d validation cases; target spacing %s mm; normalisation %s; "
        "%s with K = %d", info.name, settings["fold"], len(train_cases), len(val_cases), target_spacing,
        normalization, act, num_classes,
    )
    train_slices = load_slices(info, train_cases, target_spacing, settings["axes_code"], normalization)
    val_all = load_slices(info, val_cases, target_spacing, settings["axes_code"], normalization)

    torch.manual_seed(settings["seed"])
    network = _build_network(info.num_channels, num_classes, settings["backbone_checkpoint"], init_package).to(dev)
    optimizer_args = {"lr": settings["lr"], "betas": (0.9, 0.999), "weight_decay": settings["weight_decay"]}
    optimizer = torch.optim.AdamW(network.parameters(), **optimizer_args)
    gen = torch.Generator().manual_seed(settings["seed"])

    if checkpoint is not None:
        plan = SchedulePlan(**checkpoint["plan"])
    elif not ctx.is_main:
        plan = None  # rank 0 decides (it alone times the steps under a budget)
    else:
        budget = None
        t_it = t_val = t_ck = 0.0
        if settings["time_budget_minutes"] is not None:
            t_it = _time_steps(network, optimizer_args, train_slices, settings["patch_size"], local_batch, dev, use_bf16)
            probe = val_all.subset(list(range(0, len(val_all), max(1, len(val_all) // 4)))[:4])
            t0 = time.perf_counter()
            validate(network, probe, num_classes, settings["patch_size"], dev, settings["batch_size"], use_bf16)
            t_val = (time.perf_counter() - t0) / max(len(probe), 1)
            out.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            _atomic_torch_save({"model": network.state_dict(), "optimizer": optimizer.state_dict()}, out / ".timing.pt")
            t_ck = 3.0 * (time.perf_counter() - t0)  # the real checkpoint also holds AdamW's two moments
            (out / ".timing.pt").unlink(missing_ok=True)
            # Reserve the final per-case evaluation: every validation slice, 4 flips, ~1.5 windows each.
            reserve = 6.0 * len(val_all) * t_val if settings["final_evaluation"] else 0.0
            elapsed = time.monotonic() - start_time
            budget = 60.0 * settings["time_budget_minutes"] - elapsed - reserve
            budget *= 0.97  # margin for logging, plots and the package
            logger.info(
                "time budget: %.1f s/step, %.2f s/validation slice, %.1f s/checkpoint; %.0f s left for training, %.0f s reserved for the final evaluation",
                t_it, t_val, t_ck, budget, reserve,
            )
        plan = plan_schedule(
            epochs=settings["epochs"],
            num_train_slices=len(train_slices),
            num_val_slices=len(val_all),
            batch_size=settings["batch_size"],
            budget_seconds=budget,
            seconds_per_iteration=t_it,
            seconds_per_val_slice=t_val,
            seconds_per_checkpoint=t_ck,
            iterations_per_epoch=settings["iterations_per_epoch"],
            val_slices=settings["val_slices"],
        )
    plan = distributed.broadcast_object(plan)
    if ctx.distributed:  # after rank 0's timing probe (no collectives there): global-batch BatchNorm statistics
        network = distributed.convert_sync_batchnorm(network, dev)  # the same parameter names
        optimizer = torch.optim.AdamW(network.parameters(), **optimizer_args)
    logger.info(
        "schedule: %d epochs x %d steps of %d crops %dx%d; validation on %d of %d slices; lr %g, weight decay %g, T_max %.1f epochs",
        plan.epochs, plan.iterations_per_epoch, settings["batch_size"], settings["patch_size"], settings["patch_size"],
        plan.val_slices, len(val_all), settings["lr"], settings["weight_decay"], plan.epochs / 3,
    )
    # A fixed random subset of the validation slices, the same every epoch.
    val_order = torch.randperm(len(val_all), generator=torch.Generator().manual_seed(settings["seed"] + 1)).tolist()
    val_slices_data = val_all.subset(sorted(val_order[: plan.val_slices]))

    base_lr = settings["lr"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: cosine_factor(e, plan.epochs, base_lr, ETA_MIN)
    )
    history: list[dict] = []
    best = {"epoch": 0, "mean_dice": -1.0}
    start_epoch = 0
    previous_time = 0.0
    if checkpoint is not None:
        network.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        gen.set_state(checkpoint["generator"])
        _set_rng_state(checkpoint["rng"])
        history = checkpoint["history"]
        best = checkpoint["best"]
        start_epoch = checkpoint["epoch"]
        previous_time = checkpoint.get("train_seconds", 0.0)
        logger.info("resumed %s at epoch %d of %d", latest_path, start_epoch, plan.epochs)
        checkpoint = None  # free memory

    step_network = network
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        step_network = DistributedDataParallel(network, device_ids=[dev.index] if dev.type == "cuda" else None)
        # each rank validates its share of the slices; the pooled counts are summed
        val_slices_data = val_slices_data.subset(list(range(ctx.rank, len(val_slices_data), ctx.world_size)))
    sum_across = distributed.sum_across_ranks if ctx.distributed else None
    reduce = distributed.all_reduce_sum if ctx.distributed else None
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    config_record = {**settings, "plan": asdict(plan), "target_spacing": list(target_spacing),
                     "normalization": normalization, "activation_resolved": act, "num_classes": num_classes,
                     "train_cases": len(train_cases), "val_cases": len(val_cases),
                     "train_slices": len(train_slices), "val_slices_total": len(val_all),
                     "device": str(dev), "processes": ctx.world_size, "torch": torch.__version__, "version": __version__}
    if ctx.is_main:
        (out / "training_config.json").write_text(json.dumps(config_record, indent=2) + "\n", encoding="utf-8")

    label_names = {c["label_value"]: c["dataset_label"] for c in classes}
    total_steps = plan.epochs * plan.iterations_per_epoch
    run_start = time.monotonic()
    network.train()
    last_epoch = plan.epochs if stop_after_epoch is None else min(plan.epochs, int(stop_after_epoch))
    for epoch in range(start_epoch, last_epoch):
        epoch_start = time.monotonic()
        lr_now = optimizer.param_groups[0]["lr"]
        indices = _epoch_indices(len(train_slices), plan.iterations_per_epoch * settings["batch_size"], gen)
        losses, fused_losses = [], []
        for it in range(plan.iterations_per_epoch):
            if cancel is not None and cancel.is_set():
                logger.warning("training cancelled during epoch %d; the checkpoint of epoch %d is kept", epoch + 1, epoch)
                return None
            batch = indices[it * settings["batch_size"] : (it + 1) * settings["batch_size"]]
            # every rank draws the global batch (the shared generator stays in step) and keeps its shard
            x, y = sample_batch(train_slices, batch, settings["patch_size"], gen, augmentation,
                                normalization.get("type") == "rgb")
            if ctx.distributed:
                shard = slice(ctx.rank * local_batch, (ctx.rank + 1) * local_batch)
                x, y = x[shard], y[shard]
            loss, fused = _train_step(step_network, optimizer, x.to(dev), y.to(dev), dev, use_bf16, sum_across)
            if ctx.distributed:  # the mean over ranks, the same on every rank
                loss, fused = (v / ctx.world_size for v in distributed.all_reduce_sum([loss, fused]))
            if not math.isfinite(loss):
                raise RuntimeError(
                    f"the training loss became {loss} at epoch {epoch + 1}, step {it + 1}; lower the learning rate "
                    "or disable bf16, then resume or restart"
                )
            losses.append(loss)
            fused_losses.append(fused)
            if progress is not None and ctx.is_main:
                progress(epoch * plan.iterations_per_epoch + it + 1, total_steps,
                         {"epoch": epoch + 1, "epochs": plan.epochs, "loss": loss, "lr": lr_now})
        train_time = time.monotonic() - epoch_start
        val_start = time.monotonic()
        val = validate(network, val_slices_data, num_classes, settings["patch_size"], dev, local_batch, use_bf16, reduce)
        val_time = time.monotonic() - val_start
        scheduler.step()
        row = {
            "epoch": epoch + 1,
            "steps": (epoch + 1) * plan.iterations_per_epoch,
            "lr": lr_now,
            "train_loss": float(np.mean(losses)),
            "train_loss_fused": float(np.mean(fused_losses)),
            "val_loss": val["loss"],
            "val_dice_mean": val["mean_dice"],
            **{f"val_dice_{label_names.get(v, v)}": d for v, d in val["dice"].items()},
            "train_seconds": round(train_time, 2),
            "val_seconds": round(val_time, 2),
            "elapsed_seconds": round(previous_time + time.monotonic() - run_start, 1),
        }
        history.append(row)
        improved = val["mean_dice"] > best["mean_dice"]
        if improved:
            best = {"epoch": epoch + 1, "mean_dice": val["mean_dice"], "dice": {str(k): v for k, v in val["dice"].items()}}
        if not ctx.is_main:  # rank 0 writes checkpoints, logs and plots
            continue
        if improved:
            _atomic_torch_save({"model": network.state_dict(), "epoch": epoch + 1, "val": val}, out / CHECKPOINT_BEST)
        _atomic_torch_save(
            {
                "model": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": gen.get_state(),
                "rng": _rng_state(),
                "epoch": epoch + 1,
                "history": history,
                "best": best,
                "plan": asdict(plan),
                "settings": settings,
                "target_spacing": list(target_spacing),
                "normalization": normalization,
                "lineage": lineage,
                "train_seconds": previous_time + time.monotonic() - run_start,
            },
            latest_path,
        )
        _write_log(history, out / "training_log.csv")
        _plot_curves(history, out / "training_curves.png")
        logger.info(
            "epoch %d/%d: lr %.2e, train loss %.4f (fused %.4f), val loss %.4f, val Dice %.4f%s (%.0f s + %.0f s val)",
            epoch + 1, plan.epochs, lr_now, row["train_loss"], row["train_loss_fused"], val["loss"], val["mean_dice"],
            " *best*" if improved else "", train_time, val_time,
        )
    steps_done = (last_epoch - start_epoch) * plan.iterations_per_epoch
    if ctx.distributed:
        logger.info("rank %d of %d: %d steps done, stopped at epoch %d", ctx.rank, ctx.world_size, steps_done,
                    last_epoch)
    if last_epoch < plan.epochs and not package_on_stop:
        logger.info("stopped after epoch %d of %d; continue with resume=True", last_epoch, plan.epochs)
        return None
    if not ctx.is_main:
        return None  # rank 0 writes the package

    # The selected network and its package.
    best_state = load_checkpoint(out / CHECKPOINT_BEST)
    network.load_state_dict(best_state["model"])
    network.eval()
    train_seconds = history[-1]["elapsed_seconds"] if history else 0.0
    config = {
        "id": settings["model_id"] or f"{info.name.lower()}-attention-mamba",
        "version": str(settings["model_version"]),
        "task": KNOWN_DATASETS.get(info.name, {}).get("task", f"{info.name} segmentation"),
        "modality": KNOWN_DATASETS.get(info.name, {}).get("modality", ", ".join(info.channel_names)),
        "in_channels": info.num_channels,
        "channel_names": list(info.channel_names),
        "num_classes": num_classes,
        "activation": act,
        "classes": classes,
        "normalization": normalization,
        "axes_code": settings["axes_code"],
        "slice_axis_rule": "largest-spacing-else-z",
        "target_spacing": list(target_spacing),
        "patch_size": [settings["patch_size"], settings["patch_size"]],
        "licence": _model_licence(info),
        "training": {
            "data": f"{info.name} ({info.reference or 'no reference'}), fold {settings['fold']} of splits_final.json: "
                    f"{len(train_cases)} training cases ({len(train_slices)} slices), {len(val_cases)} validation cases",
            "licence": _model_licence(info),
            "data_licence": info.licence,
            "command": settings["command"],
            "epochs": plan.epochs,
            "epochs_completed": len(history),
            "iterations_per_epoch": plan.iterations_per_epoch,
            "batch_size": settings["batch_size"],
            "optimizer": {"name": "AdamW", "lr": settings["lr"], "betas": [0.9, 0.999], "weight_decay": settings["weight_decay"]},
            "schedule": f"cosine annealing per epoch, T_max = epochs/3 = {plan.epochs / 3:.2f}, eta_min {ETA_MIN}",
            "seed": settings["seed"],
            "bf16": use_bf16,
            "device": str(dev),
            "time": f"{train_seconds / 60:.1f} min",
            "time_seconds": round(train_seconds, 1),
            "time_budget_minutes": settings["time_budget_minutes"],
            "selected_epoch": best["epoch"],
            "selection": f"best mean validation Dice on {plan.val_slices} whole validation slices",
            "software": f"AttentionMambaSeg {__version__}, torch {torch.__version__}, Python {platform.python_version()}",
            **lineage,
        },
        "metrics": {
            "val_slices_pooled": {
                "dice": {label_names[int(k)]: round(v, 4) for k, v in best.get("dice", {}).items()},
                "mean_dice": round(best["mean_dice"], 4),
                "epoch": best["epoch"],
            }
        },
    }
    package_dir = out / PACKAGE_FOLDER
    from .package import save_model_package

    save_model_package(network, config, package_dir)
    if settings["final_evaluation"]:
        from .evaluation import evaluate

        summary = evaluate(package_dir, settings["dataset"], split="val", fold=settings["fold"], output=out / "val_metrics.csv",
                           tta=True, device=str(dev))
        config["metrics"]["val"] = summary_to_metrics(summary)
        save_model_package(network, config, package_dir)
    logger.info("model package written to %s (%.1f min in all)", package_dir, (time.monotonic() - start_time) / 60)
    return package_dir


def summary_to_metrics(summary: dict) -> dict:
    """The model.json "metrics" entry of an :func:`evaluation.evaluate` summary (means per class)."""
    per_class = summary["per_class"]
    return {
        "cases": summary["cases"],
        "tta": summary["tta"],
        "dice": {name: round(v["dice_mean"], 4) for name, v in per_class.items()},
        "hd95_mm": {name: round(v["hd95_mean"], 3) for name, v in per_class.items()},
        "mean_dice": round(summary["mean_dice"], 4),
        "mean_hd95_mm": round(summary["mean_hd95"], 3),
        "conventions": summary["conventions"],
    }


def _model_licence(info: DatasetInfo) -> str:
    licence = info.licence or "unknown"
    if "NC" in re.split(r"[^A-Z0-9]+", licence.upper()):
        return f"{licence}: the weights derive from {info.name} data and may not be used commercially"
    return f"{licence} (licence of the training data, {info.name})"
