"""Several processes (GPUs, nodes or CPU groups) with ``torch.distributed``, launched by ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous; :func:`setup` then joins
the process group (NCCL on CUDA, gloo on CPUs). Without those variables, or with ``WORLD_SIZE=1``,
nothing is initialised and every helper here is the identity, so a single-process run is unchanged.

Training (:func:`AttentionMambaSegLib.training.train`) uses it so that N processes with the global
batch split between them compute what one process with the whole batch computes:

* every rank draws the whole global batch from the shared generator and keeps its shard, so crops and
  augmentations are those of the single-process run;
* BatchNorm statistics are those of the global batch (:func:`convert_sync_batchnorm`: PyTorch's
  SyncBatchNorm on CUDA; on CPUs, where SyncBatchNorm is not available, :class:`DistributedBatchNorm2d`,
  which all-reduces the batch sums with the differentiable collective);
* the soft Dice loss sums its batch statistics across ranks (:func:`sum_across_ranks`); the
  DistributedDataParallel gradient average then gives the gradient of the global-batch loss;
* one rank decides (schedule, time budget) and :func:`broadcast_object` makes all follow.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "Context",
    "DistributedBatchNorm2d",
    "all_reduce_sum",
    "broadcast_object",
    "context",
    "convert_sync_batchnorm",
    "device_for",
    "all_gather_objects",
    "setup",
    "sum_across_ranks",
    "teardown",
]

#: How long a collective may wait for the slowest rank (rank 0 validates and writes checkpoints).
TIMEOUT = datetime.timedelta(hours=2)


@dataclasses.dataclass(frozen=True)
class Context:
    """Where this process stands: rank (0..world_size-1), world size, rank on this node, backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on the rank that writes files and decides (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def context() -> Context:
    """The current process group's context (a single process when none is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_backend())


def setup(device: str = "auto") -> Context:
    """Join the process group that ``torchrun`` describes in the environment, once.

    Args:
        device: the requested device: NCCL is used when it is CUDA (or "auto" with CUDA available),
            gloo otherwise.

    Returns:
        The :class:`Context`; ``world_size`` 1 (nothing initialised) without ``torchrun``.

    Raises:
        RuntimeError: ``torch.distributed`` is not available in this PyTorch build.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch has no torch.distributed: run one process.")
    if not dist.is_initialized():
        wants_cuda = str(device).startswith("cuda") or (str(device) == "auto" and torch.cuda.is_available())
        backend = "nccl" if wants_cuda and torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
        ctx = context()
        logger.info("rank %d of %d (%s)", ctx.rank, ctx.world_size, backend)
    return context()


def teardown() -> None:
    """Leave the process group (after the last collective); nothing in one process."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(ctx: Context, requested: str) -> str:
    """The device of this rank: ``cuda:LOCAL_RANK`` for a CUDA request on several ranks, else ``requested``."""
    if ctx.distributed and (str(requested) in ("auto", "cuda")) and torch.cuda.is_available():
        return f"cuda:{ctx.local_rank}"
    return requested


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects); the identity in one process."""
    if not context().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list:
    """Every rank's ``obj`` on every rank, in rank order (``[obj]`` in one process)."""
    ctx = context()
    if not ctx.distributed:
        return [obj]
    box = [None] * ctx.world_size
    dist.all_gather_object(box, obj)
    return box


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (not differentiable; float64 on the CPU)."""
    if not context().distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    if context().backend == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def sum_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of ``tensor`` over the ranks (an all-reduce forward and backward).

    The gradient that reaches each rank is the sum of every rank's gradient with respect to the sum, as
    for a batch held in one process. The identity in one process.
    """
    if not context().distributed:
        return tensor
    return _SumAcrossRanks.apply(tensor)


class _SumAcrossRanks(torch.autograd.Function):
    """all_reduce(SUM) forward; the gradient is all-reduced the same way (d sum / d x_r = 1 on every rank)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class DistributedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch of every rank together (CPU, gloo).

    Mean and variance come from all-reduced sums of x and x^2 and the element count, through the
    differentiable collective, so forward and backward equal those of one BatchNorm2d over the
    concatenated batch; the running statistics are updated with the unbiased variance, as BatchNorm2d.
    In eval mode, or in one process, it is a plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and context().distributed):
            return super().forward(x)
        # Sums in float64: E[x^2] - E[x]^2 in float32 would lose the digits BatchNorm2d's own pass keeps.
        x64 = x.double()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64, device=x.device)
        stats = torch.cat([x64.sum(dim=(0, 2, 3)), (x64 * x64).sum(dim=(0, 2, 3)), count])
        stats = sum_across_ranks(stats)
        c = x.shape[1]
        n = stats[2 * c]
        mean64 = stats[:c] / n
        var64 = (stats[c : 2 * c] / n - mean64 * mean64).clamp_min(0)
        mean, var = mean64.to(x.dtype), var64.to(x.dtype)
        if self.track_running_stats:
            tracked, running_mean, running_var = self.num_batches_tracked, self.running_mean, self.running_var
            assert tracked is not None and running_mean is not None and running_var is not None  # tracked stats
            with torch.no_grad():
                tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                unbiased = var * (n / (n - 1)) if float(n) > 1 else var
                running_mean.mul_(1 - momentum).add_(momentum * mean)
                running_var.mul_(1 - momentum).add_(momentum * unbiased)
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers that share statistics across ranks: SyncBatchNorm on CUDA, else DistributedBatchNorm2d.

    Parameters and buffers keep their names, so state dicts (checkpoints, packages) are unchanged.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            replacement = DistributedBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            ).to(child.weight.device)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement)
        else:
            convert_sync_batchnorm(child, device)
    return module
