import json

from helpers import report


def test_readme_tables_are_generated_from_results(tmp_path):
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
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results-table:start -->\nold\n<!-- results-table:end -->\n"
                      "<!-- float32-recipe-table:start -->\n<!-- float32-recipe-table:end -->\n"
                      "<!-- benchmarks:start -->\n<!-- benchmarks:end -->\nend\n")
    assert report.update_readme(readme, results) is True
    text = readme.read_text()
    assert "| unet-effnet-lite0 | quick | 0.612 | 0.900 | 0.700 | 0.550 | 5.20 | 9.9 | 2 CPU cores (test CPU) |" in text
    assert "old" not in text and text.startswith("intro") and text.endswith("end\n")
    assert "ms per image **36.54**" in text
    assert ("| frozen stages | 16 | 15 | 0.640 | 0.547 | `python -m helpers.train --epochs 16` |"
            in text and "2 CPU cores (test CPU), commits abc1234, def5678;" in text)
    assert report.update_readme(readme, results) is False  # idempotent


def test_results_are_valid_json_without_nan(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "output_dir", lambda kind, profile=None: tmp_path)
    path = report.write_result("x", {"iou": [0.5, float("nan")]}, "quick")
    data = json.loads(path.read_text())
    assert data["iou"] == [0.5, None] and data["profile"] == "quick" and "hardware" in data
