"""Fitting a profile's training into its time budget on a CPU without native bf16.

The quick profile's schedules (16 epochs for the transfer U-Net, 8 for the mini U-Net) were
sized on a CPU with native bf16, where the whole report takes about 30 minutes on 2 cores.
Without native bf16 the networks train in float32 (:mod:`helpers.precision`), which made a
quick epoch of the transfer U-Net 1.2x to 1.9x longer on the same CPU
(``benchmarks/train_throughput.py --precisions auto,off``, three runs), and older CPUs are slower
still. There a configuration with ``train_minutes`` set adapts, in two steps:

1. the profile's float32 recipe (:data:`helpers.config.FLOAT32_RECIPE`): the pretrained
   networks train with their first two encoder stages frozen, a cheaper step, and are
   validated only once the schedule has annealed;
2. as many epochs as the measured epoch time of that recipe lets fit in ``train_minutes``.

:func:`helpers.train.ensure_trained` (what the notebooks and ``make report`` call) applies it;
``python -m helpers.train`` trains what it is given. The epoch time is measured once per
machine (a few training and evaluation batches, seconds) and cached beside the runtime
timings (:func:`helpers.runtime.cache_dir`); a corrupt or stale cache is measured again.
``benchmarks/report_budget.py`` prints the plan for this CPU and for slower ones.

CPUs with native bf16 keep the profile's recipe and epochs untouched, whatever a measurement
on a busy machine would say, so their runs stay reproducible; ``SEG_TIME_BUDGET=off`` keeps
them everywhere (more accuracy, a longer report). The adapted configuration records what was
measured and changed (``Config.time_budget``) and is printed with the run, saved in its
checkpoints and in the results.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import statistics
import time
from datetime import UTC, datetime

import torch

from .config import FLOAT32_RECIPE, Config
from .inference import pick_device, predict_logits
from .precision import Precision, choose_precision, cpu_info
from .runtime import cache_dir, read_cache, write_cache

CACHE_FILE = "epoch_times.json"
CACHE_FORMAT = "helpers-epoch-time-cache/1"


def needs_budget(config: Config, device: torch.device, precision: Precision) -> bool:
    """Return whether a run's epochs are sized to its time budget on this machine.

    Only on a CPU training in float32 without native bf16 units (or forced to float32 with
    ``amp="off"``, which simulates one): elsewhere the profile's epochs stand.
    """
    if config.train_minutes is None or device.type != "cpu" or precision.dtype is not None:
        return False
    return not cpu_info().native_bf16 or config.amp == "off"


def epoch_plan(config: Config, datasets: dict) -> tuple[int, int, int]:
    """Return (training batches, evaluation batches, evaluation images) of one epoch of ``config``.

    An epoch is every full training batch, then the validation split and the tracked test
    images at their native size.
    """
    train_batches = len(datasets["train"]) // config.batch_size
    tracked = min(config.track_test_each_epoch, len(datasets["test"]))
    eval_batches = (math.ceil(len(datasets["val"]) / config.batch_size)
                    + math.ceil(tracked / config.batch_size))
    return train_batches, eval_batches, len(datasets["val"]) + tracked


def measure_epoch_seconds(config: Config, device: torch.device, precision: Precision,
                          datasets: dict, batches: int = 5) -> dict:
    """Return the measured seconds of one training batch and one evaluation batch, and of an epoch.

    Times ``batches`` training steps of :func:`helpers.train.train_one_epoch` on real
    training crops and three evaluation batches at CamVid's 360x480, one at a time after one
    untimed warm-up of each (kernel selection), and keeps the median of each: a batch slowed
    by something else on the machine does not size the epochs.
    """
    from .datasets import SegmentationDataset
    from .models import build_model
    from .train import build_optimizer, freeze_stages, train_one_epoch

    full = datasets["train"]
    train_set = SegmentationDataset(full.pairs[: batches * config.batch_size], full.classes,
                                    full.transform)
    loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size)
    samples = list(loader)
    model = build_model(config.model, train_set.classes.num_classes, width=config.width,
                        output_stride=config.output_stride,
                        decoder_channels=config.decoder_channels).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    freeze_stages(model, config.frozen_stages)
    optimizer = build_optimizer(model, config, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def train(steps):
        train_one_epoch(model, steps, optimizer, scheduler, None, None, device, precision.dtype,
                        config.channels_last, progress=False)

    def timed(step) -> float:
        started = time.perf_counter()
        step()
        return time.perf_counter() - started

    train(samples[:1])
    train_s = statistics.median(timed(functools.partial(train, [sample])) for sample in samples)
    images = torch.rand(config.batch_size, 3, 360, 480)
    model.eval()

    def evaluate():
        predict_logits(model, images, precision.dtype, channels_last=config.channels_last)

    evaluate()
    eval_s = statistics.median(timed(evaluate) for _ in range(3))
    train_batches, eval_batches, _ = epoch_plan(config, datasets)
    return {"seconds_per_train_batch": train_s, "seconds_per_eval_batch": eval_s,
            "seconds_per_epoch": train_batches * train_s + eval_batches * eval_s}


def _cache_key(config: Config, precision: Precision) -> dict:
    cpu = cpu_info()
    key = {"cpu": cpu.model,
           "cpu_flags": hashlib.sha256(" ".join(sorted(cpu.flags)).encode()).hexdigest()[:16],
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "precision": precision.name,
           "config": {k: getattr(config, k) for k in ("model", "width", "crop_size", "batch_size",
                                                      "channels_last", "track_test_each_epoch",
                                                      "max_train_images", "max_val_images",
                                                      "max_test_images", "dataset", "frozen_stages")},
           "decoder_channels": config.decoder_channels,
           "output_stride": config.output_stride}
    return json.loads(json.dumps(key))


def _key_id(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def cached_epoch_times(config: Config, precision: Precision) -> dict | None:
    """Return the batch times of ``config`` cached on this machine (what
    :func:`sized_to_budget` planned with), or None where none or only a corrupt or stale entry
    is cached."""
    key = _cache_key(config, precision)
    entry = read_cache(cache_dir() / CACHE_FILE, CACHE_FORMAT).get(_key_id(key))
    timings = ("seconds_per_epoch", "seconds_per_train_batch", "seconds_per_eval_batch")
    if (isinstance(entry, dict) and entry.get("key") == key
            and all(isinstance(entry.get(k), int | float) and entry[k] > 0 for k in timings)):
        return entry
    return None


def sized_to_budget(config: Config, device: str | torch.device | None = None,
                    datasets: dict | None = None, progress: bool = True) -> Config:
    """Return ``config`` adapted to ``train_minutes`` on a CPU training in float32.

    Unchanged where :func:`needs_budget` says no or ``config`` was sized already. Otherwise
    the profile's float32 recipe applies (:data:`helpers.config.FLOAT32_RECIPE`: the first
    encoder stages frozen, validation once annealed), with the most epochs, at least 1 and at
    most the profile's, that the measured batch times fit in ``train_minutes``
    (:func:`epochs_within_budget`); ``time_budget`` records the measurement and the changes,
    and the decision is printed.
    """
    device = pick_device(device)
    precision = choose_precision(device, config.amp, config.model)
    if config.time_budget is not None or not needs_budget(config, device, precision):
        return config  # already sized, or nothing to size
    recipe = FLOAT32_RECIPE.get(config.profile, {}).get(config.model, {})
    profile_config, config = config, config.replace(**recipe)
    from .datasets import build_datasets

    datasets = datasets or build_datasets(config)
    entry = cached_epoch_times(config, precision)
    if entry is None:
        path = cache_dir() / CACHE_FILE
        if progress:
            print(f"measuring one {config.profile} epoch of {config.model} on this CPU "
                  f"({precision}; once, cached in {path})", flush=True)
        key = _cache_key(config, precision)
        entry = {"key": key, **measure_epoch_seconds(config, device, precision, datasets),
                 "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
        entries = read_cache(path, CACHE_FORMAT)
        entries[_key_id(key)] = entry
        write_cache(path, entries, CACHE_FORMAT)
    plan = epoch_plan(config, datasets)
    epochs = epochs_within_budget(config, entry, plan)
    if epochs == config.epochs and not recipe:
        return profile_config
    changes = {k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items()}
    minutes = planned_seconds(config, epochs, entry, plan) / 60
    record = {"train_minutes": config.train_minutes, "profile_epochs": config.epochs,
              "seconds_per_epoch": round(entry["seconds_per_epoch"]),
              "planned_minutes": round(minutes, 1), "precision": str(precision),
              "cpu": cpu_info().describe(), "recipe": changes}
    if progress:
        shown = ", ".join(f"{k}={v}" for k, v in changes.items())
        print(f"time budget ({precision}): {config.model} with {shown or 'the profile recipe'}; "
              f"{epochs} of the profile's {config.epochs} epochs, about {minutes:.1f} min on this "
              f"CPU, fit the {config.profile} profile's {config.train_minutes:g} min "
              f"({entry['seconds_per_epoch']:.0f} s per validated epoch; SEG_TIME_BUDGET=off keeps "
              "the profile's recipe and every epoch)", flush=True)
    return config.replace(epochs=epochs, time_budget=record)


def epochs_within_budget(config: Config, timing: dict, plan: tuple[int, int, int]) -> int:
    """Return the most epochs, at most the profile's and at least 1, that :func:`planned_seconds`
    fits in ``config.train_minutes`` at the measured ``timing``."""
    fitting = [epochs for epochs in range(1, config.epochs + 1)
               if planned_seconds(config, epochs, timing, plan) <= 60 * config.train_minutes]
    return max(fitting, default=1)


def planned_seconds(config: Config, epochs: int, timing: dict, plan: tuple[int, int, int]) -> float:
    """Return the seconds ``epochs`` epochs of ``config`` take: every training batch, plus the
    evaluation batches of the epochs it validates (with ``validate_annealed_only``, only those
    from the annealed one on), at the measured ``timing``; ``plan`` is :func:`epoch_plan`'s."""
    from .train import annealed_epoch

    train_batches, eval_batches, _ = plan
    first = (annealed_epoch(epochs, train_batches, config.early_stop_lr_fraction)
             if config.validate_annealed_only else 0)
    return (epochs * train_batches * timing["seconds_per_train_batch"]
            + (epochs - first) * eval_batches * timing["seconds_per_eval_batch"])
