"""Scoring a model on a whole split: one confusion matrix, the benchmark way.

Command line::

    python -m helpers.evaluate --checkpoint runs/quick/unet-effnet-lite0/best.pt --split test
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from . import metrics
from .data import IGNORE_INDEX
from .inference import labels_from_logits, predict_logits


def default_workers() -> int:
    """Return DataLoader workers for this machine: 0 with fewer than 4 cores, where workers
    compete with the compute threads (measured fastest on 2 cores)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 if (cores or 1) < 4 else min(8, cores // 2)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset,
    batch_size: int = 4,
    dtype: torch.dtype | None = None,
    tta_flip: bool = False,
    class_weights: torch.Tensor | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    desc: str = "evaluate",
    runtime=None,
) -> dict:
    """Score a model on every image of a dataset at its native resolution.

    Returns a dict: ``confusion_matrix`` (int64 tensor), the :func:`helpers.metrics.summarize`
    keys (``miou``, ``iou``, ``pixel_accuracy``, ``mean_class_accuracy``, ``dice``...),
    ``loss`` (cross-entropy over labelled pixels, weighted as in training), and the original
    study's figures for comparison: ``per_image_miou`` and ``integer_id_dice``.
    Padding pixels carry the ignore index and are never scored. ``runtime`` (a
    :class:`helpers.runtime.Runtime` of the same network) runs the network instead of
    ``model`` in ``dtype``.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    num_classes = model.num_classes
    was_training = model.training
    model.eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=default_workers() if num_workers is None else num_workers,
    )
    weights = None if class_weights is None else class_weights.to(device)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    per_image = []
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    weight_sum = torch.zeros((), dtype=torch.float64, device=device)
    dice_num = torch.zeros((), dtype=torch.float64, device=device)
    dice_den = torch.zeros((), dtype=torch.float64, device=device)
    for images, masks in tqdm(loader, desc=desc, disable=not progress, leave=False):
        masks = masks.to(device, non_blocking=True)
        if runtime is not None:
            logits = runtime.logits(images, tta_flip=tta_flip).to(device)
        else:
            logits = predict_logits(model, images, dtype=dtype, tta_flip=tta_flip)
        pred = labels_from_logits(logits)
        cm += metrics.confusion_matrix(pred, masks, num_classes, IGNORE_INDEX)
        per_image.append(metrics.per_image_confusion_matrices(pred, masks, num_classes))
        loss_sum += F.cross_entropy(
            logits, masks, weight=weights, ignore_index=IGNORE_INDEX, reduction="sum"
        )
        valid = masks != IGNORE_INDEX
        if weights is None:
            weight_sum += valid.sum()
        else:
            weight_sum += weights[masks[valid]].sum()
        num, den = metrics.integer_id_dice(pred, masks)
        dice_num += num
        dice_den += den
    model.train(was_training)
    result = metrics.summarize(cm, getattr(dataset, "classes", None) and list(dataset.classes.names))
    result["confusion_matrix"] = cm.cpu()
    result["loss"] = float(loss_sum / weight_sum.clamp(min=1))
    result["per_image_miou"] = metrics.per_image_mean_iou(torch.cat(per_image)) if per_image else float("nan")
    result["integer_id_dice"] = float(dice_num / dice_den.clamp(min=1))
    result["images"] = len(dataset)
    return result


def evaluate_checkpoint(checkpoint, split: str = "test", tta_flip: bool = False,
                        device=None, progress: bool = True, runtime: str = "auto",
                        amp: str | None = None) -> dict:
    """Load a checkpoint and score it on a split of the dataset it was trained on.

    ``runtime="auto"`` runs the network on the runtime measured fastest on this machine
    (:mod:`helpers.runtime`); ``torch``, ``onnx`` or a timed variant forces one. ``amp``
    (default: the checkpoint's configuration) is PyTorch's precision. The result's
    ``runtime`` entry says which ran, in which precision, and why.
    """
    from .checkpoint import load_model
    from .data import build_datasets
    from .inference import pick_device
    from .runtime import open_runtime

    device = pick_device(device)
    model, info = load_model(checkpoint)
    config = info["config"]
    loaded = open_runtime(runtime, checkpoint, device, amp or config.amp, progress=progress)
    dataset = build_datasets(config)[split]
    # The runtime's own PyTorch module where it has one: scoring then stays on its device.
    model = loaded.model if loaded.model is not None else model
    result = evaluate(model, dataset, config.batch_size, loaded.dtype, tta_flip=tta_flip,
                      progress=progress, desc=f"{split}{' + flip' if tta_flip else ''}",
                      runtime=loaded)
    result["runtime"] = loaded.describe()
    return result


@torch.no_grad()
def time_inference(model, batch_size: int = 1, height: int = 360, width: int = 480,
                   repeats: int = 10, warmup: int = 3, dtype=None) -> dict:
    """Return inference speed through the project's inference path on random input.

    ``{"ms_per_batch", "ms_per_image", "images_per_second"}``: the median over ``repeats``
    timed calls after ``warmup`` untimed ones.
    """
    import statistics
    import time

    device = next(model.parameters()).device
    images = torch.rand(batch_size, 3, height, width, device=device)
    times = []
    for index in range(warmup + repeats):
        started = time.perf_counter()
        predict_logits(model, images, dtype=dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= warmup:
            times.append(time.perf_counter() - started)
    per_batch = statistics.median(times)
    return {"ms_per_batch": 1000 * per_batch, "ms_per_image": 1000 * per_batch / batch_size,
            "images_per_second": batch_size / per_batch}


def public_metrics(result: dict) -> dict:
    """Return an evaluation result without tensors, ready for JSON."""
    out = {k: v for k, v in result.items() if not isinstance(v, torch.Tensor)}
    out["confusion_matrix"] = result["confusion_matrix"].tolist()
    return out


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import load_model
    from .runtime import RUNTIMES

    parser = argparse.ArgumentParser(prog="python -m helpers.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--tta", action="store_true", help="average with a horizontal flip")
    parser.add_argument("--device", default=None)
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="auto: the fastest measured on this machine; or force one")
    parser.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default=None,
                        help="PyTorch's precision (default: the checkpoint's setting, auto)")
    parser.add_argument("--json", action="store_true", help="print all metrics as JSON")
    args = parser.parse_args(argv)
    try:
        _, info = load_model(args.checkpoint)
        result = evaluate_checkpoint(args.checkpoint, args.split, args.tta, args.device,
                                     progress=not args.json, runtime=args.runtime, amp=args.amp)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(public_metrics(result), indent=2))
        return 0
    ran = result["runtime"]
    print(f"{info['config'].model} on {args.split} ({result['images']} images), "
          f"{ran['runtime']} in {ran['precision']}")
    print(f"  mIoU            {result['miou']:.4f}")
    print(f"  pixel accuracy  {result['pixel_accuracy']:.4f}")
    print(f"  Dice (macro)    {result['dice']:.4f}")
    for name, iou in zip(info["classes"].names, result["iou"], strict=True):
        print(f"    {name:<14} {iou:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
