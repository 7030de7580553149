"""Scoring a model on a whole split: one confusion matrix, the benchmark way.

Command line::

    python -m helpers.evaluate --checkpoint runs/quick/unet-effnet-lite0/best.pt --split test
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

import torch
import torch.nn.functional as F

from . import metrics
from .distributed import all_gather_objects, all_reduce_sum, is_distributed, shard_indices
from .inference import labels_from_logits, predict_logits
from .machine import default_workers
from .metrics import IGNORE_INDEX


class SplitScores:
    """The sums one evaluation adds up over its batches, and the result they give.

    One confusion matrix over the whole split (the benchmark way), the weighted cross-entropy,
    and the original study's figures for comparison: the per-image confusion matrices (its
    per-image mIoU) and the integer-id "Dice".
    """

    def __init__(self, num_classes: int, device: torch.device, class_weights: torch.Tensor | None):
        self.num_classes = num_classes
        self.weights = None if class_weights is None else class_weights.to(device)
        self.confusion = metrics.ConfusionMatrix(num_classes, device)
        self.per_image = []
        zero = functools.partial(torch.zeros, (), dtype=torch.float64, device=device)
        self.loss_sum, self.weight_sum, self.dice_num, self.dice_den = zero(), zero(), zero(), zero()

    def add(self, logits: torch.Tensor, masks: torch.Tensor) -> None:
        """Add a batch: float logits (N, C, H, W) and class ids (N, H, W)."""
        pred = labels_from_logits(logits)
        self.confusion.update(pred, masks)
        self.per_image.append(metrics.per_image_confusion_matrices(pred, masks, self.num_classes))
        self.loss_sum += F.cross_entropy(logits, masks, weight=self.weights,
                                         ignore_index=IGNORE_INDEX, reduction="sum")
        valid = masks != IGNORE_INDEX
        self.weight_sum += valid.sum() if self.weights is None else self.weights[masks[valid]].sum()
        num, den = metrics.integer_id_dice(pred, masks)
        self.dice_num += num
        self.dice_den += den

    def result(self, dataset, distributed: bool = False) -> dict:
        """Return the scores of the whole split (summed over the processes when ``distributed``)."""
        per_image = torch.cat(self.per_image) if self.per_image else \
            torch.zeros(0, self.num_classes, self.num_classes, dtype=torch.int64)
        if distributed:
            self.confusion.reduce_from_all_processes()
            for total in (self.loss_sum, self.weight_sum, self.dice_num, self.dice_den):
                all_reduce_sum(total)
            per_image = torch.cat(all_gather_objects(per_image.cpu()))
        result = self.confusion.compute(getattr(dataset, "classes", None) and list(dataset.classes.names))
        result["confusion_matrix"] = self.confusion.matrix.cpu()
        result["loss"] = float(self.loss_sum / self.weight_sum.clamp(min=1))
        result["per_image_miou"] = metrics.per_image_mean_iou(per_image) if len(per_image) else float("nan")
        result["integer_id_dice"] = float(self.dice_num / self.dice_den.clamp(min=1))
        result["images"] = len(dataset)
        return result


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
    variant = "flip" if tta_flip else "plain"
    return _evaluate(model, dataset, (variant,), batch_size, dtype, class_weights, num_workers,
                     progress, desc, scales, distributed, runtime)[variant]


@torch.no_grad()
def evaluate_with_and_without_flip(model: torch.nn.Module, dataset, batch_size: int = 4,
                                   dtype: torch.dtype | None = None, progress: bool = True,
                                   desc: str = "evaluate", runtime=None) -> tuple[dict, dict]:
    """Return :func:`evaluate`'s scores without and with flip test-time augmentation, in one pass.

    Each image runs twice (as it is and mirrored) instead of three times: the plain logits are
    the first half of the flip average. Same arguments as :func:`evaluate`.
    """
    scores = _evaluate(model, dataset, ("plain", "flip"), batch_size, dtype, progress=progress,
                       desc=desc, runtime=runtime)
    return scores["plain"], scores["flip"]


def _evaluate(model, dataset, variants: tuple[str, ...], batch_size: int = 4, dtype=None,
              class_weights=None, num_workers=None, progress: bool = True, desc: str = "evaluate",
              scales: tuple[float, ...] = (1.0,), distributed: bool = False, runtime=None) -> dict:
    """Score ``variants`` ("plain": the image as it is; "flip": averaged with its mirror)."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    share = dataset
    distributed = distributed and is_distributed()
    if distributed:
        from torch.utils.data import Subset

        share = Subset(dataset, shard_indices(len(dataset)))
    loader = DataLoader(share, batch_size=batch_size, shuffle=False,
                        num_workers=default_workers() if num_workers is None else num_workers)
    scores = {variant: SplitScores(model.num_classes, device, class_weights) for variant in variants}
    fast = runtime is not None and tuple(scales) == (1.0,)
    for images, masks in tqdm(loader, desc=desc, disable=not progress, leave=False):
        masks = masks.to(device, non_blocking=True)
        if fast and len(variants) == 2:
            plain, flipped = runtime.logits_with_and_without_flip(images)
            logits = {"plain": plain.to(device), "flip": flipped.to(device)}
        elif fast:
            logits = {variants[0]: runtime.logits(images, tta_flip=variants[0] == "flip").to(device)}
        else:
            logits = {variant: predict_logits(model, images, dtype=dtype, tta_flip=variant == "flip",
                                              scales=scales) for variant in variants}
        for variant in variants:
            scores[variant].add(logits[variant], masks)
    model.train(was_training)
    return {variant: scores[variant].result(dataset, distributed) for variant in variants}


def _open_for_scoring(checkpoint, split: str, device, progress: bool, runtime: str, amp):
    """Return (model, dataset, runtime, config) to score a checkpoint on one of its splits."""
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
    return model, dataset, loaded, config


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
    model, dataset, loaded, config = _open_for_scoring(checkpoint, split, device, progress,
                                                       runtime, amp)
    result = evaluate(model, dataset, config.batch_size, loaded.dtype, tta_flip=tta_flip,
                      progress=progress, runtime=loaded, scales=scales,
                      desc=f"{split}{' + flip' if tta_flip else ''}"
                           f"{' multi-scale' if len(scales) > 1 else ''}")
    result["runtime"] = loaded.describe()
    return result


def evaluate_checkpoint_with_and_without_flip(checkpoint, split: str = "test", device=None,
                                              progress: bool = True, runtime: str = "auto",
                                              amp: str | None = None) -> tuple[dict, dict]:
    """:func:`evaluate_checkpoint` without and with flip TTA, in one pass over the split.

    What a report scores (both figures), for two network runs per image instead of three.
    """
    model, dataset, loaded, config = _open_for_scoring(checkpoint, split, device, progress,
                                                       runtime, amp)
    plain, flipped = evaluate_with_and_without_flip(model, dataset, config.batch_size, loaded.dtype,
                                                    progress, f"{split}, as is and + flip", loaded)
    for result in (plain, flipped):
        result["runtime"] = loaded.describe()
    return plain, flipped


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
