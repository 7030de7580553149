"""Planning a run for this machine: the epochs that fit its time budget, from measured batch times.

The quick profile's rows (:data:`helpers.config.RECIPES`) give each network a share of the
report's minutes (``Config.train_minutes``) and the most epochs it may train. How many fit
depends on the CPU: with native bf16 units (AMX, AVX512-BF16) a quick epoch of the transfer
U-Net takes about half as long as in float32, and older CPUs are slower still. So before
training, :func:`plan_run` (what the notebooks call) times a few training and evaluation
batches of the configuration on this machine, once, caches the times (:mod:`helpers.plan`),
and returns the configuration with as many epochs as fit, printing what it decided and why::

    config = plan_run(load_config(model="unet-effnet-lite0"))
    print(config)  # what trains: the planned epochs, and time_budget saying why
    best = ensure_trained(config)

Unchanged where there is nothing to plan: the smoke and full profiles (no ``train_minutes``),
a GPU, a configuration planned already, and ``SEG_TIME_BUDGET=off`` (the table's epochs on any
CPU: more accuracy, a longer report). The planned configuration records the measurement and the
decision (``Config.time_budget``); it is printed with the run, saved in its checkpoints and in
the results, and it is not part of the run's identity (:mod:`helpers.runs`), so the same epochs
planned from another measurement are the same run. ``benchmarks/report_budget.py`` prints the
plan for this CPU and for slower ones.
"""

from __future__ import annotations

import functools
import statistics
import time
from datetime import UTC, datetime

import torch

from .config import Config
from .finetune import freeze_stages
from .inference import pick_device, predict_logits
from .plan import (
    CACHE_FILE,
    cached_epoch_times,
    describe_plan,
    epoch_plan,
    epochs_within_budget,
    needs_plan,
    planned_config,
    planned_seconds,
    store_epoch_times,
)
from .precision import Precision, choose_precision
from .runtime import cache_dir
from .step import TrainState, build_optimizer, train_one_epoch

__all__ = ["cached_epoch_times", "epoch_plan", "epochs_within_budget", "measure_epoch_seconds",
           "measure_with_second_look", "plan_run", "planned_seconds"]


def measure_epoch_seconds(config: Config, device: torch.device, precision: Precision,
                          datasets: dict, batches: int = 5) -> dict:
    """Return the measured seconds of one training batch and one evaluation batch, and of an epoch.

    Times loading and augmenting ``batches`` batches of real training crops, then
    ``batches`` training steps of :func:`helpers.train.train_one_epoch` on them (a training
    batch costs both) and three evaluation batches at CamVid's 360x480, one at a time after
    untimed warm-ups (two training steps: kernel selection, the optimizer's first step; one
    evaluation), and keeps the median of each: a batch slowed by something else on the machine
    does not size the epochs.
    """
    from .datasets import SegmentationDataset
    from .models import build_model

    full = datasets["train"]
    train_set = SegmentationDataset(full.pairs[: batches * config.batch_size], full.classes,
                                    full.transform, cache=config.cache_images)
    loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size)
    list(loader)  # decodes the images (and caches them, as the first epoch does)
    started = time.perf_counter()
    samples = list(loader)  # what every later epoch pays per batch: loading and augmentation
    load_s = (time.perf_counter() - started) / len(samples)
    model = build_model(config.model, train_set.classes.num_classes, width=config.width,
                        output_stride=config.output_stride,
                        decoder_channels=config.decoder_channels).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    freeze_stages(model, config.frozen_stages)
    optimizer = build_optimizer(model, config, device)
    state = TrainState(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
                       device, precision.dtype, channels_last=config.channels_last)

    def timed(step) -> float:
        started = time.perf_counter()
        step()
        return time.perf_counter() - started

    def train(steps):
        train_one_epoch(state, steps, progress=False)

    train(samples[:2])
    train_s = statistics.median(timed(functools.partial(train, [sample])) for sample in samples)
    images = torch.rand(config.batch_size, 3, 360, 480)
    model.eval()

    def evaluate():
        predict_logits(model, images, precision.dtype, channels_last=config.channels_last)

    evaluate()
    eval_s = statistics.median(timed(evaluate) for _ in range(3))
    train_batches, eval_batches, _ = epoch_plan(config, datasets)
    return {"seconds_per_train_batch": load_s + train_s, "seconds_per_eval_batch": eval_s,
            "seconds_per_epoch": train_batches * (load_s + train_s) + eval_batches * eval_s}


def measure_with_second_look(config: Config, device: torch.device, precision: Precision,
                             datasets: dict, progress: bool = True) -> dict:
    """Return :func:`measure_epoch_seconds`, measured a second time where the first measurement
    would cut epochs, keeping the faster of the two for each time.

    A few seconds of other work on a 2-core machine (a kernel starting, files being written
    after an install) make a batch look slower than the epochs that follow run it, and the plan
    is cached: a fresh clone's report once planned 9 epochs from 0.53 s per batch whose epochs
    then ran at 0.41 s, where 13 fitted. Load only ever slows a measurement, so the faster of two
    is the nearer to what the machine does; where every epoch fits, one measurement decides.
    """
    measured = measure_epoch_seconds(config, device, precision, datasets)
    plan = epoch_plan(config, datasets)
    if epochs_within_budget(config, measured, plan) >= config.epochs:
        return measured
    again = measure_epoch_seconds(config, device, precision, datasets)
    if progress:
        print(f"the budget cuts epochs: measured again ({measured['seconds_per_train_batch']:.3f}"
              f" then {again['seconds_per_train_batch']:.3f} s per training batch), planning "
              "from the faster", flush=True)
    return {key: min(measured[key], again[key]) for key in measured}


def plan_run(config: Config, progress: bool = True, device: str | torch.device | None = None,
             datasets: dict | None = None) -> Config:
    """Return the configuration to train on this machine: the most epochs, at least 1 and at
    most the table's, that this CPU's measured batch times fit in ``config.train_minutes``.

    The batch times are measured once per machine and configuration (seconds; twice where the
    budget cuts epochs, :func:`measure_with_second_look`) and cached; the decision is printed
    (``progress``) and recorded in ``time_budget``. Unchanged where there is nothing to plan
    (:func:`helpers.plan.needs_plan`: the smoke and full profiles, a GPU,
    ``SEG_TIME_BUDGET=off``, a configuration planned already).
    """
    device = pick_device(device)
    if not needs_plan(config, device):
        return config
    from .datasets import build_datasets

    precision = choose_precision(device, config.amp, config.model)
    datasets = datasets or build_datasets(config)
    timing = cached_epoch_times(config, precision)
    if timing is None:
        if progress:
            print(f"measuring a few {config.profile} batches of {config.model} on this CPU "
                  f"({precision}; once, cached in {cache_dir() / CACHE_FILE})", flush=True)
        measured = measure_with_second_look(config, device, precision, datasets, progress)
        timing = store_epoch_times(config, precision, {
            **measured, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")})
    planned = planned_config(config, timing, epoch_plan(config, datasets), precision)
    if progress:
        print(describe_plan(planned), flush=True)
    return planned
