"""Several processes training one model: the torchrun environment, read once.

``torchrun`` (``python -m torch.distributed.run``) starts one process per GPU and tells each
its place in ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. :func:`setup` joins the process
group from those variables (NCCL on GPUs, gloo on the CPU) and picks the device of the local
rank; without them, or with ``WORLD_SIZE=1``, nothing happens and every function here answers
as a single process would, so a plain ``python -m helpers.train`` runs exactly as before.

Imports nothing from the project (timm only for its GPU BatchNorm conversion): the training
loop and the evaluation use it alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    """Where this process stands: its ``rank`` among ``world_size`` processes, ``local_rank``
    on its machine, and the ``device`` it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def requested_world_size() -> int:
    """Return ``WORLD_SIZE`` as torchrun sets it (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def setup(device: str | torch.device | None = None) -> Processes:
    """Join the process group torchrun describes and return this process's place in it.

    Without ``WORLD_SIZE`` (or with 1) returns a single process with ``device`` as given.
    Otherwise the device is ``cuda:LOCAL_RANK`` when CUDA is available (or ``device`` names
    CUDA) with the NCCL backend, else the CPU with gloo. Calling it again returns the group
    already joined.
    """
    if requested_world_size() <= 1:
        return Processes(device=torch.device(device) if device is not None else None)
    rank, world_size = int(os.environ["RANK"]), requested_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = torch.device(device) if device is not None else None
    use_cuda = torch.cuda.is_available() if wanted is None else wanted.type == "cuda"
    if use_cuda:
        if torch.cuda.device_count() <= local_rank:
            raise ValueError(f"process {rank} has LOCAL_RANK {local_rank} but this machine shows "
                             f"{torch.cuda.device_count()} GPU(s); start torchrun with "
                             "--nproc_per_node at most the number of GPUs")
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return Processes(rank, world_size, local_rank, chosen)


def is_distributed() -> bool:
    """Return whether this process belongs to a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Return this process's rank (0 in a single process)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Return the number of processes training together (1 in a single process)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Return whether this process is rank 0: the one that writes files and shows progress."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (nothing in a single process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place and return it (unchanged in one process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(value) -> list:
    """Return the list of ``value`` from every process, in rank order (``[value]`` in one)."""
    if not is_distributed():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_buffers(module: torch.nn.Module, source: int = 0) -> None:
    """Copy the buffers (BatchNorm running statistics) of rank ``source`` to every process.

    Without synchronised BatchNorm each process updates its running statistics from its own
    batches; evaluating after this makes every process score the model rank 0 saves.
    """
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=source)


def shard_indices(count: int) -> list[int]:
    """Return the indices of ``count`` items this process handles: every ``world_size``-th,
    starting at its rank (disjoint, together all of them; all of them in one process)."""
    return list(range(rank(), count, world_size()))


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the sum of every process's gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class CPUSyncBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of every process's batch together, for
    processes on the CPU (gloo): :class:`torch.nn.SyncBatchNorm` accepts only GPU inputs.

    Same parameters, buffers and state-dict keys as ``BatchNorm``; the sums it exchanges are
    differentiable, so the backward pass is that of BatchNorm over the global batch. In eval
    mode, or in one process, it is plain BatchNorm. Converted from timm's ``BatchNormAct2d``
    it keeps that layer's ``drop`` and ``act`` and applies them after normalising.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        output = (self._normalize_over_processes(input) if self.training and is_distributed()
                  else super().forward(input))
        if hasattr(self, "drop"):
            output = self.drop(output)
        if hasattr(self, "act"):
            output = self.act(output)
        return output

    def _normalize_over_processes(self, input: torch.Tensor) -> torch.Tensor:
        all_reduce = _SumOverProcesses.apply
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        totals = all_reduce(torch.cat([x.sum(dims), count]))
        pixels = totals[-1]
        mean = totals[:-1] / pixels
        centred = x - mean.view(shape)
        # Two passes (mean, then squared deviations) avoid E[x^2] - E[x]^2's cancellation.
        variance = all_reduce((centred * centred).sum(dims)) / pixels
        output = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = (self.momentum if self.momentum is not None
                            else 1.0 / float(self.num_batches_tracked))
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                unbiased = variance.detach() * pixels / (pixels - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return output.to(input.dtype)


def convert_sync_batchnorm(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Return ``module`` with its BatchNorm layers computing statistics over all processes:
    :class:`torch.nn.SyncBatchNorm` on GPUs, :class:`CPUSyncBatchNorm` on the CPU.

    Call it before wrapping the model in ``DistributedDataParallel``. The parameter and buffer
    objects and the state-dict keys are kept, so an optimizer built before keeps working and
    checkpoints load into a plain model.
    """
    if torch.device(device).type != "cpu":
        # timm's conversion also keeps the activation of its BatchNormAct2d layers (EfficientNet).
        from timm.layers import convert_sync_batchnorm as timm_convert

        return timm_convert(module)
    converted = module
    if (isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
            and not isinstance(module, CPUSyncBatchNorm)):
        converted = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum,
                                     module.affine, module.track_running_stats)
        # The same parameter and buffer objects, so an optimizer built before still holds them.
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        for name in ("drop", "act"):  # timm's BatchNormAct2d
            if isinstance(getattr(module, name, None), torch.nn.Module):
                converted.add_module(name, getattr(module, name))
        converted.train(module.training)
    for name, child in module.named_children():
        if converted is not module and name in ("drop", "act"):
            continue
        converted.add_module(name, convert_sync_batchnorm(child, device))
    return converted


def cleanup() -> None:
    """Leave the process group (nothing when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
