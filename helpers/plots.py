"""Figures of the report. Each function takes data and returns a matplotlib Figure;
:func:`save_fig` writes it to ``figures/<name>.png`` at a fixed dpi."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

if not matplotlib.get_backend().lower().startswith(("module://", "nbagg", "ipympl", "widget")):
    matplotlib.use("Agg")  # scripts and tests have no screen; notebooks keep their inline backend
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from .config import project_path
from .data import ClassInfo, colorize

DPI = 110


def save_fig(fig, name: str, folder: str | Path | None = None) -> Path:
    """Save a figure as ``figures/<name>.png`` (fixed dpi, tight box) and return the path."""
    folder = Path(folder) if folder else project_path("figures")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def legend_handles(classes: ClassInfo, shares: Sequence[float] | None = None) -> list[Patch]:
    """Return legend patches with each class colour (and its share of pixels, if given)."""
    handles = []
    for index, (name, color) in enumerate(zip(classes.names, classes.colors, strict=True)):
        label = name if shares is None else f"{name} {100 * shares[index]:.1f}%"
        handles.append(Patch(facecolor=np.array(color) / 255, edgecolor="0.3", label=label))
    return handles


def overlay(image: np.ndarray, mask: np.ndarray, classes: ClassInfo, alpha: float = 0.5) -> np.ndarray:
    """Return the image blended with the colours of a mask (ignored pixels left as they are)."""
    colors = colorize(mask, classes).astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colors
    keep = np.asarray(mask) >= classes.num_classes
    blended[keep] = image[keep]
    return blended.clip(0, 255).astype(np.uint8)


def show_samples(images, masks, classes: ClassInfo, titles: Sequence[str] | None = None):
    """Return a figure of image / mask pairs in rows, with a class-colour legend."""
    rows = len(images)
    fig, axes = plt.subplots(rows, 2, figsize=(8, 3 * rows), squeeze=False)
    for row, (image, mask) in enumerate(zip(images, masks, strict=True)):
        axes[row, 0].imshow(image)
        axes[row, 1].imshow(colorize(mask, classes))
        axes[row, 0].set_title(titles[row] if titles else "image", fontsize=9)
        axes[row, 1].set_title("mask (black = void, ignored)", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.legend(handles=legend_handles(classes), loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def class_frequencies(counts: Sequence[int], classes: ClassInfo, title: str = ""):
    """Return a horizontal bar chart of each class's share of labelled pixels (log scale)."""
    counts = np.asarray(counts, dtype=np.float64)
    shares = counts / counts.sum()
    order = np.argsort(shares)
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = np.array(classes.colors, dtype=np.float64)[order] / 255
    ax.barh(np.array(classes.names)[order], 100 * shares[order], color=colors, edgecolor="0.3")
    ax.set_xscale("log")
    ax.set_xlabel("share of labelled pixels (%, log scale)")
    for y, share in enumerate(shares[order]):
        ax.text(100 * share * 1.05, y, f"{100 * share:.1f}%", va="center", fontsize=8)
    ax.set_title(title or "Class pixel frequencies")
    fig.tight_layout()
    return fig


def training_curves(histories: dict[str, Sequence[dict]], keys=("loss", "miou", "pixel_accuracy")):
    """Return loss / mIoU / accuracy curves per epoch, train dashed and validation solid.

    ``histories`` maps a run label to its per-epoch rows (as written by ``helpers.train``).
    """
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for (label, rows), color in zip(histories.items(), plt.cm.tab10.colors, strict=False):
        epochs = [r["epoch"] for r in rows]
        for ax, key in zip(axes[0], keys, strict=True):
            ax.plot(epochs, [r[f"train_{key}"] for r in rows], "--", color=color, alpha=0.7,
                    label=f"{label} train")
            ax.plot(epochs, [r[f"val_{key}"] for r in rows], "-", color=color, label=f"{label} val")
            ax.set_xlabel("epoch")
            ax.set_title(key.replace("_", " "))
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def iou_bars(ious: dict[str, Sequence[float]], class_names: Sequence[str], title: str = ""):
    """Return grouped bars of per-class IoU for one or more models (``ious`` maps label → IoUs)."""
    fig, ax = plt.subplots(figsize=(10, 3.8))
    count = len(ious)
    width = 0.8 / count
    x = np.arange(len(class_names))
    for offset, (label, values) in enumerate(ious.items()):
        values = np.nan_to_num(np.asarray(values, dtype=np.float64))
        ax.bar(x + (offset - (count - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, class_names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    ax.set_title(title or "Per-class IoU (test)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def confusion_matrices(matrices: dict[str, np.ndarray], class_names: Sequence[str]):
    """Return row-normalized confusion matrices side by side (rows = truth, columns = prediction)."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(5.6 * len(matrices), 5), squeeze=False)
    for ax, (label, cm) in zip(axes[0], matrices.items(), strict=True):
        cm = np.asarray(cm, dtype=np.float64)
        normalized = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
        ax.set_xlabel("prediction")
        ax.set_ylabel("ground truth")
        ax.set_title(label)
        for i in range(len(class_names)):
            for j in range(len(class_names)):
                if normalized[i, j] >= 0.05:
                    ax.text(j, i, f"{normalized[i, j]:.2f}", ha="center", va="center", fontsize=5.5,
                            color="white" if normalized[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def prediction_grid(images, columns: dict[str, Sequence[np.ndarray]], classes: ClassInfo,
                    overlay_alpha: float | None = None):
    """Return a grid: one row per image, the image then one column per mask set.

    ``columns`` maps a column title (e.g. "ground truth", a model name) to one mask per image.
    With ``overlay_alpha`` the masks are drawn over the image.
    """
    rows, cols = len(images), 1 + len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for row, image in enumerate(images):
        axes[row, 0].imshow(image)
        for col, (title, masks) in enumerate(columns.items(), start=1):
            picture = (overlay(image, masks[row], classes, overlay_alpha) if overlay_alpha
                       else colorize(masks[row], classes))
            axes[row, col].imshow(picture)
            if row == 0:
                axes[row, col].set_title(title, fontsize=9)
        if row == 0:
            axes[row, 0].set_title("image", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.legend(handles=legend_handles(classes), loc="lower center", ncol=6, fontsize=7,
               frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def bar_chart(values: dict[str, float], ylabel: str, title: str = "", fmt: str = "{:.3f}"):
    """Return a labelled bar chart of a few named values."""
    fig, ax = plt.subplots(figsize=(1.4 * len(values) + 2, 3.4))
    bars = ax.bar(list(values), list(values.values()), color=plt.cm.tab10.colors[: len(values)])
    for bar, value in zip(bars, values.values(), strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), fmt.format(value),
                ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return fig
