import json
from pathlib import Path

import pytest

from helpers import report

ROOT = Path(__file__).resolve().parents[1]


def test_tables_are_generated_from_results_into_their_pages(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    hardware = {"summary": "2 CPU cores (test CPU)"}
    (results / "unet-effnet-lite0.json").write_text(json.dumps({
        "name": "unet-effnet-lite0", "model": "unet-effnet-lite0", "profile": "quick",
        "hardware": hardware, "git_commit": "abc1234", "parameters": 5_199_611, "flops": 9.87e9,
        "test": {"miou": 0.61234, "pixel_accuracy": 0.9, "dice": 0.7, "per_image_miou": 0.55},
    }))
    (results / "benchmark_latency.json").write_text(json.dumps({
        "hardware": hardware, "git_commit": "abc1234", "summary": {"ms_per_image": 36.54},
    }))
    (results / "float32_recipe.json").write_text(json.dumps({
        "hardware": hardware, "git_commit": "abc1234", "note": "Shared CPU.",
        "runs": [{"variant": "frozen stages", "epochs": 16, "best_epoch": 15, "val_miou": 0.6401,
                  "test_miou": 0.5474, "train_command": "python -m helpers.train --epochs 16",
                  "evaluate_command": "python -m helpers.evaluate --split test"},
                 {"variant": "seed 1", "epochs": 16, "best_epoch": 16, "val_miou": 0.6416,
                  "test_miou": 0.574, "train_command": "python -m helpers.train --set seed=1",
                  "evaluate_command": "python -m helpers.evaluate --split test", "commit": "def5678"}],
    }))
    for page in set(report.PAGES.values()):
        names = [name for name, where in report.PAGES.items() if where == page]
        (tmp_path / page).parent.mkdir(exist_ok=True)
        (tmp_path / page).write_text(f"intro {page}\n" + "".join(
            f"<!-- {name}:start -->\nold\n<!-- {name}:end -->\n" for name in names) + "end\n")
    changed = report.update_pages(tmp_path, results)
    assert sorted(changed) == sorted(tmp_path / page for page in set(report.PAGES.values()))
    readme = (tmp_path / "README.md").read_text()
    assert "| unet-effnet-lite0 | quick | 0.612 | 0.900 | 0.700 | 0.550 | 5.20 | 9.9 | 2 CPU cores (test CPU) |" in readme
    assert "old" not in readme and readme.startswith("intro README.md") and readme.endswith("end\n")
    assert "ms per image **36.54**" in (tmp_path / report.PAGES["benchmarks"]).read_text()
    recipe = (tmp_path / report.PAGES["float32-recipe-table"]).read_text()
    assert ("| frozen stages | 16 | 15 | 0.640 | 0.547 | `python -m helpers.train --epochs 16` |"
            in recipe and "2 CPU cores (test CPU), commits abc1234, def5678;" in recipe)
    assert "Run `make report` to measure." in (tmp_path / report.PAGES["flaws-table"]).read_text()
    assert report.update_pages(tmp_path, results) == []  # idempotent: nothing rewritten


def test_a_page_that_lost_its_markers_is_named(tmp_path):
    for page in set(report.PAGES.values()):
        (tmp_path / page).parent.mkdir(exist_ok=True)
        (tmp_path / page).write_text("no markers\n")
    with pytest.raises(ValueError, match=r"README.md: no <!-- results-table:start -->"):
        report.update_pages(tmp_path, tmp_path)
    assert (tmp_path / "README.md").read_text() == "no markers\n"


def test_each_generated_table_lives_once_in_its_page_of_the_repository():
    """Every table function has a page, and its markers are there and in no other page."""
    assert set(report.PAGES) == set(report.BLOCKS)
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for name, page in report.PAGES.items():
        holders = [p.relative_to(ROOT).as_posix() for p in pages
                   if f"<!-- {name}:start -->" in p.read_text(encoding="utf-8")]
        assert holders == [page], f"{name}: markers in {holders}, helpers.report writes {page}"
        text = (ROOT / page).read_text(encoding="utf-8")
        assert text.count(f"<!-- {name}:start -->") == text.count(f"<!-- {name}:end -->") == 1, name


def test_results_are_valid_json_without_nan(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "output_dir", lambda kind, profile=None: tmp_path)
    path = report.write_result("x", {"iou": [0.5, float("nan")]}, "quick")
    data = json.loads(path.read_text())
    assert data["iou"] == [0.5, None] and data["profile"] == "quick" and "hardware" in data
