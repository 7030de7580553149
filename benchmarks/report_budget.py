"""The report's time budget: the epochs each model gets, on this CPU and on slower ones.

``make report`` trains three networks; :func:`helpers.budget.plan_run` gives each the epochs
of its quick row (:data:`helpers.config.RECIPES`) that fit its share of the report's minutes
(``Config.train_minutes``) at the batch times it measures on the machine. This script measures
those times for each model in each precision asked for (the same few batches the plan times,
not cached: ``auto`` is bf16 on a CPU with native bf16, ``off`` float32, which is how
``SEG_NATIVE_BF16=0`` runs there), then prints the epochs planned here and on CPUs a factor
slower, and up to which slowdown each number of epochs still fits::

    python benchmarks/report_budget.py [--precisions auto,off] [--slower 1.4,2] [--cached]
                                       [--compare-recipe] [--rounds N] [--save]

``--cached`` plans with the batch times ``make report`` measured and cached on this machine
instead; ``--compare-recipe`` also times the training step of the pretrained networks with
their whole encoder trained (``frozen_stages=0``), the step the quick recipe replaces. Writes
``results/benchmark_report_budget.json`` with ``--save``.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

from helpers import report
from helpers.budget import measure_epoch_seconds
from helpers.config import load_config
from helpers.data import build_datasets
from helpers.plan import cached_epoch_times, epoch_plan, epochs_within_budget, planned_seconds
from helpers.precision import choose_precision, cpu_info

MODELS = ("unet-effnet-lite0", "mini-unet", "deeplabv3plus-effnet-lite0")


def median_timing(timings: list[dict]) -> dict:
    """Return the median of each batch time over several measurements."""
    return {k: statistics.median(t[k] for t in timings) for k in timings[0]}


def scaled(timing: dict, factor: float) -> dict:
    """Return batch times ``factor`` times slower."""
    return {k: factor * timing[k] for k in ("seconds_per_train_batch", "seconds_per_eval_batch")}


def plan_model(config, timing: dict, plan: tuple, factors: list[float]) -> dict:
    """Return the plan at each slowdown and the largest slowdown each epoch count fits."""
    plans = {}
    for factor in factors:
        epochs = epochs_within_budget(config, scaled(timing, factor), plan)
        plans[f"{factor:g}x"] = {"epochs": epochs, "train_minutes": planned_seconds(
            config, epochs, scaled(timing, factor), plan) / 60}
    limits = {}  # the largest slowdown (in steps of 0.01) at which each epoch count still fits
    for step in range(50, 301):
        limits[epochs_within_budget(config, scaled(timing, step / 100), plan)] = step / 100
    return {"plans": plans, "epochs_up_to_slowdown": {str(k): v for k, v in
                                                      sorted(limits.items(), reverse=True)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="auto,off",
                        help="amp settings to plan, comma-separated (auto, off)")
    parser.add_argument("--slower", default="1.4", help="factors of slower CPUs, comma-separated")
    parser.add_argument("--batches", type=int, default=5,
                        help="training batches timed per model (as the plan does)")
    parser.add_argument("--cached", action="store_true",
                        help="plan with the batch times make report measured and cached on this "
                             "machine, where there are some, instead of timing them anew")
    parser.add_argument("--compare-recipe", action="store_true",
                        help="also time the step of the pretrained networks with frozen_stages=0 "
                             "(the two measured in turns)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measurements per model and precision; the median of each batch "
                             "time is kept")
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args(argv)
    factors = [1.0] + [float(f) for f in args.slower.split(",") if f]
    device = torch.device("cpu")
    cpu = cpu_info()
    print(f"CPU {cpu.describe()}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f} at the start")
    rows, datasets, load = [], None, os.getloadavg()[0]
    for amp in [a.strip() for a in args.precisions.split(",") if a.strip()]:
        for model in MODELS:
            config = load_config("quick", model, amp=amp)
            datasets = datasets or build_datasets(config)
            precision = choose_precision(device, config.amp, config.model)
            cached = cached_epoch_times(config, precision) if args.cached else None
            whole = config.replace(frozen_stages=0)  # the step the quick recipe replaces
            compare = args.compare_recipe and config.frozen_stages and not cached
            timings, wholes = [], []
            for _ in range(1 if cached else args.rounds):  # taking turns, on a shared machine
                if not cached:
                    timings.append(measure_epoch_seconds(config, device, precision, datasets,
                                                         args.batches))
                if compare:
                    wholes.append(measure_epoch_seconds(whole, device, precision, datasets,
                                                        args.batches))
            timing = cached or median_timing(timings)
            plan = epoch_plan(config, datasets)
            row = {"model": model, "amp": amp, "precision": str(precision),
                   "table_epochs": config.epochs, "budget_minutes": config.train_minutes,
                   "frozen_stages": config.frozen_stages,
                   "validate_annealed_only": config.validate_annealed_only,
                   "batch_times": f"cached {cached['date']}" if cached else "measured",
                   "train_batches": plan[0], "eval_batches": plan[1],
                   **{k: timing[k] for k in ("seconds_per_train_batch", "seconds_per_eval_batch")},
                   **plan_model(config, timing, plan, factors)}
            if compare:
                whole = median_timing(wholes)
                row["seconds_per_train_batch_whole_encoder"] = whole["seconds_per_train_batch"]
                print(f"{model} ({precision.name}): training step {whole['seconds_per_train_batch']:.3f} s "
                      f"with the whole encoder trained, {timing['seconds_per_train_batch']:.3f} s "
                      f"with frozen_stages={config.frozen_stages}")
            rows.append(row)
            print(f"{model} ({precision}): {plan[0]} x {timing['seconds_per_train_batch']:.3f} s "
                  f"training + {plan[1]} x {timing['seconds_per_eval_batch']:.3f} s per validated "
                  f"epoch; budget {config.train_minutes:g} min, table {config.epochs} epochs")
            for name, entry in row["plans"].items():
                print(f"    CPU {name} this one: {entry['epochs']} epochs, "
                      f"{entry['train_minutes']:.1f} min")
            print("    epochs on CPUs up to a factor slower: " + ", ".join(
                f"{epochs} up to {factor:.2f}x"
                for epochs, factor in row["epochs_up_to_slowdown"].items()))
    totals = {}
    for row in rows:
        for name, entry in row["plans"].items():
            key = f"training min ({row['amp']}, {name})"
            totals[key] = totals.get(key, 0.0) + entry["train_minutes"]
    for name, minutes in totals.items():
        print(f"{name}: {minutes:.1f}")
    if args.save:
        path = report.write_result("benchmark_report_budget", {
            "cpu": cpu.describe(), "cpu_native_bf16": cpu.native_bf16,
            "torch_threads": torch.get_num_threads(), "load_average_at_start": load,
            "models": rows, "training_minutes": totals,
            "summary": totals}, "quick")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
