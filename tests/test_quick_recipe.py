"""The runs that chose the quick recipe: each names how it trained and where, and the recipe the
quick rows train with is one of them, in bf16 and in float32."""

import json
from pathlib import Path

from helpers import report
from helpers.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PROVENANCE = ("variant", "precision", "cpu", "recipe", "epochs", "seed", "best_epoch", "val_miou",
              "test_miou", "train_seconds", "train_command", "evaluate_command", "commit")


def test_every_recorded_run_says_how_it_trained_and_where():
    runs = json.loads((ROOT / "results" / "quick_recipe.json").read_text())["runs"]
    assert runs
    for run in runs:
        assert all(run.get(key) is not None for key in PROVENANCE), run["variant"]
        assert run["precision"] in ("bf16", "fp32") and 0 < run["best_epoch"] <= run["epochs"]


def test_the_quick_rows_train_a_recipe_that_was_measured_in_both_precisions():
    """Changing the quick recipe of the transfer U-Net without recording its runs fails here."""
    runs = json.loads((ROOT / "results" / "quick_recipe.json").read_text())["runs"]
    row = load_config("quick", "unet-effnet-lite0")
    wanted = {k: v for k, v in row.to_dict().items() if k in runs[0]["recipe"] and k != "amp"}
    measured = {run["precision"] for run in runs
                if {k: v for k, v in run["recipe"].items() if k != "amp"} == wanted
                and run["seed"] == row.seed and run["epochs"] <= row.epochs}
    assert measured == {"bf16", "fp32"}


def test_the_quick_recipe_table_lists_each_run(tmp_path):
    runs = [{"variant": "frozen stages", "precision": "bf16", "cpu": "2 CPU cores (test CPU)",
             "recipe": {"frozen_stages": 2}, "epochs": 16, "seed": 42, "best_epoch": 15,
             "val_miou": 0.6401, "test_miou": 0.5712, "train_seconds": 401.4,
             "train_command": "python -m helpers.train --profile quick",
             "evaluate_command": "python -m helpers.evaluate --split test", "commit": "abc1234"},
            {"variant": "float32", "precision": "fp32", "cpu": "2 CPU cores (test CPU)",
             "recipe": {"frozen_stages": 2}, "epochs": 16, "seed": 42, "best_epoch": 16,
             "val_miou": 0.64, "test_miou": 0.574, "train_seconds": None,
             "train_command": "python -m helpers.train --set amp=off",
             "evaluate_command": "python -m helpers.evaluate --split test", "commit": "def5678"}]
    (tmp_path / "quick_recipe.json").write_text(json.dumps({"runs": runs, "note": "Shared CPU."}))
    table = report.quick_recipe_table(report.read_results(tmp_path))
    assert ("| frozen stages | bf16 | 2 CPU cores (test CPU) | 16 | 42 | 15 | 0.640 | 0.571 | 401 "
            "| `python -m helpers.train --profile quick` |") in table
    assert "| 0.574 | – |" in table and "Commits abc1234, def5678" in table
    assert table.endswith("Shared CPU._")
    assert report.quick_recipe_table({}) == "_Not measured yet._"
