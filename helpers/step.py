"""One training step, and a pass of them over a loader: the study's loss and update.

The step itself is forward, cross-entropy with the ignore index, backward, optimizer and
scheduler step. What :func:`train_one_epoch` adds around it is for speed and scale: autocast in
the precision chosen for the device (:mod:`helpers.precision`), channels-last inputs, a gradient
scaler for fp16, EfficientNet's depthwise convolutions kept in float32 under CPU bf16, no
per-batch host sync, and the sums of every process under torchrun.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import distributed, metrics
from .config import Config
from .inference import autocast, labels_from_logits
from .metrics import IGNORE_INDEX


@dataclass
class TrainState:
    """What a training step needs: the network (maybe wrapped for several processes), its
    optimizer and per-batch scheduler, and how it computes (device, autocast ``dtype``, the
    fp16 gradient ``scaler``, the loss's ``class_weights``, channels-last inputs)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    class_weights: torch.Tensor | None = None
    channels_last: bool = True


def build_optimizer(model: torch.nn.Module, config: Config, device: torch.device):
    """Return the study's AdamW; its fused kernel (one pass per parameter) where available."""
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                             fused=device.type in ("cpu", "cuda"))


@contextlib.contextmanager
def depthwise_convs_in_float32(model: torch.nn.Module):
    """Within this context, depthwise convolutions of ``model`` run in float32 under autocast.

    For CPU bf16 training: oneDNN's bf16 kernels for EfficientNet's depthwise convolutions are
    slower than its float32 channels-last ones (a 5x5 one, forward + backward: about twice as
    slow on 2 AMD EPYC cores, benchmarks/train_throughput.py), so these layers take float32
    inputs while every other convolution stays in bf16.
    """
    contexts = []

    def enter(module, args):
        contexts.append(torch.autocast(device_type="cpu", enabled=False))
        contexts[-1].__enter__()
        return tuple(arg.float() if torch.is_tensor(arg) else arg for arg in args)

    def leave(module, args, output):
        contexts.pop().__exit__(None, None, None)

    handles = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels:
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave, always_call=True))
    try:
        yield len(handles) // 2
    finally:
        for handle in handles:
            handle.remove()


def train_one_epoch(state: TrainState, loader, progress: bool = True, desc: str = "train") -> dict:
    """Train for one pass over ``loader``; return ``{"loss", "miou", "pixel_accuracy", "dice"}``.

    The step itself is forward, cross-entropy with the ignore index, backward, optimizer and
    scheduler step. Loss and confusion matrix are accumulated on the device; the progress bar
    reads them only every few batches, so the GPU is never stalled by a per-batch host sync.
    ``state.model`` may be wrapped in ``DistributedDataParallel``: the returned figures then
    sum every process's batches (each process runs the same number of them).
    """
    from tqdm.auto import tqdm

    model, device = state.model, state.device
    model.train()
    confusion = metrics.ConfusionMatrix(getattr(model, "module", model).num_classes, device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    batches = 0
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False)
    cpu_bf16 = device.type == "cpu" and state.dtype == torch.bfloat16
    with depthwise_convs_in_float32(model) if cpu_bf16 else contextlib.nullcontext():
        for step, (images, masks) in enumerate(bar):
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            if state.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, state.dtype):
                logits = model(images)
            loss = F.cross_entropy(logits.float(), masks, weight=state.class_weights,
                                   ignore_index=IGNORE_INDEX)
            state.optimizer.zero_grad(set_to_none=True)
            if state.scaler is not None:  # fp16 on an older GPU: scaled against underflow
                state.scaler.scale(loss).backward()
                state.scaler.step(state.optimizer)
                state.scaler.update()
            else:
                loss.backward()
                state.optimizer.step()
            state.scheduler.step()
            with torch.no_grad():
                loss_sum += loss.detach()
                confusion.update(labels_from_logits(logits.detach()), masks)
            batches += 1
            if progress and step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss_sum) / batches:.3f}",
                                miou=f"{confusion.compute()['miou']:.3f}")
    confusion.reduce_from_all_processes()
    distributed.all_reduce_sum(loss_sum)
    batches *= distributed.world_size()
    summary = confusion.compute()
    return {"loss": float(loss_sum) / max(batches, 1), "miou": summary["miou"],
            "pixel_accuracy": summary["pixel_accuracy"], "dice": summary["dice"]}
