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
from torch.nn.modules.batchnorm import _BatchNorm

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


def _syncing(module: nn.Module) -> bool:
    """Whether a batch-norm layer normalises with the global batch now: in training mode, inside
    a process group (as torch's SyncBatchNorm decides)."""
    return module.training and dist.is_available() and dist.is_initialized()


def _global_batch_norm(bn: _BatchNorm, input: Tensor) -> Tensor:
    """``bn`` applied with the mean and variance of the global batch of all processes.

    Each process sums its per-channel count and sum, then its squared deviations from the
    global mean; differentiable all-reduces give the global mean and variance, and autograd
    through them gives every process the gradient of the global batch's normalisation. The
    running statistics are updated as ``bn`` would update them with the global batch.
    """
    # Statistics in float32 at least, also under bf16/fp16 autocast (float64 stays float64).
    x = input if input.dtype == torch.float64 else input.float()
    channels = x.shape[1]
    dims = [0, *range(2, x.dim())]
    shape = (1, channels) + (1,) * (x.dim() - 2)
    # Two passes, as BatchNorm computes them: the global mean, then the global mean of squared
    # deviations from it (one pass, E[x^2] - E[x]^2, loses digits when a channel's mean is large
    # against its spread).
    count = x.new_full((1,), x.numel() / channels)
    first = _AllReduceSum.apply(torch.cat([count, x.sum(dim=dims)]))
    n, mean = first[0], first[1:] / first[0]
    centred = x - mean.view(shape)
    var = _AllReduceSum.apply(centred.square().sum(dim=dims)) / n
    if bn.track_running_stats:
        _update_running_stats(bn, mean.detach(), var.detach() * n / (n - 1).clamp(min=1))
    output = centred * torch.rsqrt(var.view(shape) + bn.eps)
    if bn.affine:
        output = output * bn.weight.view(shape) + bn.bias.view(shape)
    return output.to(input.dtype)


@torch.no_grad()
def _update_running_stats(bn: _BatchNorm, mean: Tensor, unbiased_var: Tensor) -> None:
    bn.num_batches_tracked += 1
    momentum = bn.momentum
    if momentum is None:  # cumulative moving average, as BatchNorm does
        momentum = 1.0 / float(bn.num_batches_tracked)
    bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
    bn.running_var.lerp_(unbiased_var.to(bn.running_var.dtype), momentum)


class _CPUSync:
    """Mixed in before a batch-norm class: its forward with the global batch's statistics while
    training in a process group, and the class's own forward otherwise."""

    def forward(self, input: Tensor) -> Tensor:
        if not _syncing(self):
            return super().forward(input)
        return self._after_norm(_global_batch_norm(self, input))

    def _after_norm(self, x: Tensor) -> Tensor:
        """What the class's own forward does after normalising (nothing, for plain batch norm)."""
        return x


class CPUSyncBatchNorm(_CPUSync, nn.BatchNorm2d):
    """BatchNorm2d over the global batch of all processes, for CPU (gloo) runs.

    torch's SyncBatchNorm needs CUDA kernels, and DistributedDataParallel refuses it on the CPU.
    Statistics are computed in float32 at least (also under bf16 autocast). Outside distributed
    training it is a plain BatchNorm2d.
    """


class _CPUSyncAct(_CPUSync):
    """For timm's BatchNormAct2d, whose forward applies its dropout and activation after the
    normalisation."""

    def _after_norm(self, x: Tensor) -> Tensor:
        return self.act(self.drop(x))


_CPU_VARIANTS: dict[type, type] = {nn.BatchNorm2d: CPUSyncBatchNorm}


def _cpu_variant(cls: type[_BatchNorm], where: str) -> type:
    """The synchronised twin of a batch-norm class (made once per class).

    Classes that normalise with ``_BatchNorm.forward`` (BatchNorm1d/2d/3d and subclasses that
    keep that forward) and timm's BatchNormAct2d are supported; another forward would be
    skipped silently by a twin, so it is refused.
    """
    if cls in _CPU_VARIANTS:
        return _CPU_VARIANTS[cls]
    if cls.forward is _BatchNorm.forward:
        mixin: type = _CPUSync
    elif _is_timm_batchnorm_act(cls):
        mixin = _CPUSyncAct
    else:
        raise ValueError(
            f"run.sync_bn: {where} is a {cls.__module__}.{cls.__qualname__}, whose own forward "
            "cannot be synchronised across CPU processes; set run.sync_bn=false"
        )
    variant = type(f"CPUSync{cls.__name__}", (mixin, cls), {"__module__": __name__})
    _CPU_VARIANTS[cls] = variant
    return variant


def _is_timm_batchnorm_act(cls: type) -> bool:
    from timm.layers import BatchNormAct2d  # only for models that hold timm layers

    return issubclass(cls, BatchNormAct2d) and cls.forward is BatchNormAct2d.forward


def _to_cpu_sync(model: nn.Module) -> nn.Module:
    """Make every batch-norm layer of ``model`` normalise with the global batch, in place.

    The layers keep their parameters, buffers, training mode and frozen parameters: only
    their class changes, to a twin that adds the synchronisation (see :func:`_cpu_variant`).
    """
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm) and not isinstance(module, _CPUSync):
            module.__class__ = _cpu_variant(type(module), name or "the model")
    return model


def convert_sync_batchnorm(model: nn.Module, context: DistributedContext) -> nn.Module:
    """Batch norm over the global batch: torch's SyncBatchNorm on CUDA, ours on the CPU.

    On CUDA timm's converter is used, which also handles timm's fused norm-activation layers. On
    the CPU every batch-norm layer is synchronised, whatever its dimension, including timm's
    BatchNormAct2d (:func:`_to_cpu_sync`).

    Raises:
        ValueError: on the CPU, a batch-norm class with a forward of its own that cannot be
            synchronised.
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
