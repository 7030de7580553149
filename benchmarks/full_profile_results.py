"""Collect a run of benchmarks/gpu_full.sh into ``results/full_profile.json`` (the full-profile table of docs/results.md).

    python benchmarks/full_profile_results.py OUT_DIR [--png-scores FILE] [--note TEXT]

OUT_DIR holds what the GPU script wrote (``scores.json``, ``runs/NAME/{history,done,config}.json``);
``--png-scores`` adds the scores of brought-back checkpoints on the original PNG test split
(benchmarks/score_checkpoints.py run here). A run that did not finish its schedule is kept with
``complete: false`` and never enters a mean.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from helpers import report

SETTINGS = ("plain", "flip", "multiscale_flip")


def run_rows(out_dir: Path, png_scores: list[dict]) -> list[dict]:
    """Return one row per run of the GPU script, with its scores and how far it got."""
    scores = json.loads((out_dir / "scores.json").read_text())
    png = {Path(row["checkpoint"]).parent.name: row for row in png_scores}
    rows = []
    for entry in scores:
        name = Path(entry["checkpoint"]).parent.name
        folder = out_dir / "runs" / name
        history = json.loads((folder / "history.json").read_text())
        config = entry["config"]
        row = {
            "run": name,
            "model": config["model"],
            "seed": config["seed"],
            "lever": name.split("-seed")[0] if "-seed" not in name else "recipe",
            "fit_on": config.get("fit_on", "train"),
            "epochs_run": len(history),
            "epochs_planned": config["epochs"],
            "complete": (folder / "done.json").is_file(),
            "best_epoch": entry["epoch"],
            "final_lr": history[-1]["lr"],
            "median_epoch_seconds": statistics.median(r["seconds"] for r in history),
            "val_miou": entry["val_miou"],
            "hardware": entry["hardware"],
            "test_images": "JPEG q90 copy of the test split (on the GPU machine)",
            **{f"test_miou_{s}": entry.get(f"test_miou_{s}") for s in SETTINGS},
            "test_iou": entry.get("test_iou"),
        }
        if name in png:
            row["png_test_miou"] = {s: png[name].get(f"test_miou_{s}") for s in SETTINGS
                                    if png[name].get(f"test_miou_{s}") is not None}
            row["png_hardware"] = png[name]["hardware"]
        rows.append(row)
    return rows


def summaries(rows: list[dict]) -> list[dict]:
    """Return mean and std over seeds of each model's finished recipe runs."""
    out = []
    for model in sorted({r["model"] for r in rows}):
        done = [r for r in rows if r["model"] == model and r["lever"] == "recipe" and r["complete"]]
        if len(done) < 2:
            continue
        entry = {"model": model, "seeds": [r["seed"] for r in done], "hardware": done[0]["hardware"]}
        for key in ("val_miou", *(f"test_miou_{s}" for s in SETTINGS)):
            values = [r[key] for r in done]
            entry[key] = {"mean": statistics.mean(values), "std": statistics.stdev(values)}
        out.append(entry)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--png-scores", type=Path, default=None)
    parser.add_argument("--note", default="", help="how the run went, stored with the results")
    args = parser.parse_args(argv)
    png = json.loads(args.png_scores.read_text()) if args.png_scores else []
    rows = run_rows(args.out_dir, png)
    path = report.write_result("full_profile", {"runs": rows, "summaries": summaries(rows),
                                                "note": args.note}, "full")
    print(f"wrote {path}: {len(rows)} runs, {sum(r['complete'] for r in rows)} complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
