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
from .distributed import all_gather_objects, all_reduce_sum, is_distributed, shard_indices
from .inference import labels_from_logits, predict_logits
from .machine import default_workers
from .metrics import IGNORE_INDEX


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
    scales: tuple[float, ...] = (1.0,),
    distributed: bool = False,
    runtime=None,
) -> dict:
    """Score a model on every image of a dataset at its native resolution.

    Returns a dict: ``confusion_matrix`` (int64 tensor), the :func:`helpers.metrics.summarize`
    keys (``miou``, ``iou``, ``pixel_accuracy``, ``mean_class_accuracy``, ``dice``...),
    ``loss`` (cross-entropy over labelled pixels, weighted as in training), and the original
    study's figures for comparison: ``per_image_miou`` and ``integer_id_dice``.
    Images are padded to the encoder's stride inside :func:`predict_logits` and the logits
    cropped back, so padding is never scored.

    ``distributed`` (in a torchrun run): each process scores a disjoint share of the images and
    every sum (confusion matrix, loss, the study's figures) is added up over the processes, so
    each process returns the scores of the whole dataset.

    ``runtime`` (a :class:`helpers.runtime.Runtime` of the same network) runs the network
    instead of ``model`` in ``dtype``; multi-scale ``scales`` always run ``model``.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    num_classes = model.num_classes
    was_training = model.training
    model.eval()
    share = dataset
    distributed = distributed and is_distributed()
    if distributed:
        from torch.utils.data import Subset

        share = Subset(dataset, shard_indices(len(dataset)))
    loader = DataLoader(
        share,
        batch_size=batch_size,
        shuffle=False,
        num_workers=default_workers() if num_workers is None else num_workers,
    )
    weights = None if class_weights is None else class_weights.to(device)
    confusion = metrics.ConfusionMatrix(num_classes, device)
    per_image = []
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    weight_sum = torch.zeros((), dtype=torch.float64, device=device)
    dice_num = torch.zeros((), dtype=torch.float64, device=device)
    dice_den = torch.zeros((), dtype=torch.float64, device=device)
    for images, masks in tqdm(loader, desc=desc, disable=not progress, leave=False):
        masks = masks.to(device, non_blocking=True)
        if runtime is not None and tuple(scales) == (1.0,):
            logits = runtime.logits(images, tta_flip=tta_flip).to(device)
        else:
            logits = predict_logits(model, images, dtype=dtype, tta_flip=tta_flip, scales=scales)
        pred = labels_from_logits(logits)
        confusion.update(pred, masks)
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
    per_image = torch.cat(per_image) if per_image else torch.zeros(0, num_classes, num_classes, dtype=torch.int64)
    if distributed:
        confusion.reduce_from_all_processes()
        for total in (loss_sum, weight_sum, dice_num, dice_den):
            all_reduce_sum(total)
        per_image = torch.cat(all_gather_objects(per_image.cpu()))
    result = confusion.compute(getattr(dataset, "classes", None) and list(dataset.classes.names))
    result["confusion_matrix"] = confusion.matrix.cpu()
    result["loss"] = float(loss_sum / weight_sum.clamp(min=1))
    result["per_image_miou"] = metrics.per_image_mean_iou(per_image) if len(per_image) else float("nan")
    result["integer_id_dice"] = float(dice_num / dice_den.clamp(min=1))
    result["images"] = len(dataset)
    return result


def evaluate_checkpoint(checkpoint, split: str = "test", tta_flip: bool = False,
                        device=None, progress: bool = True, runtime: str = "auto",
                        amp: str | None = None, scales: tuple[float, ...] = (1.0,)) -> dict:
    """Load a checkpoint and score it on a split of the dataset it was trained on.

    ``runtime="auto"`` runs the network on the runtime measured fastest on this machine
    (:mod:`helpers.runtime`), never on the int8 model (a score measures the checkpoint itself);
    ``torch``, ``onnx``, ``onnx-int8`` (the int8 model beside the checkpoint) or a timed variant
    forces one. ``amp``
    (default: the checkpoint's configuration) is PyTorch's precision. The result's
    ``runtime`` entry says which ran, in which precision, and why. ``scales`` other than
    ``(1.0,)`` adds multi-scale test-time augmentation (run by PyTorch).
    """
    from .checkpoint import check_class_count, load_model
    from .datasets import build_datasets
    from .inference import pick_device
    from .runtime import open_runtime

    device = pick_device(device)
    model, info = load_model(checkpoint)
    config = info["config"]
    dataset = build_datasets(config)[split]
    # A class file edited since training would score a model against other classes.
    check_class_count(checkpoint, model.num_classes, dataset.classes,
                      f"the class file {config.class_file}" if config.class_file else "CamVid")
    loaded = open_runtime(runtime, checkpoint, device, amp or config.amp, progress=progress,
                          int8=False)
    # The runtime's own PyTorch module where it has one: scoring then stays on its device.
    model = loaded.model if loaded.model is not None else model
    result = evaluate(model, dataset, config.batch_size, loaded.dtype, tta_flip=tta_flip,
                      progress=progress, runtime=loaded, scales=scales,
                      desc=f"{split}{' + flip' if tta_flip else ''}"
                           f"{' multi-scale' if len(scales) > 1 else ''}")
    result["runtime"] = loaded.describe()
    return result


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
    parser.add_argument("--scales", default="1", metavar="S1,S2,...",
                        help="multi-scale test-time augmentation, e.g. 0.75,1,1.25 (default 1)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="auto: the fastest measured on this machine (never the int8 "
                             "model: onnx-int8 scores it); or force one")
    parser.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default=None,
                        help="PyTorch's precision (default: the checkpoint's setting, auto)")
    parser.add_argument("--json", action="store_true", help="print all metrics as JSON")
    args = parser.parse_args(argv)
    try:
        _, info = load_model(args.checkpoint)
        scales = tuple(float(scale) for scale in args.scales.split(","))
        result = evaluate_checkpoint(args.checkpoint, args.split, args.tta, args.device,
                                     progress=not args.json, runtime=args.runtime, amp=args.amp,
                                     scales=scales)
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
