"""The full-profile results pipeline: scoring checkpoints, collecting runs, the README table."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from helpers import report

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_scores_are_dataset_level_and_multiscale_changes_them(smoke_checkpoint):
    import torch

    scoring = _load("score_checkpoints")
    row = scoring.score(smoke_checkpoint, torch.device("cpu"))
    assert row["model"] == "unet-effnet-lite0" and len(row["test_iou"]) == 11
    for name in scoring.SETTINGS:
        assert 0.0 <= row[f"test_miou_{name}"] <= 1.0
    assert row["test_miou_multiscale_flip"] != row["test_miou_plain"]
    assert row["run"]["epochs_run"] == 2 and len(row["epoch_seconds"]) == 2


def _fake_run(out_dir: Path, source: Path, name: str, seed: int, miou: float, complete: bool):
    folder = out_dir / "runs" / name
    shutil.copytree(source, folder)
    if not complete:
        (folder / "done.json").unlink()
    config = json.loads((folder / "config.json").read_text()) | {"seed": seed}
    return {"checkpoint": str(folder / "best.pt"), "model": config["model"], "seed": seed,
            "config": config, "epoch": 2, "hardware": "test GPU", "val_miou": miou + 0.1,
            "test_miou_plain": miou, "test_miou_flip": miou + 0.01,
            "test_miou_multiscale_flip": miou + 0.02, "test_iou": [miou] * 11}


def test_unfinished_runs_are_listed_but_never_averaged(smoke_run, tmp_path):
    collect = _load("full_profile_results")
    scores = [
        _fake_run(tmp_path, smoke_run.out_dir, "unet-effnet-lite0-seed42", 42, 0.60, True),
        _fake_run(tmp_path, smoke_run.out_dir, "unet-effnet-lite0-seed7", 7, 0.64, True),
        _fake_run(tmp_path, smoke_run.out_dir, "unet-effnet-lite0-seed1", 1, 0.10, False),
        _fake_run(tmp_path, smoke_run.out_dir, "unet-effnet-lite0-trainval", 42, 0.70, True),
    ]
    (tmp_path / "scores.json").write_text(json.dumps(scores))
    png = [{"checkpoint": "x/unet-effnet-lite0-seed42/best.pt", "hardware": "test CPU",
            "test_miou_plain": 0.61, "test_miou_flip": 0.62}]
    rows = collect.run_rows(tmp_path, png)
    assert [r["complete"] for r in rows] == [True, True, False, True]
    assert rows[3]["lever"] == "unet-effnet-lite0-trainval" and rows[0]["lever"] == "recipe"
    assert rows[0]["png_test_miou"] == {"plain": 0.61, "flip": 0.62}
    (summary,) = collect.summaries(rows)
    assert summary["seeds"] == [42, 7]  # the unfinished seed 1 and the lever are left out
    assert summary["test_miou_plain"]["mean"] == pytest.approx(0.62)
    assert summary["test_miou_plain"]["std"] == pytest.approx(0.0283, abs=1e-4)
    table = report.full_profile_table({"full_profile": {"runs": rows, "summaries": [summary],
                                                        "git_commit": "abc", "note": ""}})
    assert "stopped by the time guard" in table and "0.620 ± 0.028" in table
    assert "0.610 (0.620)" in table
