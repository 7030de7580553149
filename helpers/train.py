"""Training: the study's recipe, resumable, fast on CPU and GPU.

AdamW + OneCycleLR (stepped per batch) + cross-entropy with the ignore index, optional
median-frequency class weights, early stopping on the validation loss with the best model
kept. Every epoch writes ``last.pt`` (enough to resume exactly) and the history; the epoch
with the lowest validation loss is kept as ``best.pt``.

Command line::

    python -m helpers.train --model unet-effnet-lite0 --profile quick [--out DIR] [--resume]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics, seed_everything
from .checkpoint import read_checkpoint, save_checkpoint
from .config import Config, load_config, project_path
from .data import IGNORE_INDEX, build_datasets, class_pixel_counts, median_frequency_weights
from .evaluate import default_workers, evaluate
from .inference import amp_dtype, autocast, labels_from_logits, pick_device
from .models import build_model


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
    """Stop when the validation loss has not gone lower for ``patience`` epochs in a row."""

    def __init__(self, patience: int = 7, best_loss: float = math.inf, best_epoch: int = -1,
                 bad_epochs: int = 0):
        self.patience = patience
        self.best_loss, self.best_epoch, self.bad_epochs = best_loss, best_epoch, bad_epochs

    def step(self, val_loss: float, epoch: int) -> bool:
        """Record an epoch's validation loss; return whether it is a new best."""
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs}


def run_dir(config: Config) -> Path:
    """Return the default output folder of a run: ``runs/<profile>/<model>``."""
    root = Path(config.runs_dir)
    root = root if root.is_absolute() else project_path(config.runs_dir)
    return root / config.profile / config.model


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


def _seed_epoch(config: Config, epoch: int, dataset) -> torch.Generator:
    """Seed everything random for one epoch, so a resumed run repeats an uninterrupted one."""
    seed = config.seed * 1000 + epoch
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
    every few batches, so the GPU is never stalled by a per-batch host sync.
    """
    from tqdm.auto import tqdm

    model.train()
    num_classes = model.num_classes
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
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
                cm += metrics.confusion_matrix(labels_from_logits(logits.detach()), masks, num_classes)
            batches += 1
            if progress and step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss_sum) / batches:.3f}",
                                miou=f"{metrics.summarize(cm)['miou']:.3f}")
    summary = metrics.summarize(cm)
    return {
        "loss": float(loss_sum) / max(batches, 1),
        "miou": summary["miou"],
        "pixel_accuracy": summary["pixel_accuracy"],
        "dice": summary["dice"],
    }


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
    ``epoch_callback`` gets each epoch's history row after ``last.pt`` is written.
    """
    from torch.utils.data import DataLoader

    out_dir = Path(out_dir) if out_dir else run_dir(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    device = pick_device(device)
    seed_everything(config.seed)
    if progress:
        print(config)

    datasets = datasets or build_datasets(config)
    train_set, val_set = datasets["train"], datasets["val"]
    classes = train_set.classes
    weights = class_weights_for(config, train_set)
    mean, std = normalization_for(config, train_set)
    model = build_model(config.model, classes.num_classes, width=config.width,
                        output_stride=config.extra.get("output_stride", 16), mean=mean, std=std,
                        decoder_channels=config.extra.get("decoder_channels"))
    model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    dtype = amp_dtype(device, config.amp, config.model)
    weights_on_device = None if weights is None else weights.to(device)

    workers = default_workers() if config.num_workers is None else config.num_workers
    batches_per_epoch = len(train_set) // config.batch_size
    if batches_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training images is fewer than one batch of {config.batch_size}")
    optimizer = build_optimizer(model, config, device)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * batches_per_epoch
    )
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 and device.type == "cuda" else None

    history: list[dict] = []
    start_epoch = 0
    stopper = EarlyStopping(config.patience)
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
        stopper = EarlyStopping(config.patience, **training["early_stopping"])
        torch.set_rng_state(training["rng"]["torch"])
        if progress:
            print(f"resuming {out_dir} at epoch {start_epoch + 1}")
    (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    test_set = None
    if config.track_test_each_epoch:
        from .data import SegmentationDataset, evenly_spaced

        full = datasets["test"]
        test_set = SegmentationDataset(evenly_spaced(full.pairs, config.track_test_each_epoch),
                                       full.classes, full.transform, cache=config.cache_images)
    stopped_early = False
    (out_dir / "done.json").unlink(missing_ok=True)
    for epoch in range(start_epoch, config.epochs):
        if stopper.should_stop:
            stopped_early = True
            if progress:
                print(f"early stop: no lower validation loss for {config.patience} epochs")
            break
        started = time.perf_counter()
        generator = _seed_epoch(config, epoch, train_set)
        loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, drop_last=True,
                            num_workers=workers, generator=generator, worker_init_fn=_worker_init,
                            persistent_workers=False, pin_memory=device.type == "cuda")
        desc = f"epoch {epoch + 1}/{config.epochs}"
        train_stats = train_one_epoch(model, loader, optimizer, scheduler, scaler, weights_on_device,
                                      device, dtype, config.channels_last, progress, desc)
        val = evaluate(model, val_set, config.batch_size, dtype, class_weights=weights,
                       num_workers=workers, progress=progress, desc="validate")
        row = {
            "epoch": epoch + 1,
            "lr": scheduler.get_last_lr()[0],
            "train_loss": train_stats["loss"],
            "train_miou": train_stats["miou"],
            "train_pixel_accuracy": train_stats["pixel_accuracy"],
            "train_dice": train_stats["dice"],
            "val_loss": val["loss"],
            "val_miou": val["miou"],
            "val_pixel_accuracy": val["pixel_accuracy"],
            "val_dice": val["dice"],
        }
        if test_set is not None:
            test = evaluate(model, test_set, config.batch_size, dtype, num_workers=workers,
                            progress=progress, desc="test (report only)")
            row["test_miou"] = test["miou"]
        row["seconds"] = time.perf_counter() - started
        history.append(row)

        improved = stopper.step(val["loss"], epoch)
        if improved:
            save_checkpoint(best_path, model, config, classes, metrics={"val": _scalars(val)},
                            epoch=epoch + 1)
        training_state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": epoch,
            "early_stopping": stopper.state_dict(),
            "history": history,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate()},
        }
        save_checkpoint(last_path, model, config, classes, metrics={"val": _scalars(val)},
                        epoch=epoch + 1, training_state=training_state)
        write_history(history, out_dir)
        if progress:
            print(f"{desc}: train loss {row['train_loss']:.3f} mIoU {row['train_miou']:.3f} | "
                  f"val loss {row['val_loss']:.3f} mIoU {row['val_miou']:.3f}"
                  f"{' *' if improved else ''} | {row['seconds']:.0f}s")
        if epoch_callback is not None:
            epoch_callback(row)
    (out_dir / "done.json").write_text(
        json.dumps({"best_epoch": stopper.best_epoch + 1, "epochs_run": len(history),
                    "stopped_early": stopped_early}) + "\n"
    )
    return TrainResult(out_dir, best_path, last_path, history, stopper.best_epoch + 1, stopped_early)


def ensure_trained(config: Config, out_dir: str | Path | None = None, progress: bool = True,
                   datasets: dict | None = None, device: str | torch.device | None = None) -> Path:
    """Return the best checkpoint of the run a configuration names, training it first if needed.

    A finished run (``done.json`` present, same configuration) is reused; an interrupted one is
    resumed from ``last.pt``; otherwise training starts. Notebooks call this, so a later
    notebook works on its own and re-running one does not train twice. ``datasets`` and
    ``device`` go to :func:`fit`.
    """
    out_dir = Path(out_dir) if out_dir else run_dir(config)
    saved = out_dir / "config.json"
    same = saved.is_file() and json.loads(saved.read_text()) == config.to_dict()
    if same and (out_dir / "done.json").is_file() and (out_dir / "best.pt").is_file():
        return out_dir / "best.pt"
    if not same and out_dir.exists():
        for name in ("last.pt", "best.pt", "done.json", "history.csv", "history.json"):
            (out_dir / name).unlink(missing_ok=True)
    return fit(config, out_dir, resume=same, device=device, datasets=datasets,
               progress=progress).best_checkpoint


def read_history(checkpoint_or_dir: str | Path) -> list[dict]:
    """Return the per-epoch history of a run (given its folder or one of its checkpoints)."""
    path = Path(checkpoint_or_dir)
    folder = path if path.is_dir() else path.parent
    return json.loads((folder / "history.json").read_text())


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
        if not sep or name not in fields or name in ("extra", "profile"):
            known = ", ".join(n for n in fields if n not in ("extra", "profile"))
            raise ValueError(f"--set {assignment!r}: expected FIELD=VALUE with FIELD one of {known}")
        default = getattr(defaults, name)
        if default is None and text.lower() in ("none", "null"):
            value = None
        elif isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"--set {assignment!r}: {name} takes true or false")
            value = text.lower() in ("true", "1")
        elif isinstance(default, tuple):
            value = tuple(int(part) for part in text.split(","))
        elif isinstance(default, float):
            value = float(text)
        elif isinstance(default, int) or fields[name].type.startswith("int"):
            value = int(text)
        else:
            value = text
        overrides[name] = value
    return overrides


def main(argv: list[str] | None = None) -> int:
    from .models import MODEL_NAMES

    parser = argparse.ArgumentParser(prog="python -m helpers.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet-effnet-lite0", choices=MODEL_NAMES)
    parser.add_argument("--profile", default=None, help="smoke, quick or full (default: $SEG_PROFILE or quick)")
    parser.add_argument("--out", default=None, help="output folder (default runs/PROFILE/MODEL)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--class-weighting", default=None,
                        choices=("none", "median_frequency", "sqrt_median_frequency"))
    parser.add_argument("--decoder-channels", default=None, metavar="C1,...,C5",
                        help="U-Net decoder widths, deepest first (e.g. smp's 256,128,64,32,16)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any Config field, e.g. --set crop_size=224,320 "
                             "--set rotate_limit=10 (repeatable)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    overrides = {"epochs": args.epochs} if args.epochs else {}
    if args.class_weighting:
        overrides["class_weighting"] = args.class_weighting
    if args.decoder_channels:
        overrides["extra"] = {"decoder_channels": [int(c) for c in args.decoder_channels.split(",")]}
    try:
        overrides.update(parse_overrides(args.set))
        config = load_config(args.profile, args.model, **overrides)
        result = fit(config, args.out, resume=args.resume, device=args.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"best epoch {result.best_epoch}: {result.best_checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
