"""Segmentation metrics from one confusion matrix over the whole dataset.

The benchmark protocol (CamVid, PASCAL VOC, Cityscapes) accumulates a single confusion matrix
over every pixel of the split and computes IoU per class from it. Two shortcuts of the original
study are kept here, clearly named, so the report can show what they change:

* :func:`per_image_mean_iou` averages an mIoU per image. Small objects in one image weigh as
  much as a whole road in another, and classes absent from an image drop out of its mean.
* :func:`integer_id_dice` multiplies class *ids* as if they were probabilities: sky (id 0) adds
  nothing, bicyclist (id 10) counts a hundred times more than building (id 1).
"""

from __future__ import annotations

import math

import torch

# The label of pixels that no loss or metric counts: void in CamVid, padding and the corners a
# rotation invents. The project's one definition; datasets map their own void id to it.
IGNORE_INDEX = 255


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Return an int64 (num_classes, num_classes) matrix: rows = ground truth, columns = prediction.

    ``pred`` and ``target`` hold class ids of the same shape. Pixels whose target is
    ``ignore_index`` (or any value outside ``0..num_classes-1``) are excluded. Runs on the
    tensors' device without a host synchronisation.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    valid = (target >= 0) & (target < num_classes) & (target != ignore_index)
    valid &= (pred >= 0) & (pred < num_classes)
    trash = num_classes * num_classes  # one extra bin collects the excluded pixels
    index = torch.where(valid, target * num_classes + pred, torch.full_like(target, trash))
    counts = torch.zeros(trash + 1, dtype=torch.int64, device=pred.device)
    counts.scatter_add_(0, index, torch.ones_like(index))
    return counts[:trash].reshape(num_classes, num_classes)


def per_image_confusion_matrices(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Return a (batch, num_classes, num_classes) stack of confusion matrices, one per image."""
    batch = pred.shape[0]
    offsets = torch.arange(batch, device=pred.device).view(-1, *([1] * (pred.dim() - 1)))
    # Shift every image's ids into its own block of a (batch * num_classes) label space.
    shifted_target = torch.where(
        (target >= 0) & (target < num_classes), target + offsets * num_classes, target.new_full((), -1)
    )
    big = confusion_matrix(pred + offsets * num_classes, shifted_target, batch * num_classes, -1)
    blocks = big.view(batch, num_classes, batch, num_classes)
    return blocks[torch.arange(batch), :, torch.arange(batch), :]


class ConfusionMatrix:
    """One confusion matrix accumulated over a dataset, batch by batch (torchvision's
    ``references/segmentation`` accumulator): every evaluation loop of the project uses it.

    ``update(pred, target)`` adds a batch of class ids on the matrix's device without a host
    synchronisation; ``reduce_from_all_processes()`` sums the matrices of a distributed run;
    ``compute()`` returns the dataset-level metrics of :func:`summarize`.
    """

    def __init__(self, num_classes: int, device: torch.device | str | None = None,
                 ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add predicted and true class ids of the same shape (any batch shape)."""
        device = self.matrix.device
        self.matrix += confusion_matrix(pred.to(device), target.to(device), self.num_classes,
                                        self.ignore_index)

    def reduce_from_all_processes(self) -> None:
        """Sum the matrices of all processes of a ``torch.distributed`` run (no-op otherwise)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.all_reduce(self.matrix)

    def compute(self, class_names: list[str] | None = None) -> dict:
        """Return :func:`summarize` of the accumulated matrix."""
        return summarize(self.matrix, class_names)


def iou_per_class(cm: torch.Tensor) -> torch.Tensor:
    """Return IoU per class (float64); NaN where a class is absent from prediction and truth."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))


def dice_per_class(cm: torch.Tensor) -> torch.Tensor:
    """Return the Dice score (F1) per class; NaN where a class is absent from both."""
    cm = cm.double()
    tp = cm.diag()
    denominator = cm.sum(0) + cm.sum(1)
    return torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.full_like(tp, math.nan))


def summarize(cm: torch.Tensor, class_names: list[str] | None = None) -> dict:
    """Return the dataset-level metrics of a confusion matrix as plain Python numbers.

    Keys: ``miou`` (mean IoU over classes with a non-zero union), ``iou`` (per class, NaN when
    absent), ``pixel_accuracy``, ``mean_class_accuracy`` (over classes present in the ground
    truth), ``dice`` (macro mean of per-class Dice), ``dice_per_class``; with ``class_names``
    also ``iou_by_class``.
    """
    cm = cm.detach().cpu()
    iou = iou_per_class(cm)
    dice = dice_per_class(cm)
    cmd = cm.double()
    total = cmd.sum()
    support = cmd.sum(1)
    recall = torch.where(support > 0, cmd.diag() / support.clamp(min=1), torch.full_like(support, math.nan))
    result = {
        "miou": _nanmean(iou),
        "iou": iou.tolist(),
        "pixel_accuracy": float(cmd.diag().sum() / total) if total > 0 else math.nan,
        "mean_class_accuracy": _nanmean(recall),
        "dice": _nanmean(dice),
        "dice_per_class": dice.tolist(),
        "pixels": int(total),
    }
    if class_names is not None:
        result["iou_by_class"] = dict(zip(class_names, result["iou"], strict=True))
    return result


def per_image_mean_iou(per_image_cms: torch.Tensor) -> float:
    """The original study's figure: the mean over images of each image's own mIoU.

    Not the benchmark metric; kept to measure how far it drifts from :func:`summarize`'s
    ``miou``. Images with no labelled pixel are skipped.
    """
    values = [_nanmean(iou_per_class(cm)) for cm in per_image_cms.cpu() if cm.sum() > 0]
    return float(sum(values) / len(values)) if values else math.nan


def integer_id_dice(pred: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX):
    """The original study's "Dice": ``2 * sum(pred * target) / (sum(pred) + sum(target))`` on ids.

    Returns the float sums ``(2 * intersection, total)`` so a caller can accumulate them over a
    dataset. Kept only to show it is not a Dice score: it depends on how classes are numbered.
    """
    valid = target != ignore_index
    pred = torch.where(valid, pred, 0).double()
    target = torch.where(valid, target, 0).double()
    return 2 * (pred * target).sum(), pred.sum() + target.sum()


def _nanmean(values: torch.Tensor) -> float:
    values = values[~torch.isnan(values)]
    return float(values.mean()) if values.numel() else math.nan
