"""The runs that chose the quick recipe: score a finished run and record it in results/quick_recipe.json.

Each entry is one training run of the transfer U-Net in the quick profile: its recipe (the
fields it trained with that differ from the profile's transfer U-Net row), precision, CPU,
epochs, seed, best epoch, validation and test mIoU (the best checkpoint scored on the whole test
split in float32 PyTorch, as ``python -m helpers.evaluate --runtime torch-fp32`` does, so bf16
and float32 runs are scored alike), the seconds its epochs took and the command that trained
it::

    python benchmarks/quick_recipe_runs.py add RUN_DIR --variant TEXT --train-command TEXT
    python benchmarks/quick_recipe_runs.py show

``helpers.report.quick_recipe_table`` renders the file. Training seconds are the sum of the
run's epochs (``history.json``), as timed on the machine it trained on, with whatever else that
machine was running at the time: the ``load`` column says how busy it was when the run was
recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from helpers import report
from helpers.checkpoint import load_model
from helpers.config import load_config
from helpers.evaluate import evaluate_checkpoint
from helpers.provenance import git_commit, hardware
from helpers.runs import read_history

NAME = "quick_recipe"
EVALUATE_COMMAND = "python -m helpers.evaluate --checkpoint OUT/best.pt --split test --runtime torch-fp32"


def run_entry(run_dir: Path, variant: str, train_command: str, commit: str | None) -> dict:
    """Return the record of a finished run: how it trained and what it scored."""
    _, info = load_model(run_dir / "best.pt")
    config, history = info["config"], read_history(run_dir)
    row = load_config("quick", config.model)
    changed = {k: v for k, v in config.to_dict().items()
               if k not in ("time_budget", "train_minutes", "track_test_each_epoch")
               and v != row.to_dict().get(k)}
    test = evaluate_checkpoint(run_dir / "best.pt", "test", runtime="torch-fp32", progress=False)
    validated = [r for r in history if "val_loss" in r]
    return {"variant": variant, "precision": (info.get("precision") or {}).get("name", config.amp),
            "cpu": hardware()["summary"], "recipe": changed, "epochs": len(history),
            "seed": config.seed, "best_epoch": info["epoch"],
            "val_miou": min(validated, key=lambda r: r["val_loss"])["val_miou"],
            "test_miou": test["miou"], "test_pixel_accuracy": test["pixel_accuracy"],
            "train_seconds": sum(r["seconds"] for r in history),
            "seconds_per_epoch_median": statistics.median(r["seconds"] for r in history),
            "load": round(os.getloadavg()[0], 1), "train_command": train_command,
            "evaluate_command": EVALUATE_COMMAND, "commit": commit or git_commit()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="score a finished run and add (or replace) its entry")
    add.add_argument("run_dir", type=Path)
    add.add_argument("--variant", required=True, help="what the run tried, in a few words")
    add.add_argument("--train-command", required=True, help="the command that trained it")
    add.add_argument("--commit", default=None, help="the commit it trained at (default: this one)")
    commands.add_parser("show", help="print the table")
    args = parser.parse_args(argv)
    results = report.read_results()
    if args.command == "add":
        data = results.get(NAME) or {"model": "unet-effnet-lite0", "runs": []}
        entry = run_entry(args.run_dir, args.variant, args.train_command, args.commit)
        runs = [r for r in data["runs"] if r["variant"] != entry["variant"]] + [entry]
        keep = {k: v for k, v in data.items()
                if k not in ("name", "profile", "hardware", "git_commit", "date", "runs")}
        path = report.write_result(NAME, {**keep, "runs": runs}, "quick")
        print(json.dumps(entry, indent=2))
        print(f"wrote {path}")
        results = report.read_results()
    print(report.quick_recipe_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
