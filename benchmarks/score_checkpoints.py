"""Score trained checkpoints on CamVid test the way the README reports them.

For each checkpoint: dataset-level test mIoU (one confusion matrix over the split, 11 classes,
void ignored, native 360x480), with a horizontal flip, and with multi-scale (0.75, 1, 1.25) +
flip test-time augmentation; plus its validation mIoU and how its run ended. The same command
scores checkpoints on the GPU machine that trained them and, once brought back, on the original
PNG test split here (CAMVID_DIR names the copy)::

    python benchmarks/score_checkpoints.py runs/full/*/best.pt --out results/scores.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from helpers.checkpoint import load_model
from helpers.data import build_datasets
from helpers.evaluate import evaluate
from helpers.inference import amp_dtype, pick_device, prepare_model
from helpers.provenance import hardware

SETTINGS = {"plain": (False, (1.0,)), "flip": (True, (1.0,)), "multiscale_flip": (True, (0.75, 1.0, 1.25))}


def score(checkpoint: Path, device: torch.device, progress: bool = False,
          settings: tuple[str, ...] = tuple(SETTINGS)) -> dict:
    """Return the test scores of one checkpoint under every setting, and its run's record."""
    model, info = load_model(checkpoint)
    config = info["config"]
    model = prepare_model(model, device, config.channels_last)
    datasets = build_datasets(config)
    dtype = amp_dtype(device, config.amp, model.name)
    row = {"checkpoint": str(checkpoint), "model": config.model, "seed": config.seed,
           "config": config.to_dict(), "epoch": info.get("epoch"), "hardware": hardware()["summary"]}
    for name in settings:
        flip, scales = SETTINGS[name]
        result = evaluate(model, datasets["test"], 4, dtype, tta_flip=flip, scales=scales,
                          progress=progress, desc=f"test {name}")
        row[f"test_miou_{name}"] = result["miou"]
        if name == "plain":
            row["test_iou"] = [float(v) for v in result["iou"]]
            row["test_pixel_accuracy"] = result["pixel_accuracy"]
    row["val_miou"] = evaluate(model, datasets["val"], 4, dtype, progress=progress)["miou"]
    done = checkpoint.parent / "done.json"
    row["run"] = json.loads(done.read_text()) if done.is_file() else {"finished": False}
    history = checkpoint.parent / "history.json"
    if history.is_file():
        rows = json.loads(history.read_text())
        row["epoch_seconds"] = [r["seconds"] for r in rows]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="JSON file of every score")
    parser.add_argument("--device", default=None)
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help=f"test-time settings to score, of {', '.join(SETTINGS)}")
    args = parser.parse_args(argv)
    settings = tuple(args.settings.split(","))
    if not set(settings) <= set(SETTINGS):
        parser.error(f"--settings takes {', '.join(SETTINGS)}")
    device = pick_device(args.device)
    rows = []
    for checkpoint in args.checkpoints:
        try:
            rows.append(score(checkpoint, device, settings=settings))
        except (FileNotFoundError, ValueError, RuntimeError) as error:
            print(f"{checkpoint}: {error}", file=sys.stderr)
            continue
        row = rows[-1]
        scores = " | ".join(f"{name} {row[f'test_miou_{name}']:.4f}" for name in settings)
        print(f"{checkpoint}: test mIoU {scores} | val {row['val_miou']:.4f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if len(rows) == len(args.checkpoints) else 1


if __name__ == "__main__":
    sys.exit(main())
