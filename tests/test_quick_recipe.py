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


def test_the_report_runs_table_has_a_row_per_clone_run():
    run = {"command": "SEG_NATIVE_BF16=0 make report (a fresh clone)", "variant": "float32",
           "hardware": {"summary": "2 CPU cores (test CPU, no native bf16)"}, "git_commit": "abc1234",
           "wall_seconds": 1170.0, "setup_seconds": 130.4,
           "notebook_seconds": {"01_data_prep.ipynb": 30.2, "03_transfer_learning.ipynb": 600.6},
           "models": {"unet-effnet-lite0": {"epochs_run": 15, "test_miou": 0.5712,
                                            "test_miou_flip_tta": 0.5801},
                      "mini-unet": {"epochs_run": 3, "test_miou": 0.21}}}
    table = report.report_runs_table({"report_clone_float32": run, "unet-effnet-lite0": {}})
    header, _, row = table.split("\n")[:3]
    assert "| 01 | 03 |" in header
    assert row == ("| `SEG_NATIVE_BF16=0 make report` | 2 CPU cores (test CPU, no native bf16) | abc1234 "
                   "| **19.5** | 130 | 30 | 601 | 15 epochs, 0.571 (0.580) | 3 epochs, 0.210 | – |")
    assert "_Run" in report.report_runs_table({})
