"""The int8 accuracy target: the whole CamVid test split scored in float32 and in int8.

Scores the checkpoint's float32 ONNX export (``onnx``) and its int8 model (``onnx-int8``,
``best.int8.onnx`` beside it; ``--make`` writes it first with ``python -m helpers.quantize``'s
defaults) on every image of the test split through :func:`helpers.evaluate.evaluate`
(one confusion matrix, void ignored), prints both mIoU and the loss (target <= 0.005), the
per-class IoU, and the validation record stored in the int8 model, and writes
``results/<model>_int8.json``::

    python benchmarks/int8_accuracy.py [--checkpoint runs/quick/unet-effnet-lite0/best.pt] [--make]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TARGET_LOSS = 0.005


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/quick/unet-effnet-lite0/best.pt")
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--make", action="store_true", help="write the int8 model first")
    args = parser.parse_args(argv)

    import torch

    from helpers.config import project_path
    from helpers.evaluate import evaluate_checkpoint
    from helpers.export import load_onnx
    from helpers.precision import cpu_info
    from helpers.quantize import artefact_path, quantize_checkpoint
    from helpers.report import write_result

    torch.set_num_threads(min(2, torch.get_num_threads()))
    checkpoint = Path(args.checkpoint)
    checkpoint = checkpoint if checkpoint.is_absolute() else project_path(args.checkpoint)
    if args.make:
        quantize_checkpoint(checkpoint)
    path = artefact_path(checkpoint)
    _, metadata = load_onnx(path)
    scores = {}
    for name in ("onnx", "onnx-int8"):
        result = evaluate_checkpoint(checkpoint, args.split, runtime=name, progress=True)
        scores[name] = {"miou": result["miou"], "iou": result["iou"],
                        "pixel_accuracy": result["pixel_accuracy"], "images": result["images"],
                        "runtime": result["runtime"]}
    fp32, int8 = scores["onnx"], scores["onnx-int8"]
    loss = fp32["miou"] - int8["miou"]
    names = json.loads(metadata["classes"])["classes"]
    print(f"{checkpoint} on {args.split} ({fp32['images']} images), CPU: {cpu_info().describe()}")
    print(f"  mIoU float32 {fp32['miou']:.4f}, int8 {int8['miou']:.4f}, loss {loss:.4f} "
          f"(target <= {TARGET_LOSS}: {'met' if loss <= TARGET_LOSS else 'NOT met'})")
    print(f"  pixel accuracy float32 {fp32['pixel_accuracy']:.4f}, int8 {int8['pixel_accuracy']:.4f}")
    for entry, a, b in zip(names, fp32["iou"], int8["iou"], strict=True):
        print(f"    {entry['name']:<14} {a:.4f} {b:.4f} ({b - a:+.4f})")
    stored = json.loads(metadata["accuracy"])
    print(f"  stored in {path.name}: {stored['split']} mIoU float32 {stored['fp32_miou']:.4f}, "
          f"int8 {stored['int8_miou']:.4f}")
    from helpers.checkpoint import read_checkpoint

    config = read_checkpoint(checkpoint)["config"]
    out = write_result(f"{config['model']}_int8", {
        "checkpoint": str(checkpoint), "int8_model": str(path), "split": args.split,
        "cpu": cpu_info().describe(), "float32": fp32, "int8": int8, "loss": loss,
        "target_loss": TARGET_LOSS, "stored_record": stored,
        "calibration": json.loads(metadata["calibration"]),
        "summary": {"float32 mIoU": fp32["miou"], "int8 mIoU": int8["miou"], "loss": loss}},
        config["profile"])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
