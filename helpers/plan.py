"""The epochs a time budget fits: measured batch times, cached per machine, and the arithmetic.

A quick run has ``train_minutes`` (:data:`helpers.config.RECIPES`). On a CPU its epochs are
planned from the median time of one training batch and one evaluation batch on this machine
(:mod:`helpers.budget` measures them once and caches them here, keyed by the CPU, the torch
version, the thread count, the precision and what the network computes): as many epochs as fit
in ``train_minutes``, at most the table's. ``SEG_TIME_BUDGET=off`` keeps the table's epochs.

This module only reads the cache and does the arithmetic, so that ``python -m helpers.train
--where`` finds the run the notebooks planned without measuring anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings

import torch

from .config import TIME_BUDGET_ENV, Config
from .files import write_json
from .precision import Precision, choose_precision, cpu_info
from .runtime import cache_dir, read_cache
from .schedule import first_validated_epoch

CACHE_FILE = "epoch_times.json"
CACHE_FORMAT = "helpers-epoch-time-cache/1"
TIMINGS = ("seconds_per_epoch", "seconds_per_train_batch", "seconds_per_eval_batch")


def budget_off() -> bool:
    """Return whether ``SEG_TIME_BUDGET`` switches planning off (``off``, ``0`` or ``none``)."""
    return os.environ.get(TIME_BUDGET_ENV, "").strip().lower() in ("0", "off", "none")


def needs_plan(config: Config, device: torch.device) -> bool:
    """Return whether a run's epochs are planned on this machine: a CPU run with
    ``train_minutes`` not planned yet, unless ``SEG_TIME_BUDGET=off``."""
    return (config.train_minutes is not None and config.time_budget is None
            and device.type == "cpu" and not budget_off())


def epoch_plan(config: Config, datasets: dict) -> tuple[int, int, int]:
    """Return (training batches, evaluation batches, evaluation images) of one epoch of ``config``.

    An epoch is every full training batch, then (when it is validated) the validation split and
    the tracked test images at their native size.
    """
    train_batches = len(datasets["train"]) // config.batch_size
    tracked = min(config.track_test_each_epoch, len(datasets["test"]))
    eval_batches = (math.ceil(len(datasets["val"]) / config.batch_size)
                    + math.ceil(tracked / config.batch_size))
    return train_batches, eval_batches, len(datasets["val"]) + tracked


def cache_key(config: Config, precision: Precision) -> dict:
    """Return what the batch times of ``config`` depend on: the machine and what is computed."""
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
           "output_stride": config.output_stride,
           # What a training batch's time includes (batches timed before loading was counted
           # are measured again).
           "train_batch": "load+step"}
    return json.loads(json.dumps(key))


def _key_id(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def cached_epoch_times(config: Config, precision: Precision) -> dict | None:
    """Return the batch times of ``config`` cached on this machine, or None where none or only a
    corrupt or stale entry is cached."""
    key = cache_key(config, precision)
    entry = read_cache(cache_dir() / CACHE_FILE, CACHE_FORMAT).get(_key_id(key))
    if (isinstance(entry, dict) and entry.get("key") == key
            and all(isinstance(entry.get(k), int | float) and entry[k] > 0 for k in TIMINGS)):
        return entry
    return None


def store_epoch_times(config: Config, precision: Precision, timing: dict) -> dict:
    """Add measured batch times to the cache (atomically; a read-only cache only warns) and
    return the entry."""
    key = cache_key(config, precision)
    entry = {"key": key, **timing}
    path = cache_dir() / CACHE_FILE
    entries = read_cache(path, CACHE_FORMAT)
    entries[_key_id(key)] = entry
    try:
        write_json(path, {"format": CACHE_FORMAT, "entries": entries})
    except OSError as error:
        warnings.warn(f"{path}: cache not written ({error})", stacklevel=2)
    return entry


def planned_seconds(config: Config, epochs: int, timing: dict, plan: tuple[int, int, int]) -> float:
    """Return the seconds ``epochs`` epochs of ``config`` take: every training batch, plus the
    evaluation batches of the epochs it validates (with ``validate_annealed_only``, only those
    from the annealed one on), at the measured ``timing``; ``plan`` is :func:`epoch_plan`'s."""
    train_batches, eval_batches, _ = plan
    first = first_validated_epoch(epochs, train_batches, config.early_stop_lr_fraction,
                                  config.validate_annealed_only)
    return (epochs * train_batches * timing["seconds_per_train_batch"]
            + (epochs - first) * eval_batches * timing["seconds_per_eval_batch"])


def epochs_within_budget(config: Config, timing: dict, plan: tuple[int, int, int]) -> int:
    """Return the most epochs, at most ``config.epochs`` and at least 1, that
    :func:`planned_seconds` fits in ``config.train_minutes`` at the measured ``timing``."""
    fitting = [epochs for epochs in range(1, config.epochs + 1)
               if planned_seconds(config, epochs, timing, plan) <= 60 * config.train_minutes]
    return max(fitting, default=1)


def planned_config(config: Config, timing: dict, plan: tuple[int, int, int],
                   precision: Precision) -> Config:
    """Return ``config`` with the epochs that fit its ``train_minutes`` at ``timing``, and
    ``time_budget`` recording the measurement and the decision."""
    epochs = epochs_within_budget(config, timing, plan)
    record = {"train_minutes": config.train_minutes, "table_epochs": config.epochs,
              "epochs": epochs,
              "seconds_per_train_batch": round(timing["seconds_per_train_batch"], 4),
              "seconds_per_eval_batch": round(timing["seconds_per_eval_batch"], 4),
              "train_batches": plan[0], "eval_batches": plan[1],
              "planned_minutes": round(planned_seconds(config, epochs, timing, plan) / 60, 1),
              "all_epochs_minutes": round(planned_seconds(config, config.epochs, timing, plan) / 60, 1),
              "precision": str(precision), "cpu": cpu_info().describe(),
              "measured": timing.get("date")}
    return config.replace(epochs=epochs, time_budget=record)


def describe_plan(config: Config) -> str:
    """Return the two lines that say what :func:`planned_config` decided for ``config`` and why."""
    record = config.time_budget
    kept = ("all" if record["epochs"] == record["table_epochs"]
            else f"{record['epochs']} of the table's")
    return (f"time budget: {config.model} trains {kept} {record['table_epochs']} epochs, about "
            f"{record['planned_minutes']:g} of its {record['train_minutes']:g} minutes on this CPU "
            f"({record['precision']})\n"
            f"  measured {record['seconds_per_train_batch']:.3f} s per training batch x "
            f"{record['train_batches']}, {record['seconds_per_eval_batch']:.3f} s per evaluation "
            f"batch x {record['eval_batches']} per validated epoch; all {record['table_epochs']} "
            f"epochs would take {record['all_epochs_minutes']:g} min (SEG_TIME_BUDGET=off keeps "
            "them)")


def plan_from_cache(config: Config, datasets: dict | None = None,
                    device: str | torch.device | None = None) -> Config:
    """Return ``config`` planned from the batch times cached on this machine (what
    :func:`helpers.budget.plan_run` planned with); unchanged where there is nothing to plan or
    nothing cached."""
    from .inference import pick_device

    device = pick_device(device)
    if not needs_plan(config, device):
        return config
    precision = choose_precision(device, config.amp, config.model)
    timing = cached_epoch_times(config, precision)
    if timing is None:
        return config
    from .datasets import build_datasets

    return planned_config(config, timing, epoch_plan(config, datasets or build_datasets(config)),
                          precision)
