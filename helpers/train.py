"""Training: the study's recipe, resumable, fast on CPU and GPU.

AdamW + OneCycleLR (stepped per batch) + cross-entropy with the ignore index, optional
median-frequency class weights, early stopping on the validation loss with the best model
kept. Every epoch writes ``last.pt`` (enough to resume exactly) and the history; the epoch
with the lowest validation loss is kept as ``best.pt``.

Command line::

    python -m helpers.train --model unet-effnet-lite0 --profile quick [--out DIR] [--resume]
    python -m helpers.train --images DIR --masks DIR --classes FILE [--split NAME] --out DIR
    torchrun --nproc_per_node=4 -m helpers.train --profile full [--out DIR] [--resume]

Under ``torchrun`` each process trains on its share of every epoch with DistributedDataParallel;
the global batch is ``batch_size`` x the number of processes (the learning rate stays as
configured) and only rank 0 writes checkpoints, history and progress.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed, metrics, seed_everything
from .checkpoint import read_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import Config, load_config, project_path
from .datasets import build_datasets, class_pixel_counts, median_frequency_weights
from .evaluate import evaluate
from .inference import autocast, labels_from_logits, pick_device
from .machine import default_workers
from .metrics import IGNORE_INDEX
from .models import build_model
from .precision import announce, choose_precision


@dataclass
class TrainResult:
    """What :func:`fit` returns: where the run lives and how it went."""

    out_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict]
    best_epoch: int
    stopped_early: bool


class EarlyStopping:
    """Stop when the validation loss has not gone lower for ``patience`` epochs in a row.

    Epochs before ``armed_from`` (0-based) never count against the patience. With a one-cycle
    schedule the learning rate rises for the first 30% of the run and stays high well after;
    there a flat or rising validation loss says the steps are large, not that the model overfits,
    and the annealing still to come is what brings the loss down (a full-profile run stopped at
    epoch 32 of 80 with the learning rate at 95% of its peak scored 0.595 test mIoU; the same run
    to the end, 0.635). :func:`annealed_epoch` gives the first epoch worth stopping at. The best
    epoch is still chosen on validation throughout.
    """

    def __init__(self, patience: int = 7, best_loss: float = math.inf, best_epoch: int = -1,
                 bad_epochs: int = 0, armed_from: int = 0):
        self.patience, self.armed_from = patience, armed_from
        self.best_loss, self.best_epoch, self.bad_epochs = best_loss, best_epoch, bad_epochs

    def step(self, val_loss: float, epoch: int) -> bool:
        """Record an epoch's validation loss; return whether it is a new best."""
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            return True
        if epoch >= self.armed_from:
            self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "armed_from": self.armed_from}


def one_cycle_learning_rates(epochs: int, steps_per_epoch: int, max_lr: float = 1.0) -> list[float]:
    """Return the learning rate of :class:`torch.optim.lr_scheduler.OneCycleLR` after each epoch."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=max_lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr,
                                                    total_steps=epochs * steps_per_epoch)
    rates = []
    for step in range(1, epochs * steps_per_epoch + 1):
        optimizer.step()
        scheduler.step()  # once per batch, as in fit()
        if step % steps_per_epoch == 0:
            rates.append(scheduler.get_last_lr()[0])
    return rates


def annealed_epoch(epochs: int, steps_per_epoch: int, fraction: float = 0.25) -> int:
    """Return the first epoch (0-based) that ends with the one-cycle rate at ``fraction`` of its
    peak or lower: the epoch from which early stopping may count (always past the peak)."""
    rates = one_cycle_learning_rates(epochs, steps_per_epoch)
    peak = max(range(epochs), key=rates.__getitem__)
    return next((e for e in range(peak + 1, epochs) if rates[e] <= fraction), epochs - 1)


def run_dir(config: Config) -> Path:
    """Return the default output folder of a run.

    CamVid: ``runs/<profile>/<model>``; your own data: ``runs/<profile>/<dataset>/<model>``
    (``<dataset>-<split>`` with a named split), so a run on another dataset never lands in
    the CamVid run's folder.
    """
    from .datasets import dataset_name

    root = Path(config.runs_dir)
    root = root if root.is_absolute() else project_path(config.runs_dir)
    if config.dataset == "camvid":
        return root / config.profile / config.model
    name = dataset_name(config)
    if config.split_name and config.split_name != name:
        name = f"{name}-{config.split_name}"
    return root / config.profile / name / config.model


# Config fields that change how a run is watched, not what it computes.
NOT_PART_OF_A_RUN = ("tensorboard",)
# Config fields that change what a run computes only when several processes train it.
DISTRIBUTED_ONLY = ("sync_batchnorm",)


def run_identity(config: Config | dict, world_size: int | None = None) -> dict:
    """Return the fields that make two runs the same run (defaults filled in for fields a
    configuration saved by an older version lacks).

    A run trained by several processes (torchrun) also has its ``world_size``: the global
    batch is ``batch_size`` x ``world_size``, so it is part of what was computed. A saved
    configuration (a dict) carries its own ``world_size`` (1 when absent); a :class:`Config`
    takes ``world_size`` (default 1).
    """
    data = config.to_dict() if isinstance(config, Config) else config
    if world_size is None:
        world_size = 1 if isinstance(config, Config) else int(data.get("world_size", 1))
    identity = Config.from_dict(data).to_dict()
    for name in NOT_PART_OF_A_RUN:
        identity.pop(name, None)
    if world_size > 1:
        identity["world_size"] = world_size
    else:
        for name in DISTRIBUTED_ONLY:
            identity.pop(name, None)
    return identity


def config_hash(config: Config) -> str:
    """Return a short hash of a configuration's run identity (8 hex digits)."""
    text = json.dumps(run_identity(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def saved_run_config(out_dir: str | Path) -> dict | None:
    """Return the configuration of the run in a folder (``config.json``, else a checkpoint's),
    with the ``world_size`` it was trained with, or None when the folder holds no run."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return json.loads((out_dir / "config.json").read_text())
    for name in ("best.pt", "last.pt"):
        if (out_dir / name).is_file():
            payload = read_checkpoint(out_dir / name)
            return {**payload["config"], "world_size": payload.get("world_size", 1)}
    return None


def other_run_in(out_dir: str | Path, config: Config, world_size: int = 1) -> list[str]:
    """Return how the run whose checkpoints a folder holds differs from ``config`` trained by
    ``world_size`` processes, one ``field: saved -> new`` line each (empty when the folder
    holds no checkpoint or the same run)."""
    out_dir = Path(out_dir)
    if not any((out_dir / name).is_file() for name in ("best.pt", "last.pt")):
        return []
    saved = saved_run_config(out_dir)
    if saved is None:
        return []
    theirs, ours = run_identity(saved), run_identity(config, world_size)
    defaults = {"world_size": 1}  # one process records none in the identity
    # A field that only matters with several processes is no difference when one side has one.
    keys = [k for k in {**ours, **theirs} if k not in DISTRIBUTED_ONLY or (k in ours and k in theirs)]
    return [f"{k}: {theirs.get(k, defaults.get(k))!r} -> {ours.get(k, defaults.get(k))!r}"
            for k in keys if theirs.get(k) != ours.get(k)]


def _refuse_other_run(out_dir: Path, differences: list[str]) -> None:
    shown = "; ".join(differences[:6]) + ("; ..." if len(differences) > 6 else "")
    raise ValueError(
        f"{out_dir} holds the checkpoints of a run with another configuration ({shown}); "
        "they are kept. Train into another folder with --out DIR, or continue that run with "
        "--resume and its own settings."
    )


def training_split(config: Config, datasets: dict):
    """Return the split a run trains on: ``train``, or ``train`` and ``val`` together."""
    if config.fit_on == "train":
        return datasets["train"]
    if config.fit_on != "train+val":
        raise ValueError(f"fit_on must be 'train' or 'train+val', not {config.fit_on!r}")
    from .datasets import SegmentationDataset

    train, val = datasets["train"], datasets["val"]
    return SegmentationDataset(train.pairs + val.pairs, train.classes, train.transform,
                               cache=config.cache_images)


def class_weights_for(config: Config, train_dataset) -> torch.Tensor | None:
    """Return the cross-entropy class weights the configuration asks for (or None).

    ``median_frequency`` is SegNet's ``median(freq) / freq``; ``sqrt_median_frequency`` its
    square root, a softer balance that over-predicts rare classes less on short schedules.
    """
    if config.class_weighting == "none":
        return None
    if config.class_weighting not in ("median_frequency", "sqrt_median_frequency"):
        raise ValueError("class_weighting must be 'none', 'median_frequency' or "
                         f"'sqrt_median_frequency', not {config.class_weighting!r}")
    weights = median_frequency_weights(class_pixel_counts(train_dataset))
    if config.class_weighting == "sqrt_median_frequency":
        weights = np.sqrt(weights)
    return torch.tensor(weights, dtype=torch.float32)


def normalization_for(config: Config, train_dataset) -> tuple[tuple, tuple] | tuple[None, None]:
    """Return (mean, std) for the from-scratch model: the statistics of its training images.

    Pretrained encoders return (None, None): they keep their pretraining statistics.
    """
    if not config.model.startswith("mini-unet"):
        return None, None
    from .stats import training_stats

    stats = training_stats(config, [image for image, _ in train_dataset.pairs])
    return tuple(stats["mean"]), tuple(stats["std"])


def epoch_seed(config: Config, epoch: int) -> int:
    """Return the seed of an epoch: what shuffles the training split (the same in every process)."""
    return config.seed * 1000 + epoch


def _seed_epoch(config: Config, epoch: int, dataset, rank: int = 0) -> torch.Generator:
    """Seed everything random for one epoch, so a resumed run repeats an uninterrupted one.

    Each process of a distributed run gets its own seed (rank 0 that of a single process), so
    the processes draw different augmentations.
    """
    seed = epoch_seed(config, epoch) + rank * 1_000_003
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if dataset.transform is not None and hasattr(dataset.transform, "set_random_seed"):
        dataset.transform.set_random_seed(seed)
    return torch.Generator().manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    transform = getattr(info.dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


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


def train_one_epoch(model, loader, optimizer, scheduler, scaler, criterion_weights, device,
                    dtype, channels_last=True, progress=True, desc="train") -> dict:
    """Train for one pass over ``loader``; return ``{"loss", "miou", "pixel_accuracy"}``.

    Loss and confusion matrix are accumulated on the device; the progress bar reads them only
    every few batches, so the GPU is never stalled by a per-batch host sync. ``model`` may be
    wrapped in ``DistributedDataParallel``: the returned figures then sum every process's
    batches (each process runs the same number of them).
    """
    from tqdm.auto import tqdm

    model.train()
    num_classes = getattr(model, "module", model).num_classes
    confusion = metrics.ConfusionMatrix(num_classes, device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    batches = 0
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False)
    cpu_bf16 = device.type == "cpu" and dtype == torch.bfloat16
    with depthwise_convs_in_float32(model) if cpu_bf16 else contextlib.nullcontext():
        for step, (images, masks) in enumerate(bar):
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, dtype):
                logits = model(images)
            loss = F.cross_entropy(logits.float(), masks, weight=criterion_weights,
                                   ignore_index=IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            scheduler.step()
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
    return {
        "loss": float(loss_sum) / max(batches, 1),
        "miou": summary["miou"],
        "pixel_accuracy": summary["pixel_accuracy"],
        "dice": summary["dice"],
    }


# State-dict prefixes of the layer that turns features into class scores, per architecture.
CLASSIFIER_PREFIXES = ("net.segmentation_head.", "net.classifier.")


def init_from_checkpoint(model: torch.nn.Module, path: str | Path, progress: bool = True) -> list[str]:
    """Load a checkpoint's encoder and decoder into ``model``, keeping ``model``'s freshly
    initialised classifier (built for the new class list); return the keys left as they were.

    The checkpoint must hold the same architecture (model name, width, decoder widths); its
    input normalization comes along, since the encoder's features were learned with it.
    """
    payload = read_checkpoint(path)
    source_name = payload["model"]["name"]
    if source_name != model.name:
        raise ValueError(f"--init-from {path}: that checkpoint holds a {source_name}, not a "
                         f"{model.name}; train with --model {source_name}")
    source = {k: v for k, v in payload["state_dict"].items()
              if not k.startswith(CLASSIFIER_PREFIXES)}
    target = model.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in source.items()
                  if k in target and v.shape != target[k].shape]
    missing = [k for k in target if k not in source and not k.startswith(CLASSIFIER_PREFIXES)]
    if mismatched or missing:
        shown = "; ".join((mismatched + missing)[:4])
        raise ValueError(f"--init-from {path}: its layers do not fit this {model.name} ({shown}); "
                         "use the checkpoint's width and decoder widths (see its config)")
    model.load_state_dict(source, strict=False)
    kept = [k for k in target if k.startswith(CLASSIFIER_PREFIXES)]
    if progress:
        print(f"initialised from {path}: {len(source)} tensors loaded, classifier new "
              f"({payload['model']['num_classes']} -> {model.num_classes} classes)")
    return kept


def encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """Return the encoder of a model built by :func:`helpers.models.build_model`."""
    net = model.net
    return net.encoder if hasattr(net, "encoder") else net.encoders


def freeze_encoder(model: torch.nn.Module, frozen: bool) -> None:
    """Freeze (or unfreeze) the encoder's weights; its BatchNorm layers keep training.

    As fastai's ``freeze`` does by default (``train_bn``): normalization statistics and
    affine parameters adapt to the new photos while the learned filters stay fixed.
    """
    for module in encoder_of(model).modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            continue
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(not frozen)


def encoder_stages(model: torch.nn.Module) -> list[list[torch.nn.Module]]:
    """Return a pretrained encoder's layers grouped by stage, the stem with the first.

    Stage k outputs features at 1/2^k of the input size (k = 1..5), as the U-Net's skip
    connections take them: for EfficientNet-Lite0 the stem and first block (1/2), then the
    blocks down to 1/4, 1/8, 1/16 and 1/32.
    """
    encoder = model.net.encoder if hasattr(model.net, "encoder") else None
    if encoder is not None and hasattr(getattr(encoder, "model", None), "feature_info"):
        timm_model = encoder.model  # timm, through smp's "tu-" encoders
        layers = [(name, module) for name, module in timm_model.named_children() if name != "blocks"]
        layers += [(f"blocks.{i}", stage) for i, stage in enumerate(timm_model.blocks)]
        ends = timm_model.feature_info.module_name()
    elif encoder is not None and hasattr(encoder, "features"):  # MobileNetV2 (torchvision's)
        layers = [(str(i), module) for i, module in enumerate(encoder.features)]
        ends = ["1", "3", "6", "13", str(len(encoder.features) - 1)]
    else:
        raise ValueError(f"{model.name} has no pretrained encoder whose stages could be frozen")
    stages, current = [], []
    for name, module in layers:
        current.append(module)
        if name in ends:
            stages.append(current)
            current = []
    return stages


def freeze_stages(model: torch.nn.Module, stages: int) -> None:
    """Keep the pretrained encoder's first ``stages`` stages (1/2, 1/4, ...) as ImageNet left them.

    Their weights and BatchNorm scales are not trained, so backpropagation stops before them:
    with 2 (the layers at 1/2 and 1/4 resolution, Detectron2's default ``FREEZE_AT=2``) a
    training step of the Lite0 U-Net skips the costliest part of its backward pass. Their
    BatchNorm layers also stay in inference mode, normalising with ImageNet's running
    statistics (Detectron2's ``FrozenBatchNorm2d``) rather than with each batch of 4 crops:
    the frozen stages compute the same function in training and evaluation.
    ``model.train()`` keeps them so (:meth:`helpers.models.SegmentationModel.train`).
    """
    if stages <= 0:
        return
    norms = []
    for stage in encoder_stages(model)[:stages]:
        for module in stage:
            for parameter in module.parameters():
                parameter.requires_grad_(False)
            norms += [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    model.frozen_norms = norms
    model.train(model.training)


def with_tensorboard(config: Config, out_dir: Path, callback: Callable[[dict], None] | None):
    """Return ``callback`` extended to log each epoch's losses, mIoU and learning rate to
    ``out_dir/tensorboard`` when ``config.tensorboard`` is set (``tensorboard --logdir runs``)."""
    if not config.tensorboard:
        return callback
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ValueError("TensorBoard logging needs the tensorboard package: pip install "
                         "tensorboard (or pip install .[tensorboard]), or train without "
                         "--tensorboard") from error
    import weakref

    writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
    names = {"train_loss": "loss/train", "val_loss": "loss/val", "train_miou": "mIoU/train",
             "val_miou": "mIoU/val", "test_miou": "mIoU/test (report only)", "lr": "learning rate"}

    def log(row: dict) -> None:
        for key, tag in names.items():
            if key in row:
                writer.add_scalar(tag, row[key], global_step=row["epoch"])
        writer.flush()
        if callback is not None:
            callback(row)

    weakref.finalize(log, writer.close)
    return log


def fit(
    config: Config,
    out_dir: str | Path | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    datasets: dict | None = None,
    progress: bool = True,
    epoch_callback: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train a model with the study's recipe and return where its checkpoints are.

    ``resume`` continues from ``out_dir/last.pt`` (model, optimizer, scheduler, scaler, epoch,
    early-stopping state, history) and finishes where an uninterrupted run would.
    ``epoch_callback`` gets each epoch's history row after ``last.pt`` is written (in every
    process of a distributed run).

    Started by torchrun (``WORLD_SIZE`` > 1), every process trains the same model with
    DistributedDataParallel on its own share of each epoch, ``batch_size`` images per process
    and step: the global batch is ``batch_size * world_size``, and the one-cycle schedule and
    early stopping count its steps. The learning rate is used as configured (scale it yourself,
    with ``--set lr=...``, if the larger batch calls for it). ``config.sync_batchnorm``
    computes BatchNorm statistics over the global batch. Validation is scored on the whole
    split, each process a disjoint share, the sums added up; only rank 0 writes files and shows
    progress. A distributed run resumes with the same number of processes.
    """
    from torch.utils.data import DataLoader

    processes = distributed.setup(device)
    world_size, rank = processes.world_size, processes.rank
    writes = rank == 0  # only rank 0 writes files
    progress = progress and writes
    out_dir = Path(out_dir) if out_dir else run_dir(config)
    if differences := other_run_in(out_dir, config, world_size):
        _refuse_other_run(out_dir, differences)
    if writes:
        out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if resume and processes.is_distributed:
        seen = distributed.all_gather_objects(last_path.is_file())
        if len(set(seen)) > 1:  # every process must resume, or none
            raise ValueError(f"{last_path} is visible to processes {[r for r, s in enumerate(seen) if s]} "
                             f"of {world_size} only: with several machines, --out must be a folder "
                             "they all see (a shared file system)")
    device = processes.device if processes.is_distributed else pick_device(device)
    seed_everything(config.seed)
    if progress:
        print(config)
        if processes.is_distributed:
            print(f"{world_size} processes ({device.type}): global batch "
                  f"{config.batch_size} x {world_size} = {config.batch_size * world_size}, "
                  f"lr {config.lr:g}, BatchNorm {'synchronised' if config.sync_batchnorm else 'per process'}")

    datasets = datasets or build_datasets(config)
    train_set, val_set = training_split(config, datasets), datasets["val"]
    classes = train_set.classes
    weights = class_weights_for(config, train_set)
    mean, std = normalization_for(config, train_set)
    model = build_model(config.model, classes.num_classes, width=config.width,
                        output_stride=config.output_stride, mean=mean, std=std,
                        decoder_channels=config.decoder_channels)
    if config.init_from and not (resume and last_path.is_file()):  # resuming loads last.pt
        init_from_checkpoint(model, config.init_from, progress)
    model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    precision = choose_precision(device, config.amp, config.model)  # printed once, saved in checkpoints
    if progress:
        announce(precision)
    dtype = precision.dtype
    weights_on_device = None if weights is None else weights.to(device)

    workers = default_workers() if config.num_workers is None else config.num_workers
    # Steps per epoch of the global batch: what the one-cycle schedule and early stopping count.
    batches_per_epoch = len(train_set) // (config.batch_size * world_size)
    if batches_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training images is fewer than one batch of "
                         f"{config.batch_size} x {world_size} process(es)")
    optimizer = build_optimizer(model, config, device)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * batches_per_epoch
    )
    scaler = torch.amp.GradScaler(device.type) if precision.grad_scaler else None

    history: list[dict] = []
    start_epoch = 0
    select_on_val = config.fit_on == "train"
    stopper = EarlyStopping(config.patience if select_on_val else math.inf,
                            armed_from=annealed_epoch(config.epochs, batches_per_epoch,
                                                      config.early_stop_lr_fraction))
    first_validated = stopper.armed_from if config.validate_annealed_only else 0
    if resume and last_path.is_file():
        state = read_checkpoint(last_path)
        model.load_state_dict(state["state_dict"])
        training = state["training_state"]
        optimizer.load_state_dict(training["optimizer"])
        scheduler.load_state_dict(training["scheduler"])
        if scaler is not None and training.get("scaler"):
            scaler.load_state_dict(training["scaler"])
        history = training["history"]
        start_epoch = training["epoch"] + 1
        stopper = EarlyStopping(stopper.patience, **{**training["early_stopping"],
                                                     "armed_from": stopper.armed_from})
        set_rng_state(training["rng"])
        if progress:
            print(f"resuming {out_dir} at epoch {start_epoch + 1}")
    freeze_stages(model, config.frozen_stages)  # before DDP, which skips frozen parameters
    if processes.is_distributed and config.sync_batchnorm:
        model = distributed.convert_sync_batchnorm(model, device)  # the same parameters
    trained_model = model  # what is saved and evaluated: never the DDP wrapper
    if processes.is_distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            # Frozen encoder epochs leave parameters without gradients.
            find_unused_parameters=config.freeze_encoder_epochs > start_epoch)
    if writes:
        record = {**config.to_dict(), "world_size": world_size}
        (out_dir / "config.json").write_text(json.dumps(record, indent=2) + "\n")
        epoch_callback = with_tensorboard(config, out_dir, epoch_callback)

    test_set = None
    if config.track_test_each_epoch:
        from .datasets import SegmentationDataset, evenly_spaced

        full = datasets["test"]
        test_set = SegmentationDataset(evenly_spaced(full.pairs, config.track_test_each_epoch),
                                       full.classes, full.transform, cache=config.cache_images)
    batches = None
    if config.augment_on_device:
        from .batch_transforms import DeviceBatches

        batches = DeviceBatches.from_dataset(train_set, device, config.batch_size, config.crop_size,
                                             config.rotate_limit, config.scale_limit,
                                             rank=rank, num_replicas=world_size)
    sampler = None
    if processes.is_distributed and batches is None:
        from torch.utils.data import DistributedSampler

        # set_epoch(epoch) shuffles with seed + epoch: epoch_seed(config, epoch) in every process.
        sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True,
                                     seed=epoch_seed(config, 0), drop_last=True)
    stopped_early = False
    if writes:
        (out_dir / "done.json").unlink(missing_ok=True)
    for epoch in range(start_epoch, config.epochs):
        if stopper.should_stop:
            stopped_early = True
            if progress:
                print(f"early stop: no lower validation loss for {config.patience} epochs")
            break
        started = time.perf_counter()
        freeze_encoder(trained_model, epoch < config.freeze_encoder_epochs)
        freeze_stages(trained_model, config.frozen_stages)
        generator = _seed_epoch(config, epoch, train_set, rank)
        if batches is not None:
            # The same order in every process (each takes its share), as in one process.
            batches.generator = torch.Generator().manual_seed(epoch_seed(config, epoch))
            loader = batches
        else:
            if sampler is not None:
                sampler.set_epoch(epoch)
            loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=sampler is None,
                                sampler=sampler, drop_last=True, num_workers=workers,
                                generator=generator, worker_init_fn=_worker_init,
                                pin_memory=device.type == "cuda")
        desc = f"epoch {epoch + 1}/{config.epochs}"
        train_stats = train_one_epoch(model, loader, optimizer, scheduler, scaler, weights_on_device,
                                      device, dtype, config.channels_last, progress, desc)
        trained = time.perf_counter()
        # Without synchronised BatchNorm each process has its own running statistics: score
        # (everywhere) the model rank 0 saves.
        distributed.broadcast_buffers(trained_model)
        row = {
            "epoch": epoch + 1,
            "lr": scheduler.get_last_lr()[0],
            "train_loss": train_stats["loss"],
            "train_miou": train_stats["miou"],
            "train_pixel_accuracy": train_stats["pixel_accuracy"],
            "train_dice": train_stats["dice"],
        }
        val = {}
        if epoch >= first_validated or epoch == config.epochs - 1:
            val = evaluate(trained_model, val_set, config.batch_size, dtype, class_weights=weights,
                           num_workers=workers, progress=progress, desc="validate", distributed=True)
            row.update({f"val_{k}": val[k] for k in ("loss", "miou", "pixel_accuracy", "dice")})
            if test_set is not None:
                test = evaluate(trained_model, test_set, config.batch_size, dtype,
                                num_workers=workers, progress=progress, desc="test (report only)",
                                distributed=True)
                row["test_miou"] = test["miou"]
        row["seconds"] = time.perf_counter() - started
        row["train_seconds"] = trained - started
        row["world_size"] = world_size
        history.append(row)

        if not val:  # not scored: no candidate for the best model
            improved = False
        elif select_on_val:
            improved = stopper.step(val["loss"], epoch)
        else:  # fitted on train+val, the validation split is training data: keep the last epoch
            improved, stopper.best_epoch = True, epoch
        if improved and writes:
            save_checkpoint(best_path, trained_model, config, classes,
                            metrics={"val": _scalars(val)}, epoch=epoch + 1,
                            world_size=world_size, precision=precision.to_dict())
        training_state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": epoch,
            "early_stopping": stopper.state_dict(),
            "history": history,
            "rng": rng_state(),
        }
        if writes:
            save_checkpoint(last_path, trained_model, config, classes,
                            metrics={"val": _scalars(val)}, epoch=epoch + 1,
                            training_state=training_state, world_size=world_size,
                            precision=precision.to_dict())
            write_history(history, out_dir)
        if progress:
            scored = (f"val loss {row['val_loss']:.3f} mIoU {row['val_miou']:.3f}"
                      f"{' *' if improved else ''}" if val else
                      f"validation from epoch {first_validated + 1}")
            print(f"{desc}: train loss {row['train_loss']:.3f} mIoU {row['train_miou']:.3f} | "
                  f"{scored} | {row['seconds']:.0f}s")
        if epoch_callback is not None:
            epoch_callback(row)
    if writes:
        (out_dir / "done.json").write_text(
            json.dumps({"best_epoch": stopper.best_epoch + 1, "epochs_run": len(history),
                        "stopped_early": stopped_early}) + "\n"
        )
    distributed.barrier()  # every process returns once rank 0's files are written
    return TrainResult(out_dir, best_path, last_path, history, stopper.best_epoch + 1, stopped_early)


def run_folder(config: Config) -> Path:
    """Return the folder :func:`ensure_trained` keeps a configuration's run in: the default
    folder (:func:`run_dir`), or ``<folder>@<config hash>`` beside it when the default holds
    the checkpoints of another configuration."""
    folder = run_dir(config)
    if other_run_in(folder, config):
        return folder.with_name(f"{folder.name}@{config_hash(config)}")
    return folder


def ensure_trained(config: Config, out_dir: str | Path | None = None, progress: bool = True,
                   datasets: dict | None = None, device: str | torch.device | None = None) -> Path:
    """Return the best checkpoint of the run a configuration names, training it first if needed.

    A finished run (``done.json`` present, same configuration) is reused; an interrupted one is
    resumed from ``last.pt``; otherwise training starts. Notebooks call this, so a later
    notebook works on its own and re-running one does not train twice. On a CPU without native
    bf16 a configuration with ``train_minutes`` first gets the profile's float32 recipe and its
    epochs sized to that budget (:func:`helpers.budget.sized_to_budget`). ``datasets`` and
    ``device`` go to :func:`fit`.

    A run is never removed: when the default folder holds a run of another configuration
    (trained by hand, or before the profile's recipe changed), this one goes beside it, to
    ``<folder>@<config hash>``, where later calls find it again. An ``out_dir`` given
    explicitly that holds another run is refused (``ValueError``).
    """
    from .budget import sized_to_budget

    config = sized_to_budget(config, progress=progress)  # changes only a float32 CPU run
    if out_dir is None:
        out_dir = run_folder(config)
        if out_dir != run_dir(config):
            print(f"{run_dir(config)} holds a run of another configuration, kept as it is; "
                  f"this one is in {out_dir}")
    out_dir = Path(out_dir)
    saved = saved_run_config(out_dir)
    same = saved is not None and run_identity(saved) == run_identity(config)
    if same and (out_dir / "done.json").is_file() and (out_dir / "best.pt").is_file():
        return out_dir / "best.pt"
    return fit(config, out_dir, resume=same, device=device, datasets=datasets,
               progress=progress).best_checkpoint


def read_history(checkpoint_or_dir: str | Path) -> list[dict]:
    """Return the per-epoch history of a run (given its folder or one of its checkpoints)."""
    path = Path(checkpoint_or_dir)
    folder = path if path.is_dir() else path.parent
    return json.loads((folder / "history.json").read_text())


def validated_epochs(history: list[dict]) -> list[dict]:
    """Return the rows of a history whose epoch was scored on validation (every epoch, or
    those from the annealed one on with ``Config.validate_annealed_only``)."""
    return [row for row in history if "val_loss" in row]


def _scalars(result: dict) -> dict:
    return {k: v for k, v in result.items() if isinstance(v, int | float)}


def write_history(history: list[dict], out_dir: Path) -> None:
    """Write the per-epoch history as ``history.csv`` and ``history.json``."""
    import csv

    if not history:
        return
    with (out_dir / "history.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[-1].keys()))
        writer.writeheader()
        writer.writerows(history)
    (out_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")


def parse_overrides(assignments: list[str]) -> dict:
    """Turn ``FIELD=VALUE`` strings into Config overrides, each value cast to its field's type.

    ``crop_size=224,320`` gives a tuple, ``max_train_images=none`` gives None, and booleans
    read ``true``/``false``. An unknown field is an error naming the known ones.
    """
    fields = {f.name: f for f in dataclasses.fields(Config)}  # annotations as text: "int | None"
    defaults = Config()
    overrides = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or name not in fields or name == "profile":
            known = ", ".join(n for n in fields if n != "profile")
            raise ValueError(f"--set {assignment!r}: expected FIELD=VALUE with FIELD one of {known}")
        default = getattr(defaults, name)
        if default is None and text.lower() in ("none", "null"):
            value = None
        elif isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"--set {assignment!r}: {name} takes true or false")
            value = text.lower() in ("true", "1")
        elif isinstance(default, tuple) or fields[name].type.startswith("tuple"):
            value = tuple(int(part) for part in text.split(","))
        elif isinstance(default, float) or fields[name].type.startswith("float"):
            value = float(text)
        elif isinstance(default, int) or fields[name].type.startswith("int"):
            value = int(text)
        else:
            value = text
        overrides[name] = value
    return overrides


def folder_overrides(images_dir: str | Path, masks_dir: str | Path, class_file: str | Path,
                     split_name: str | None = None) -> dict:
    """Return the Config fields that train on your own images/masks folders and class file.

    Paths are stored absolute, so the checkpoint's configuration finds the data again for
    evaluation from any folder. ``split_name`` names ``data/splits/<name>.csv`` (created,
    seeded, when missing); by default the name of the folder holding ``images_dir``.
    """
    images_dir, masks_dir = Path(images_dir).resolve(), Path(masks_dir).resolve()
    # No test scoring per epoch: that curve only illustrates a flaw of the study on CamVid.
    return {"dataset": "folder", "images_dir": str(images_dir), "masks_dir": str(masks_dir),
            "class_file": str(Path(class_file).resolve()),
            "split_name": split_name or images_dir.parent.name, "track_test_each_epoch": 0}


def main(argv: list[str] | None = None) -> int:
    from .models import MODEL_NAMES

    parser = argparse.ArgumentParser(prog="python -m helpers.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet-effnet-lite0", choices=MODEL_NAMES)
    parser.add_argument("--profile", default=None, help="smoke, quick or full (default: $SEG_PROFILE or quick)")
    parser.add_argument("--out", default=None,
                        help="output folder (default runs/PROFILE/MODEL for CamVid, "
                             "runs/PROFILE/DATASET[-SPLIT]/MODEL for your own data)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--class-weighting", default=None,
                        choices=("none", "median_frequency", "sqrt_median_frequency"))
    parser.add_argument("--decoder-channels", default=None, metavar="C1,...,C5",
                        help="U-Net decoder widths, deepest first (e.g. smp's 256,128,64,32,16)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any Config field, e.g. --set crop_size=224,320 "
                             "--set rotate_limit=10 (repeatable)")
    parser.add_argument("--init-from", default=None, metavar="CKPT",
                        help="fine-tune from a checkpoint (e.g. the CamVid run's best.pt): its "
                             "encoder and decoder, a new classifier for this dataset's classes")
    parser.add_argument("--freeze-encoder-epochs", type=int, default=None, metavar="N",
                        help="keep the encoder's weights fixed for the first N epochs")
    parser.add_argument("--tensorboard", action="store_true",
                        help="log loss, mIoU and learning rate per epoch to OUT/tensorboard")
    parser.add_argument("--device", default=None)
    own = parser.add_argument_group("your own labelled data (instead of CamVid)")
    own.add_argument("--images", default=None, metavar="DIR", help="folder of photos")
    own.add_argument("--masks", default=None, metavar="DIR",
                     help="folder of masks with the photos' names: class ids or colours")
    own.add_argument("--classes", default=None, metavar="FILE", help="class file, YAML or JSON")
    own.add_argument("--split", default=None, metavar="NAME",
                     help="data/splits/NAME.csv, created (80/10/10, seeded) when missing "
                          "(default: the name of the folder holding --images)")
    own.add_argument("--resplit", action="store_true", help="replace a stale saved split (see --split)")
    parser.add_argument("--where", action="store_true",
                        help="print the folder the notebooks and make report keep this "
                             "configuration's run in, and exit (e.g. for make serve)")
    args = parser.parse_args(argv)
    folder = (args.images, args.masks, args.classes)
    if any(folder) and not all(folder):
        parser.error("--images, --masks and --classes go together")
    overrides = {"epochs": args.epochs} if args.epochs else {}
    if args.init_from:
        overrides["init_from"] = str(Path(args.init_from).resolve())
    if args.freeze_encoder_epochs is not None:
        overrides["freeze_encoder_epochs"] = args.freeze_encoder_epochs
    if args.tensorboard:
        overrides["tensorboard"] = True
    if args.class_weighting:
        overrides["class_weighting"] = args.class_weighting
    if args.decoder_channels:
        overrides["decoder_channels"] = tuple(int(c) for c in args.decoder_channels.split(","))
    try:
        if all(folder):
            overrides.update(folder_overrides(*folder, args.split))
        overrides.update(parse_overrides(args.set))
        config = load_config(args.profile, args.model, **overrides)
        if args.where:
            print(Path(args.out) if args.out else run_folder(config))
            return 0
        # A folder dataset is checked (every bad file named) and split before any training.
        datasets = build_datasets(config, resplit=args.resplit) if config.dataset == "folder" else None
        result = fit(config, args.out, resume=args.resume, device=args.device, datasets=datasets)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        distributed.cleanup()
    if distributed.requested_world_size() <= 1 or int(os.environ.get("RANK", "0")) == 0:
        print(f"best epoch {result.best_epoch}: {result.best_checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
