"""Boundary F-score: how well a prediction's class edges line up with the ground truth's.

IoU is dominated by the interiors of large regions; a CRF or an atrous network mostly moves
*edges*, so the study also scores boundaries, the way the SegNet paper does (Badrinarayanan et
al. 2017, after Csurka et al. 2013, "What is a good evaluation measure for semantic
segmentation?"):

* **Boundary pixels.** In a label map, the boundary of class ``c`` is the set of pixels of
  class ``c`` that have a 4-neighbour of another class. Void is taken out first: wherever the
  ground truth is void, both maps are treated as void, and an edge whose other side is void
  does not count. Only edges between two labelled classes, inside the labelled area, are
  scored (CamVid's void bands sit exactly on many object outlines, where no edge is known).
* **Matching within a tolerance.** A predicted boundary pixel of class ``c`` is correct when a
  ground-truth boundary pixel of class ``c`` lies within ``tolerance`` pixels (Euclidean
  distance, by a dilation with a disk), and vice versa for recall. The default tolerance is
  0.75% of the image diagonal, as in SegNet: 4.5 px at 360x480.
* **Scores.** Per image and class: precision, recall and F1 = 2PR / (P + R). A class present
  in the ground-truth boundaries but with no predicted boundary scores 0. The image's BF is
  the mean F1 over the classes with ground-truth boundary pixels in it; the dataset's BF is
  the mean over images (SegNet's definition). :class:`BoundaryScore` also sums the matched
  pixel counts over the dataset for a per-class precision / recall / F1.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .metrics import IGNORE_INDEX

TOLERANCE_FRACTION = 0.0075  # of the image diagonal (SegNet, Csurka et al.)


def default_tolerance(height: int, width: int) -> float:
    """Return the matching tolerance in pixels: 0.75% of the image diagonal (4.5 at 360x480)."""
    return TOLERANCE_FRACTION * math.hypot(height, width)


def boundary_map(labels: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Return a bool (H, W) map of boundary pixels: labelled pixels with a 4-neighbour of another
    labelled class (neighbours that are ``ignore_index`` do not make an edge)."""
    labels = np.asarray(labels)
    valid = labels != ignore_index
    edge = np.zeros(labels.shape, dtype=bool)
    # Compare each pixel with its lower and right neighbour, and mark both sides of an edge.
    down = (labels[1:] != labels[:-1]) & valid[1:] & valid[:-1]
    right = (labels[:, 1:] != labels[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    edge[1:] |= down
    edge[:-1] |= down
    edge[:, 1:] |= right
    edge[:, :-1] |= right
    return edge


def tolerance_kernel(tolerance: float) -> np.ndarray:
    """Return a uint8 disk of the offsets within ``tolerance`` pixels (Euclidean) of the centre."""
    radius = int(math.floor(tolerance))
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= tolerance**2).astype(np.uint8)


def within_tolerance(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Return a bool map of the pixels within the kernel's reach of a True pixel of ``mask``.

    A dilation by the disk of :func:`tolerance_kernel`: the same pixels as a Euclidean distance
    transform thresholded at the tolerance, ~100x faster.
    """
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def boundary_counts(
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    tolerance: float | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Return an int64 (num_classes, 4) array of boundary pixel counts for one image.

    Columns: predicted boundary pixels, those matched by the ground truth within the
    tolerance, ground-truth boundary pixels, those matched by the prediction. Precision is
    column 1 / column 0, recall column 3 / column 2. ``pred`` and ``target`` are (H, W) class
    ids; ``tolerance`` defaults to :func:`default_tolerance`.
    """
    pred = np.asarray(pred).astype(np.int64)
    target = np.asarray(target).astype(np.int64)
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} differ")
    if tolerance is None:
        tolerance = default_tolerance(*target.shape)
    void = (target == ignore_index) | (target < 0) | (target >= num_classes)
    target = np.where(void, ignore_index, target)
    pred = np.where(void, ignore_index, pred)
    pred_edges, target_edges = boundary_map(pred, ignore_index), boundary_map(target, ignore_index)
    kernel = tolerance_kernel(tolerance)
    counts = np.zeros((num_classes, 4), dtype=np.int64)
    for c in range(num_classes):
        pred_c = pred_edges & (pred == c)
        target_c = target_edges & (target == c)
        if not pred_c.any() and not target_c.any():
            continue
        counts[c, 0] = pred_c.sum()
        counts[c, 2] = target_c.sum()
        if counts[c, 0]:
            counts[c, 1] = within_tolerance(target_c, kernel)[pred_c].sum()
        if counts[c, 2]:
            counts[c, 3] = within_tolerance(pred_c, kernel)[target_c].sum()
    return counts


def f1_from_counts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (precision, recall, F1) per row of :func:`boundary_counts` (float64 arrays).

    Rows without ground-truth boundary pixels get NaN recall and F1 (the class is not scored);
    a prediction with no boundary where the truth has one gets precision 0 and F1 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    predicted, pred_hits, truth, truth_hits = counts.T
    precision = np.divide(pred_hits, predicted, out=np.zeros_like(predicted), where=predicted > 0)
    recall = np.divide(truth_hits, truth, out=np.full_like(truth, np.nan), where=truth > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    f1[truth == 0] = np.nan
    precision[truth == 0] = np.where(predicted[truth == 0] > 0, precision[truth == 0], np.nan)
    return precision, recall, f1


def image_boundary_f1(pred, target, num_classes: int, tolerance: float | None = None,
                      ignore_index: int = IGNORE_INDEX) -> float:
    """Return one image's BF score: the mean boundary F1 over the classes with ground-truth
    boundary pixels (NaN when the ground truth has no edge between labelled classes)."""
    _, _, f1 = f1_from_counts(boundary_counts(pred, target, num_classes, tolerance, ignore_index))
    scored = f1[~np.isnan(f1)]
    return float(scored.mean()) if scored.size else math.nan


class BoundaryScore:
    """Accumulates the boundary F-score over a dataset, one image at a time.

    ``update(pred, target)`` takes (H, W) or (N, H, W) class ids (NumPy or torch);
    :meth:`summary` returns ``bf`` (mean over images of each image's BF, SegNet's figure),
    ``bf_per_class`` / ``precision_per_class`` / ``recall_per_class`` (from pixel counts summed
    over the dataset), ``precision``, ``recall`` (all classes pooled), ``tolerance_fraction``
    and ``images``.
    """

    def __init__(self, num_classes: int, tolerance: float | None = None,
                 ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.tolerance = tolerance
        self.ignore_index = ignore_index
        self.counts = np.zeros((num_classes, 4), dtype=np.int64)
        self.image_scores: list[float] = []

    def update(self, pred, target) -> None:
        """Add one image or a batch of images."""
        pred, target = _numpy(pred), _numpy(target)
        if pred.ndim == 2:
            pred, target = pred[None], target[None]
        for p, t in zip(pred, target, strict=True):
            counts = boundary_counts(p, t, self.num_classes, self.tolerance, self.ignore_index)
            self.counts += counts
            _, _, f1 = f1_from_counts(counts)
            if not np.isnan(f1).all():
                self.image_scores.append(float(np.nanmean(f1)))

    def summary(self) -> dict:
        """Return the dataset's boundary scores as plain Python numbers (NaN where undefined)."""
        precision, recall, f1 = f1_from_counts(self.counts)
        pooled = self.counts.sum(0)
        pooled_precision = pooled[1] / pooled[0] if pooled[0] else math.nan
        pooled_recall = pooled[3] / pooled[2] if pooled[2] else math.nan
        return {
            "bf": float(np.mean(self.image_scores)) if self.image_scores else math.nan,
            "bf_per_class": f1.tolist(),
            "precision_per_class": precision.tolist(),
            "recall_per_class": recall.tolist(),
            "precision": float(pooled_precision),
            "recall": float(pooled_recall),
            "tolerance_fraction": TOLERANCE_FRACTION if self.tolerance is None else None,
            "tolerance_pixels": self.tolerance,
            "images": len(self.image_scores),
        }


def _numpy(values) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)
