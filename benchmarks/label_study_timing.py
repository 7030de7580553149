"""Per-step and per-image times that size the label-efficiency study's profiles.

For each model of the study: seconds per optimizer step at the profile's crop and batch size
(``helpers.train.train_one_epoch`` on real CamVid crops, after a warm-up pass) and seconds per
image of evaluation at CamVid's native 360x480 (``helpers.evaluate.evaluate``), the two models
taking turns so a shared machine's drift hits both alike. Then the projected wall time of the
profile's whole study from those figures::

    python benchmarks/label_study_timing.py [--profile quick] [--steps 10] [--eval-images 12]

Writes ``results/benchmark_label_study_timing[_DEVICE]_PROFILE.json``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from helpers import report, seed_everything
from helpers.data import build_datasets
from helpers.evaluate import evaluate
from helpers.inference import amp_dtype, pick_device
from helpers.models import build_model
from helpers.study import MODELS, STUDY_PROFILES, study_config
from helpers.train import TrainState, build_optimizer, train_one_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick", choices=sorted(STUDY_PROFILES))
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per timed pass")
    parser.add_argument("--eval-images", type=int, default=12, help="validation images timed")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per model")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    seed_everything(0)
    device = pick_device(args.device)
    plan = STUDY_PROFILES[args.profile]
    # On a shared machine the load says how far the figures are from an idle machine's.
    figures = {"profile": args.profile, "device": str(device), "models": {},
               "load_average_before": os.getloadavg()[0]}
    prepared = {}
    for model_name in MODELS:
        config = study_config(args.profile, model_name, size=plan.sizes[-1], seed=0)
        config = config.replace(max_train_images=args.steps * config.batch_size,
                                max_val_images=args.eval_images)
        datasets = build_datasets(config)
        datasets["train"].transform.set_random_seed(0)
        loader = torch.utils.data.DataLoader(datasets["train"], batch_size=config.batch_size)
        batches = list(loader)
        model = build_model(model_name, 11, width=config.width).to(device)
        model = model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(model, config, device)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, config.lr, total_steps=(args.repeats + 1) * len(batches))
        dtype = amp_dtype(device, config.amp, model_name)
        state = TrainState(model, optimizer, scheduler, device, dtype)
        prepared[model_name] = (config, datasets["val"], batches, model, state, dtype)
        train_one_epoch(state, batches, progress=False)  # warm-up: allocator, oneDNN kernel selection
        figures["models"][model_name] = {"step_seconds": 0.0, "eval_seconds_per_image": 0.0,
                                         "crop_size": list(config.crop_size),
                                         "batch_size": config.batch_size}
    for _ in range(args.repeats):
        for model_name, (config, val_set, batches, model, state, dtype) in prepared.items():
            started = time.perf_counter()
            train_one_epoch(state, batches, progress=False)
            if device.type == "cuda":
                torch.cuda.synchronize()
            step = (time.perf_counter() - started) / len(batches)
            started = time.perf_counter()
            evaluate(model, val_set, config.batch_size, dtype, num_workers=0, progress=False)
            per_image = (time.perf_counter() - started) / len(val_set)
            entry = figures["models"][model_name]
            entry["step_seconds"] += step / args.repeats
            entry["eval_seconds_per_image"] += per_image / args.repeats

    figures["load_average_after"] = os.getloadavg()[0]
    hardware = report.hardware()["summary"]
    print(f"label-efficiency study, {args.profile} profile, {device} ({hardware}), 1-minute load "
          f"average {figures['load_average_before']:.1f} before, {figures['load_average_after']:.1f} after")
    total = 0.0
    runs = len(plan.sizes) * len(plan.seeds)
    for model_name, entry in figures["models"].items():
        # Per run: the training steps, one full-validation pass per evaluation, one test pass.
        run_seconds = (plan.steps * entry["step_seconds"]
                       + plan.evaluations * 101 * entry["eval_seconds_per_image"]
                       + 233 * entry["eval_seconds_per_image"])
        entry["projected_run_seconds"] = run_seconds
        total += runs * run_seconds
        print(f"  {model_name:<18} {entry['step_seconds']:.3f} s/step "
              f"({entry['crop_size'][0]}x{entry['crop_size'][1]}, batch {entry['batch_size']}), "
              f"{1000 * entry['eval_seconds_per_image']:.0f} ms/image at 360x480 -> "
              f"{plan.steps} steps + {plan.evaluations} x 101 val + 233 test = {run_seconds:.0f} s/run")
    figures["projected_study_minutes"] = total / 60 / plan.jobs
    print(f"  {runs} runs per model, {plan.jobs} at a time: about "
          f"{figures['projected_study_minutes']:.0f} min for the whole study")
    figures["summary"] = {f"{m} s per step": e["step_seconds"] for m, e in figures["models"].items()}
    figures["summary"].update({f"{m} ms per eval image": 1000 * e["eval_seconds_per_image"]
                               for m, e in figures["models"].items()})
    figures["summary"]["projected study min"] = figures["projected_study_minutes"]
    name = "benchmark_label_study_timing"
    if device.type != "cpu":
        name += "_" + device.type
    report.write_result(f"{name}_{args.profile}", figures, "benchmark")


if __name__ == "__main__":
    main()
