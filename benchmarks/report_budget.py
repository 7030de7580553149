"""The report's time budget without native bf16: the epochs each model gets, here and elsewhere.

``make report`` trains three networks; on a CPU training in float32 (no native bf16 units)
:mod:`helpers.budget` gives each its share of the 30 minutes (``Config.train_minutes``) and
trains as many quick epochs of its float32 recipe as its measured batch times allow. This
script measures those times in float32 on this CPU for each model (the same few batches the
budget times, not cached), then prints the epochs the budget gives here and on CPUs a factor
slower, e.g. a 2-core Intel Xeon without native bf16 whose float32 step runs about 1.4x slower
than the AMD EPYC's::

    python benchmarks/report_budget.py [--slower 1.4,2] [--cached] [--save]

It also prints, per model, up to which slowdown each number of epochs still fits. ``--cached``
plans with the batch times ``make report`` measured and cached on this machine instead.

On a CPU with native bf16 the report trains in bf16 with the profile's epochs; forcing float32
here (as ``SEG_NATIVE_BF16=0`` does) simulates one without. Writes
``results/benchmark_report_budget.json`` with ``--save``.
"""

from __future__ import annotations

import argparse

import torch

from helpers import report
from helpers.budget import (
    cached_epoch_times,
    epoch_plan,
    epochs_within_budget,
    measure_epoch_seconds,
    planned_seconds,
)
from helpers.config import FLOAT32_RECIPE, deeplab_crf_settings, load_config
from helpers.data import build_datasets
from helpers.precision import choose_precision, cpu_info

MODELS = ("unet-effnet-lite0", "mini-unet", "deeplabv3plus-effnet-lite0")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slower", default="1.4", help="factors of slower CPUs, comma-separated")
    parser.add_argument("--batches", type=int, default=5,
                        help="training batches timed per model (as the budget does)")
    parser.add_argument("--cached", action="store_true",
                        help="plan with the batch times make report measured and cached on this "
                             "machine, where there are some, instead of timing them anew")
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args(argv)
    factors = [1.0] + [float(f) for f in args.slower.split(",") if f]
    device = torch.device("cpu")
    cpu = cpu_info()
    print(f"CPU {cpu.describe()}, {torch.get_num_threads()} threads; float32 forced (amp='off')")
    rows = []
    datasets = None
    for model in MODELS:
        recipe = FLOAT32_RECIPE["quick"].get(model, {})
        # Notebook 07 trains DeepLabV3+ for its own (shorter) schedule.
        schedule = {"epochs": deeplab_crf_settings(load_config("quick", model)).deeplab_epochs
                    } if model.startswith("deeplab") else {}
        config = load_config("quick", model, amp="off", **recipe, **schedule)
        datasets = datasets or build_datasets(config)
        precision = choose_precision(device, config.amp, config.model)
        cached = cached_epoch_times(config, precision) if args.cached else None
        measured = cached or measure_epoch_seconds(config, device, precision, datasets, args.batches)
        if cached:
            print(f"{model}: batch times cached on {cached['date']} (make report's)")
        plan = epoch_plan(config, datasets)
        plans = {}
        for factor in factors:
            timing = {k: factor * measured[k] for k in ("seconds_per_train_batch",
                                                        "seconds_per_eval_batch")}
            epochs = epochs_within_budget(config, timing, plan)
            plans[f"{factor:g}x"] = {"seconds_per_validated_epoch": factor * measured["seconds_per_epoch"],
                                     "epochs": epochs,
                                     "train_minutes": planned_seconds(config, epochs, timing, plan) / 60}
        # The largest slowdown (in steps of 0.01) at which each epoch count still fits.
        limits = {}
        for step in range(100, 301):
            timing = {k: step / 100 * measured[k] for k in ("seconds_per_train_batch",
                                                           "seconds_per_eval_batch")}
            limits[epochs_within_budget(config, timing, plan)] = step / 100
        profile_step = None
        if recipe and not cached:  # the step the recipe replaces, for comparison
            profile_step = measure_epoch_seconds(load_config("quick", model, amp="off", **schedule), device,
                                                 precision, datasets, args.batches)["seconds_per_train_batch"]
            print(f"{model}: training step {profile_step:.3f} s with the profile's recipe, "
                  f"{measured['seconds_per_train_batch']:.3f} s with the float32 recipe")
        rows.append({"model": model, "profile_epochs": config.epochs,
                     "seconds_per_train_batch_profile_recipe": profile_step,
                     "budget_minutes": config.train_minutes,
                     "recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items()},
                     "batch_times": f"cached {cached['date']}" if cached else "measured",
                     "train_batches": plan[0], "eval_batches": plan[1],
                     **{k: measured[k] for k in ("seconds_per_train_batch", "seconds_per_eval_batch")},
                     "plans": plans,
                     "epochs_up_to_slowdown": {str(k): v for k, v in sorted(limits.items(), reverse=True)}})
        print(f"{model} ({', '.join(f'{k}={v}' for k, v in recipe.items()) or 'profile recipe'}): "
              f"{plan[0]} x {measured['seconds_per_train_batch']:.3f} s training + "
              f"{plan[1]} x {measured['seconds_per_eval_batch']:.3f} s evaluation = "
              f"{measured['seconds_per_epoch']:.0f} s per validated epoch; budget "
              f"{config.train_minutes:g} min, profile {config.epochs} epochs")
        for name, entry in plans.items():
            print(f"    CPU {name} this one: {entry['epochs']} epochs, "
                  f"{entry['train_minutes']:.1f} min")
        print("    epochs on CPUs up to a factor slower: " + ", ".join(
            f"{epochs} up to {factor:.2f}x" for epochs, factor in sorted(limits.items(), reverse=True)))
    totals = {name: sum(r["plans"][name]["train_minutes"] for r in rows) for name in rows[0]["plans"]}
    for name, minutes in totals.items():
        print(f"training in make report, CPU {name} this one: {minutes:.1f} min")
    if args.save:
        path = report.write_result("benchmark_report_budget", {
            "cpu": cpu.describe(), "cpu_native_bf16": cpu.native_bf16, "precision": "fp32",
            "models": rows, "training_minutes": totals,
            "summary": {f"training min ({name})": minutes for name, minutes in totals.items()},
        }, "quick")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
