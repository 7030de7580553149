"""The runs that chose the quick recipe: score a finished run and record it in results/quick_recipe.json.

Each entry is one training run of the transfer U-Net in the quick profile: its recipe (the
fields of :data:`RECIPE_FIELDS` it trained with), precision, CPU,
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
from helpers.evaluate import evaluate_checkpoint
from helpers.provenance import git_commit, hardware
from helpers.runs import read_history

NAME = "quick_recipe"
# The fields a run of the transfer U-Net's quick recipe is told apart by.
RECIPE_FIELDS = ("frozen_stages", "validate_annealed_only", "crop_size", "lr", "weight_decay",
                 "class_weighting", "rotate_limit", "scale_limit", "amp")
EVALUATE_COMMAND = ("python -m helpers.evaluate --checkpoint OUT/best.pt --split test "
                    "--runtime torch-fp32")


def run_entry(run_dir: Path, variant: str, train_command: str, commit: str | None,
              test_json: Path | None = None) -> dict:
    """Return the record of a finished run: how it trained and what it scored (``test_json``:
    the output of the evaluate command with ``--json``, instead of scoring again)."""
    _, info = load_model(run_dir / "best.pt")
    config, history = info["config"], read_history(run_dir)
    recipe = {k: v for k, v in config.to_dict().items() if k in RECIPE_FIELDS}
    test = (json.loads(test_json.read_text()) if test_json else
            evaluate_checkpoint(run_dir / "best.pt", "test", runtime="torch-fp32", progress=False))
    validated = [r for r in history if "val_loss" in r]
    precision = info.get("precision") or {}
    return {"variant": variant, "precision": precision.get("dtype", config.amp),
            "cpu": hardware()["summary"], "recipe": recipe, "epochs": len(history),
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
    add.add_argument("--test-json", type=Path, default=None,
                     help="the output of the evaluate command above with --json, if already run")
    commands.add_parser("show", help="print the table")
    args = parser.parse_args(argv)
    results = report.read_results()
    if args.command == "add":
        data = results.get(NAME) or {"model": "unet-effnet-lite0", "runs": []}
        entry = run_entry(args.run_dir, args.variant, args.train_command, args.commit,
                          args.test_json)
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
