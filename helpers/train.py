"""Training: the study's recipe, resumable, fast on CPU and GPU.

AdamW + OneCycleLR (stepped per batch) + cross-entropy with the ignore index, optional
median-frequency class weights, early stopping on the validation loss with the best model
kept. Every epoch writes ``last.pt`` (enough to resume exactly) and the history; the epoch
with the lowest validation loss is kept as ``best.pt``.

:func:`fit` trains exactly the configuration it is given; :func:`helpers.budget.plan_run`
plans a configuration for this machine first (the notebooks do), and :func:`ensure_trained`
reuses or resumes a run of it.

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
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import distributed, seed_everything
from .checkpoint import rng_state, save_checkpoint, set_rng_state
from .config import Config, load_config, parse_overrides
from .datasets import build_datasets
from .errors import CheckpointError
from .evaluate import evaluate
from .finetune import freeze_encoder, freeze_stages, init_from_checkpoint
from .inference import pick_device
from .machine import default_workers
from .models import build_model
from .plan import plan_from_cache
from .precision import Precision, announce, choose_precision
from .runs import (
    clear_done,
    finished_run,
    mark_done,
    other_run_in,
    read_history,
    read_run_checkpoint,
    refuse_other_run,
    run_dir,
    run_folder,
    validated_epochs,
    write_history,
    write_run_config,
)
from .schedule import EarlyStopping, annealed_epoch, first_validated_epoch, one_cycle_learning_rates
from .step import TrainState, build_optimizer, depthwise_convs_in_float32, train_one_epoch
from .training_data import (
    class_weights_for,
    epoch_seed,
    normalization_for,
    seed_epoch,
    seed_worker,
    tracked_test_images,
    training_split,
)

# Also importable from here, where the notebooks and benchmarks have always found them; they
# live in helpers.schedule, helpers.runs and helpers.step.
__all__ = ["TrainResult", "TrainState", "annealed_epoch", "build_optimizer",
           "depthwise_convs_in_float32", "ensure_trained", "fit", "one_cycle_learning_rates",
           "read_history", "train_one_epoch", "validated_epochs"]


@dataclass
class TrainResult:
    """What :func:`fit` returns: where the run lives and how it went."""

    out_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict]
    best_epoch: int
    stopped_early: bool


@dataclass
class Run:
    """One training run while :func:`fit` trains it: its data, network, training state,
    schedule, history and where it writes (only process 0 writes and shows progress)."""

    config: Config
    out_dir: Path
    processes: distributed.Processes
    progress: bool
    datasets: dict
    train_set: object
    classes: object
    class_weights: torch.Tensor | None
    network: torch.nn.Module  # what is saved and evaluated, never the DDP wrapper
    precision: Precision
    state: TrainState
    batches_per_epoch: int
    stopper: EarlyStopping
    first_validated: int
    workers: int
    test_set: object = None
    batches: object = None  # on-device augmentation (Config.augment_on_device)
    sampler: object = None
    history: list[dict] = field(default_factory=list)
    start_epoch: int = 0

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.processes.rank == 0

    @property
    def last_path(self) -> Path:
        """The checkpoint that resumes the run."""
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        """The checkpoint of the epoch with the lowest validation loss."""
        return self.out_dir / "best.pt"


def open_run_folder(config: Config, out_dir, resume: bool, processes) -> Path:
    """Return the run's folder, created; refuse one holding another configuration's run."""
    out_dir = Path(out_dir) if out_dir else run_dir(config)
    if differences := other_run_in(out_dir, config, processes.world_size):
        refuse_other_run(out_dir, differences)
    if processes.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    if resume and processes.is_distributed:
        seen = distributed.all_gather_objects((out_dir / "last.pt").is_file())
        if len(set(seen)) > 1:  # every process must resume, or none
            raise ValueError(f"{out_dir / 'last.pt'} is visible to processes "
                             f"{[r for r, s in enumerate(seen) if s]} of {processes.world_size} "
                             "only: with several machines, --out must be a folder they all see "
                             "(a shared file system)")
    return out_dir


def build_run(config: Config, out_dir: Path, processes, device: torch.device, datasets: dict | None,
              progress: bool, resume: bool) -> Run:
    """Build everything a run starts from: data, class weights, the network (and its
    ``init_from`` weights), precision, optimizer, one-cycle scheduler and early stopping."""
    datasets = datasets or build_datasets(config)
    train_set = training_split(config, datasets)
    weights = class_weights_for(config, train_set)
    mean, std = normalization_for(config, train_set)
    network = build_model(config.model, train_set.classes.num_classes, width=config.width,
                          output_stride=config.output_stride, mean=mean, std=std,
                          decoder_channels=config.decoder_channels)
    if config.init_from and not (resume and (out_dir / "last.pt").is_file()):  # else from last.pt
        init_from_checkpoint(network, config.init_from, progress)
    network.to(device)
    if config.channels_last:
        network = network.to(memory_format=torch.channels_last)
    precision = choose_precision(device, config.amp, config.model)  # saved in checkpoints
    if progress:
        announce(precision)
    # Steps per epoch of the global batch: what the one-cycle schedule and early stopping count.
    batches_per_epoch = len(train_set) // (config.batch_size * processes.world_size)
    if batches_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training images is fewer than one batch of "
                         f"{config.batch_size} x {processes.world_size} process(es)")
    optimizer = build_optimizer(network, config, device)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr,
                                                    total_steps=config.epochs * batches_per_epoch)
    state = TrainState(network, optimizer, scheduler, device, precision.dtype,
                       torch.amp.GradScaler(device.type) if precision.grad_scaler else None,
                       None if weights is None else weights.to(device), config.channels_last)
    armed = annealed_epoch(config.epochs, batches_per_epoch, config.early_stop_lr_fraction)
    stopper = EarlyStopping(config.patience if config.fit_on == "train" else math.inf,
                            armed_from=armed)
    first = first_validated_epoch(config.epochs, batches_per_epoch, config.early_stop_lr_fraction,
                                  config.validate_annealed_only)
    return Run(config, out_dir, processes, progress, datasets, train_set, train_set.classes,
               weights, network, precision, state, batches_per_epoch, stopper, first,
               default_workers() if config.num_workers is None else config.num_workers)


def restore(run: Run) -> None:
    """Continue from ``last.pt``: weights, optimizer, scheduler, scaler, history, early
    stopping and random state, so the run ends where an uninterrupted one would.

    A ``last.pt`` without training state (a ``best.pt`` copied over it) or that cannot be read
    raises :class:`CheckpointError` naming the file and the fix.
    """
    path = run.last_path
    saved = read_run_checkpoint(path)
    training = saved.get("training_state")
    if not isinstance(training, dict):
        raise CheckpointError(f"{path} holds no training state (a best.pt, or a checkpoint "
                              "written for prediction), so the run cannot resume from it; train "
                              "without --resume into a new folder (--out), or fine-tune from it "
                              "with --init-from")
    state = run.state
    try:
        run.network.load_state_dict(saved["state_dict"])
        state.optimizer.load_state_dict(training["optimizer"])
        state.scheduler.load_state_dict(training["scheduler"])
        if state.scaler is not None and training.get("scaler"):
            state.scaler.load_state_dict(training["scaler"])
        history, epoch = training["history"], training["epoch"]
        stopping = {**training["early_stopping"], "armed_from": run.stopper.armed_from}
        rng = training["rng"]
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        reason = f"no {error} field" if isinstance(error, KeyError) else str(error).splitlines()[0]
        raise CheckpointError(f"{path}: its training state does not fit this run ({reason}); "
                              "train without --resume into a new folder (--out)") from None
    run.history, run.start_epoch = history, epoch + 1
    run.stopper = EarlyStopping(run.stopper.patience, **stopping)
    set_rng_state(rng)
    if run.progress:
        print(f"resuming {run.out_dir} at epoch {run.start_epoch + 1}")


def prepare_processes(run: Run) -> None:
    """Freeze the configured encoder stages and, under torchrun, synchronise BatchNorm and
    wrap the network in DistributedDataParallel (the training state's model)."""
    config, processes = run.config, run.processes
    freeze_stages(run.network, config.frozen_stages)  # before DDP, which skips frozen parameters
    if not processes.is_distributed:
        return
    if config.sync_batchnorm:
        run.network = distributed.convert_sync_batchnorm(run.network, run.state.device)
    from torch.nn.parallel import DistributedDataParallel

    device = run.state.device
    run.state.model = DistributedDataParallel(
        run.network, device_ids=[device.index] if device.type == "cuda" else None,
        # Frozen encoder epochs leave parameters without gradients.
        find_unused_parameters=config.freeze_encoder_epochs > run.start_epoch)


def prepare_loaders(run: Run) -> None:
    """Set up what feeds the epochs: on-device batches, or a distributed sampler, and the
    tracked test images."""
    config, processes = run.config, run.processes
    run.test_set = tracked_test_images(config, run.datasets)
    if config.augment_on_device:
        from .batch_transforms import DeviceBatches

        run.batches = DeviceBatches.from_dataset(
            run.train_set, run.state.device, config.batch_size, config.crop_size,
            config.rotate_limit, config.scale_limit, rank=processes.rank,
            num_replicas=processes.world_size)
    elif processes.is_distributed:
        from torch.utils.data import DistributedSampler

        # set_epoch(epoch) shuffles with seed + epoch: epoch_seed(config, epoch) in every process.
        run.sampler = DistributedSampler(run.train_set, num_replicas=processes.world_size,
                                         rank=processes.rank, shuffle=True,
                                         seed=epoch_seed(config, 0), drop_last=True)


def epoch_loader(run: Run, epoch: int):
    """Return an epoch's training batches, everything random seeded for that epoch."""
    from torch.utils.data import DataLoader

    config = run.config
    freeze_encoder(run.network, epoch < config.freeze_encoder_epochs)
    freeze_stages(run.network, config.frozen_stages)
    generator = seed_epoch(config, epoch, run.train_set, run.processes.rank)
    if run.batches is not None:
        # The same order in every process (each takes its share), as in one process.
        run.batches.generator = torch.Generator().manual_seed(epoch_seed(config, epoch))
        return run.batches
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
    return DataLoader(run.train_set, batch_size=config.batch_size, shuffle=run.sampler is None,
                      sampler=run.sampler, drop_last=True, num_workers=run.workers,
                      generator=generator, worker_init_fn=seed_worker,
                      pin_memory=run.state.device.type == "cuda")


def validate(run: Run, epoch: int, row: dict) -> dict:
    """Score an epoch on validation (and the tracked test images) when it is one the run
    validates; add the figures to its history ``row`` and return the validation result."""
    config = run.config
    if epoch < run.first_validated and epoch != config.epochs - 1:
        return {}
    val = evaluate(run.network, run.datasets["val"], config.batch_size, run.state.dtype,
                   class_weights=run.class_weights, num_workers=run.workers,
                   progress=run.progress, desc="validate", distributed=True)
    row.update({f"val_{k}": val[k] for k in ("loss", "miou", "pixel_accuracy", "dice")})
    if run.test_set is not None:
        test = evaluate(run.network, run.test_set, config.batch_size, run.state.dtype,
                        num_workers=run.workers, progress=run.progress,
                        desc="test (report only)", distributed=True)
        row["test_miou"] = test["miou"]
    return val


def keep_best(run: Run, epoch: int, val: dict) -> bool:
    """Return whether an epoch is the run's best so far (chosen on the validation loss; a
    train+val fit keeps its last epoch, an unscored epoch is never chosen)."""
    if not val:
        return False
    if run.config.fit_on == "train":
        return run.stopper.step(val["loss"], epoch)
    run.stopper.best_epoch = epoch  # the validation split is training data: keep the last epoch
    return True


def save_epoch(run: Run, epoch: int, val: dict, improved: bool) -> None:
    """Write the epoch's files (process 0): ``best.pt`` when it improved, ``last.pt`` with
    everything needed to resume, and the history."""
    if not run.writes:
        return
    state, scalars = run.state, {"val": {k: v for k, v in val.items() if isinstance(v, int | float)}}
    common = {"metrics": scalars, "epoch": epoch + 1, "world_size": run.processes.world_size,
              "precision": run.precision.to_dict()}
    if improved:
        save_checkpoint(run.best_path, run.network, run.config, run.classes, **common)
    training_state = {
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "epoch": epoch,
        "early_stopping": run.stopper.state_dict(),
        "history": run.history,
        "rng": rng_state(),
    }
    save_checkpoint(run.last_path, run.network, run.config, run.classes,
                    training_state=training_state, **common)
    write_history(run.history, run.out_dir)


def train_epoch(run: Run, epoch: int) -> tuple[dict, bool]:
    """Train, score and save one epoch; return its history row and whether it is the best."""
    started = time.perf_counter()
    desc = f"epoch {epoch + 1}/{run.config.epochs}"
    stats = train_one_epoch(run.state, epoch_loader(run, epoch), run.progress, desc)
    trained = time.perf_counter()
    # Without synchronised BatchNorm each process has its own running statistics: score
    # (everywhere) the model rank 0 saves.
    distributed.broadcast_buffers(run.network)
    row = {"epoch": epoch + 1, "lr": run.state.scheduler.get_last_lr()[0],
           **{f"train_{k}": stats[k] for k in ("loss", "miou", "pixel_accuracy", "dice")}}
    val = validate(run, epoch, row)
    row.update(seconds=time.perf_counter() - started, train_seconds=trained - started,
               world_size=run.processes.world_size)
    run.history.append(row)
    improved = keep_best(run, epoch, val)
    save_epoch(run, epoch, val, improved)
    if run.progress:
        scored = (f"val loss {row['val_loss']:.3f} mIoU {row['val_miou']:.3f}"
                  f"{' *' if improved else ''}" if val else
                  f"validation from epoch {run.first_validated + 1}")
        print(f"{desc}: train loss {row['train_loss']:.3f} mIoU {row['train_miou']:.3f} | "
              f"{scored} | {row['seconds']:.0f}s")
    return row, improved


def fit(
    config: Config,
    out_dir: str | Path | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    datasets: dict | None = None,
    progress: bool = True,
    epoch_callback: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train a model with exactly this configuration and return where its checkpoints are.

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
    processes = distributed.setup(device)
    progress = progress and processes.rank == 0
    out_dir = open_run_folder(config, out_dir, resume, processes)
    device = processes.device if processes.is_distributed else pick_device(device)
    seed_everything(config.seed)
    if progress:
        print(config)
        if processes.is_distributed:
            print(f"{processes.world_size} processes ({device.type}): global batch "
                  f"{config.batch_size} x {processes.world_size} = "
                  f"{config.batch_size * processes.world_size}, lr {config.lr:g}, BatchNorm "
                  f"{'synchronised' if config.sync_batchnorm else 'per process'}")
    run = build_run(config, out_dir, processes, device, datasets, progress, resume)
    if resume and run.last_path.is_file():
        restore(run)
    prepare_processes(run)
    if run.writes:
        write_run_config(out_dir, config, processes.world_size)
        epoch_callback = with_tensorboard(config, out_dir, epoch_callback)
        clear_done(out_dir)
    prepare_loaders(run)
    stopped_early = False
    for epoch in range(run.start_epoch, config.epochs):
        if run.stopper.should_stop:
            stopped_early = True
            if progress:
                print(f"early stop: no lower validation loss for {config.patience} epochs")
            break
        row, _ = train_epoch(run, epoch)
        if epoch_callback is not None:
            epoch_callback(row)
    if run.writes:
        mark_done(out_dir, run.stopper.best_epoch + 1, len(run.history), stopped_early)
    distributed.barrier()  # every process returns once rank 0's files are written
    return TrainResult(out_dir, run.best_path, run.last_path, run.history,
                       run.stopper.best_epoch + 1, stopped_early)


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


def ensure_trained(config: Config, out_dir: str | Path | None = None, progress: bool = True,
                   datasets: dict | None = None, device: str | torch.device | None = None) -> Path:
    """Return the best checkpoint of the run of exactly this configuration, training it first
    if needed.

    A finished run (``done.json`` present, same configuration) is reused; an interrupted one is
    resumed from ``last.pt``; otherwise training starts. Notebooks call this with the
    configuration :func:`helpers.budget.plan_run` planned for the machine (and printed), so a
    later notebook works on its own and re-running one does not train twice. ``datasets`` and
    ``device`` go to :func:`fit`.

    A run is never removed: when the default folder holds a run of another configuration
    (trained by hand, or before the profile's recipe changed), this one goes beside it, to
    ``<folder>@<config hash>`` (:func:`helpers.runs.run_folder`), where later calls find it
    again. An ``out_dir`` given explicitly that holds another run is refused (:class:`InputError`).
    """
    if out_dir is None:
        out_dir = run_folder(config)
        if out_dir != run_dir(config) and progress:
            print(f"{run_dir(config)} holds a run of another configuration, kept as it is; "
                  f"this one is in {out_dir}")
    out_dir = Path(out_dir)
    if (best := finished_run(out_dir, config)) is not None:
        return best
    resume = not other_run_in(out_dir, config) and (out_dir / "last.pt").is_file()
    return fit(config, out_dir, resume=resume, device=device, datasets=datasets,
               progress=progress).best_checkpoint


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


def _parser() -> argparse.ArgumentParser:
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
                             "configuration's run in (its epochs planned from the batch times "
                             "they measured on this machine), and exit (e.g. for make serve)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (2: a bad input, named on one line)."""
    parser = _parser()
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
            # Planned from the batch times plan_run cached here, as the notebooks planned it.
            print(Path(args.out) if args.out else run_folder(plan_from_cache(config)))
            return 0
        # A folder dataset is checked (every bad file named) and split before any training.
        datasets = build_datasets(config, resplit=args.resplit) if config.dataset == "folder" else None
        result = fit(config, args.out, resume=args.resume, device=args.device, datasets=datasets)
    except (FileNotFoundError, ValueError) as error:  # InputError included
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        distributed.cleanup()
    if distributed.requested_world_size() <= 1 or int(os.environ.get("RANK", "0")) == 0:
        print(f"best epoch {result.best_epoch}: {result.best_checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
