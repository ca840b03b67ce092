"""Several processes, one model: torchrun + DistributedDataParallel on GPUs (NCCL) or CPUs (gloo).

``torchrun --nproc_per_node N -m pedattr.cli train ...`` starts N processes; each finds its rank
in the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), trains on its
slice of every global batch, and DDP averages the gradients. With ``run.sync_bn`` batch norm
uses the statistics of the global batch, so the run computes what one process with the whole
batch would: torch's SyncBatchNorm on GPUs, :class:`CPUSyncBatchNorm` on CPUs (torch's needs
CUDA kernels).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pedattr.utils.device import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process prints, logs and writes files."""
        return self.rank == 0


def init_distributed(device_name: str = "auto") -> DistributedContext:
    """Join the process group torchrun describes, or run alone when it describes none."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1 and device_name.startswith("cuda"):
        if device_name != "cuda":
            raise ValueError(
                f"run.device={device_name!r}: under torchrun each process takes its own GPU "
                "(cuda:LOCAL_RANK); use run.device=cuda or auto"
            )
        device_name = f"cuda:{local_rank}"
    device = resolve_device(device_name, local_rank)
    if world_size == 1:
        return DistributedContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), world_size, local_rank, device)


def shutdown_distributed(context: DistributedContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(obj: Any, context: DistributedContext) -> list[Any]:
    """Every process's ``obj``, in rank order (just ``[obj]`` when alone)."""
    if not context.distributed:
        return [obj]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, context: DistributedContext) -> Any:
    """The main process's ``obj`` on every process."""
    if not context.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(context: DistributedContext) -> None:
    if context.distributed:
        dist.barrier()


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward sums the gradients over processes too.

    torch.distributed.nn.functional.all_reduce does the same but is deprecated (a FutureWarning
    from every process of every run in torch 2.14), so pedattr keeps these few lines.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # noqa: ARG004
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ARG004
        total = grad.clone()
        dist.all_reduce(total)
        return total


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """Batch norm over the global batch of all processes, for CPU (gloo) runs.

    Each process sums its per-channel count and sum, then its squared deviations from the
    global mean; differentiable all-reduces give the global mean and variance, and autograd
    through them gives every process the gradient of the global batch's normalisation.
    Statistics are computed in float32 (also under bf16 autocast). Outside distributed training
    it is a plain BatchNorm2d.
    """

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        x = input.float()  # statistics in float32, also under bf16 autocast
        channels = x.shape[1]
        shape = (1, channels, 1, 1)
        # Two passes, as BatchNorm2d computes them: the global mean, then the global mean of
        # squared deviations from it (one pass, E[x^2] - E[x]^2, loses digits when a channel's
        # mean is large against its spread).
        count = x.new_full((1,), x.numel() / channels)
        first = _AllReduceSum.apply(torch.cat([count, x.sum(dim=(0, 2, 3))]))
        n, mean = first[0], first[1:] / first[0]
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply(centred.square().sum(dim=(0, 2, 3))) / n
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * n / (n - 1).clamp(min=1))
        output = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, unbiased_var: Tensor) -> None:
        self.num_batches_tracked += 1
        momentum = self.momentum
        if momentum is None:  # cumulative moving average, as BatchNorm2d does
            momentum = 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(unbiased_var, momentum)


def _to_cpu_sync(module: nn.Module) -> nn.Module:
    """Swap every plain BatchNorm2d of ``module`` for a CPUSyncBatchNorm sharing its state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = CPUSyncBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced)
        else:
            _to_cpu_sync(child)
    return module


def convert_sync_batchnorm(model: nn.Module, context: DistributedContext) -> nn.Module:
    """Batch norm over the global batch: torch's SyncBatchNorm on CUDA, ours on the CPU.

    On CUDA timm's converter is used, which also handles timm's fused norm-activation layers. On
    the CPU only plain ``BatchNorm2d`` layers are synchronised (BN-Inception and ResNets have no
    others).
    """
    if not context.distributed:
        return model
    if context.device.type == "cuda":
        from timm.layers import convert_sync_batchnorm as timm_convert

        return timm_convert(model)
    return _to_cpu_sync(model)


def wrap_ddp(model: nn.Module, context: DistributedContext) -> nn.Module:
    """``model`` in DistributedDataParallel when there are several processes."""
    if not context.distributed:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
