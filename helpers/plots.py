"""Drawing: the report's figures, and class colours drawn onto pictures.

Each figure function takes data and returns a matplotlib Figure; :func:`save_fig` writes it to
``figures/<name>.png`` at a fixed dpi. :func:`overlay` (figures: void pixels left as they are),
:func:`blend_colors` and :func:`draw_legend` (the prediction overlays of the command line and
the web app) draw with the palette of :func:`helpers.labels.colorize`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

if not matplotlib.get_backend().lower().startswith(("module://", "nbagg", "ipympl", "widget")):
    matplotlib.use("Agg")  # scripts and tests have no screen; notebooks keep their inline backend
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from .config import output_dir
from .labels import ClassInfo, colorize

DPI = 110


def save_fig(fig, name: str, folder: str | Path | None = None) -> Path:
    """Save a figure as ``figures/<name>.png`` (fixed dpi, tight box) and return the path.

    In the smoke profile the default folder is ``build/smoke/figures`` (see
    :func:`helpers.config.output_dir`).
    """
    folder = Path(folder) if folder else output_dir("figures")
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


def blend_colors(image: np.ndarray, mask: np.ndarray, classes: ClassInfo, alpha: float = 0.5):
    """Return ``image`` (H, W, 3) blended with the class colours of ``mask`` (H, W), RGB uint8."""
    import cv2

    return cv2.addWeighted(image, 1 - alpha, colorize(mask, classes), alpha, 0)


def draw_legend(picture: np.ndarray, classes: ClassInfo, shares, min_share: float = 0.001) -> None:
    """Draw, in place, a legend of the classes covering at least ``min_share`` of the picture.

    Entries are sorted by share: a colour swatch, the class name and its percentage, on a
    darkened panel in the top-left corner; the text scales with the picture.
    """
    import cv2

    entries = [(share, name, color) for share, name, color in
               zip(shares, classes.names, classes.colors, strict=True) if share >= min_share]
    entries.sort(reverse=True)
    if not entries:
        return
    height, width = picture.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.35, min(height, width) / 1400)
    thickness = max(1, round(scale * 1.6))
    labels = [f"{name} {100 * share:.1f}%" for share, name, _ in entries]
    (text_width, text_height), baseline = max(
        (cv2.getTextSize(label, font, scale, thickness) for label in labels), key=lambda s: s[0][0])
    line = int(text_height * 1.9)
    margin = max(4, line // 3)
    swatch = text_height + baseline
    panel_width = min(width, margin * 3 + swatch + text_width)
    panel_height = min(height, margin * 2 + line * len(entries))
    panel = picture[:panel_height, :panel_width]
    panel[:] = (panel.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken so text reads
    for row, ((_, _, color), label) in enumerate(zip(entries, labels, strict=True)):
        top = margin + row * line + (line - swatch) // 2
        cv2.rectangle(picture, (margin, top), (margin + swatch, top + swatch),
                      tuple(int(c) for c in color), thickness=-1)
        cv2.rectangle(picture, (margin, top), (margin + swatch, top + swatch), (255, 255, 255), 1)
        cv2.putText(picture, label, (margin * 2 + swatch, top + text_height), font, scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)


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
    Epochs without validation (``Config.validate_annealed_only``) leave the validation curve
    blank, marked by its points.
    """
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for (label, rows), color in zip(histories.items(), plt.cm.tab10.colors, strict=False):
        epochs = [r["epoch"] for r in rows]
        for ax, key in zip(axes[0], keys, strict=True):
            ax.plot(epochs, [r[f"train_{key}"] for r in rows], "--", color=color, alpha=0.7,
                    label=f"{label} train")
            val = [r.get(f"val_{key}", math.nan) for r in rows]
            ax.plot(epochs, val, ".-" if any(math.isnan(v) for v in val) else "-", color=color,
                    label=f"{label} val")
            ax.set_xlabel("epoch")
            ax.set_title(key.replace("_", " "))
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def one_cycle_schedule(rates: Sequence[float], armed_from: int, patience: int):
    """Return a figure of a one-cycle schedule's learning rate after each epoch, shading the
    epochs (from ``armed_from``, 0-based) that may count against early stopping's patience."""
    fig, ax = plt.subplots(figsize=(7, 2.5))
    epochs = len(rates)
    ax.plot(range(1, epochs + 1), rates, marker="o", label="learning rate at the end of the epoch")
    ax.axvspan(armed_from + 0.5, epochs + 0.5, alpha=0.2, color="tab:green",
               label=f"epochs that count against the patience ({patience})")
    ax.set(xlabel="epoch", ylabel="learning rate", title=f"One-cycle schedule, {epochs} epochs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def iou_bars(ious: dict[str, Sequence[float]], class_names: Sequence[str], title: str = ""):
    """Return grouped bars of per-class IoU for one or more models (``ious`` maps label → IoUs)."""
    fig, ax = plt.subplots(figsize=(10, 3.8))
    count = len(ious)
    width = 0.8 / count
    x = np.arange(len(class_names))
    for offset, (label, values) in enumerate(ious.items()):
        values = np.nan_to_num(np.array([np.nan if v is None else v for v in values], dtype=np.float64))
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


def _fill_grid(axes, images, columns: dict, first_title: str, draw) -> None:
    """Fill a (rows, 1 + columns) grid: each image, then ``draw(image, mask)`` per column."""
    for row, image in enumerate(images):
        axes[row, 0].imshow(image)
        for col, (title, masks) in enumerate(columns.items(), start=1):
            axes[row, col].imshow(draw(image, masks[row]))
            if row == 0:
                axes[row, col].set_title(title, fontsize=9)
        if row == 0:
            axes[row, 0].set_title(first_title, fontsize=9)
    for ax in axes.flat:
        ax.axis("off")


def prediction_grid(images, columns: dict[str, Sequence[np.ndarray]], classes: ClassInfo,
                    overlay_alpha: float | None = None):
    """Return a grid: one row per image, the image then one column per mask set.

    ``columns`` maps a column title (e.g. "ground truth", a model name) to one mask per image.
    With ``overlay_alpha`` the masks are drawn over the image.
    """
    rows, cols = len(images), 1 + len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    _fill_grid(axes, images, columns, "image",
               lambda image, mask: (overlay(image, mask, classes, overlay_alpha) if overlay_alpha
                                    else colorize(mask, classes)))
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


def dilation_patterns(dilations: Sequence[int] = (1, 2, 4), kernel_size: int = 3):
    """Return a figure of where a kernel reads its input at each dilation rate (atrous conv).

    Dots are the ``kernel_size**2`` sampled pixels, the shaded square the field they span:
    ``(kernel_size - 1) * rate + 1`` pixels wide for the same number of weights.
    """
    from matplotlib.patches import Rectangle

    grid = (kernel_size - 1) * max(dilations) + 3
    centre = grid // 2
    fig, axes = plt.subplots(1, len(dilations), figsize=(2.9 * len(dilations), 3.1), squeeze=False)
    for ax, rate in zip(axes[0], dilations, strict=True):
        field = (kernel_size - 1) * rate + 1
        start = centre - field // 2 - 0.5
        ax.add_patch(Rectangle((start, start), field, field, color="tab:blue", alpha=0.15))
        offsets = (np.arange(kernel_size) - kernel_size // 2) * rate + centre
        xs, ys = np.meshgrid(offsets, offsets)
        ax.scatter(xs.ravel(), ys.ravel(), s=60, color="tab:blue", zorder=3)
        ax.scatter([centre], [centre], s=60, color="tab:red", zorder=4)
        ax.set_xticks(np.arange(-0.5, grid, 1))
        ax.set_yticks(np.arange(-0.5, grid, 1))
        ax.grid(color="0.8", linewidth=0.6)
        ax.tick_params(labelbottom=False, labelleft=False, length=0)
        ax.set_xlim(-0.5, grid - 0.5)
        ax.set_ylim(grid - 0.5, -0.5)
        ax.set_aspect("equal")
        ax.set_title(f"rate {rate}: {kernel_size * kernel_size} weights,\n"
                     f"{field}x{field} pixel field", fontsize=9)
    fig.tight_layout()
    return fig


def receptive_field_maps(maps: dict[str, np.ndarray], radii: dict[str, float] | None = None,
                         share: float = 0.5):
    """Return effective receptive fields side by side (log colour scale, each map scaled to 1).

    ``maps`` holds (H, W) magnitudes, e.g. the input gradient of one centre output pixel;
    ``radii`` optional radii (pixels) holding ``share`` of each map's total, drawn as circles.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Circle

    fig, axes = plt.subplots(1, len(maps), figsize=(3.3 * len(maps), 3.4), squeeze=False)
    for ax, (label, values) in zip(axes[0], maps.items(), strict=True):
        values = np.asarray(values, dtype=np.float64)
        values = values / max(values.max(), 1e-30)
        ax.imshow(np.maximum(values, 1e-4), cmap="magma", norm=LogNorm(1e-4, 1))
        height, width = values.shape
        if radii and label in radii:
            ax.add_patch(Circle((width / 2, height / 2), radii[label], fill=False, color="cyan",
                                linewidth=1))
            label = f"{label}\n{share:.0%} of |gradient| within r = {radii[label]:.0f} px"
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def grouped_bars(panels: dict[str, dict[str, dict[str, float]]], fmt: str = "{:.3f}"):
    """Return one panel per metric with bars grouped by model, one bar per variant.

    ``panels`` maps a panel title (e.g. "mIoU") to ``{group: {variant: value}}``, e.g.
    ``{"DeepLabV3+": {"no CRF": 0.61, "CRF": 0.62}}``.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, groups) in zip(axes[0], panels.items(), strict=True):
        variants = list(dict.fromkeys(v for values in groups.values() for v in values))
        width = 0.8 / len(variants)
        x = np.arange(len(groups))
        for offset, (variant, color) in enumerate(zip(variants, plt.cm.tab10.colors, strict=False)):
            values = [groups[g].get(variant, np.nan) for g in groups]
            bars = ax.bar(x + (offset - (len(variants) - 1) / 2) * width, np.nan_to_num(values),
                          width, label=variant, color=color)
            for bar, value in zip(bars, values, strict=True):
                if np.isfinite(value):
                    ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), fmt.format(value),
                            ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, list(groups), fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def overlay_columns(images, columns: dict[str, Sequence[np.ndarray]], classes: ClassInfo,
                    alpha: float = 0.5, cell_width: float = 3.4):
    """Return a grid of photos (rows) and their masks drawn over them (one column per mask set).

    Unlike :func:`prediction_grid`, cells take the photos' aspect ratio, so portrait phone
    photos fill them. ``columns`` maps a column title to one mask per image (same size as it).
    """
    rows, cols = len(images), 1 + len(columns)
    aspect = max(image.shape[0] / image.shape[1] for image in images)
    fig, axes = plt.subplots(rows, cols, figsize=(cell_width * cols, cell_width * aspect * rows + 0.6),
                             squeeze=False)
    _fill_grid(axes, images, columns, "photo",
               lambda image, mask: overlay(image, mask, classes, alpha))
    fig.legend(handles=legend_handles(classes), loc="lower center", ncol=6, fontsize=7,
               frameon=False)
    fig.tight_layout(rect=(0, 0.5 / (cell_width * aspect * rows + 0.6), 1, 1))
    return fig


def label_efficiency(curves: dict[str, dict], marker: int | None = None, title: str = ""):
    """Return test mIoU against the number of labelled images (log axis), one line per model.

    ``curves`` maps a label to ``{"sizes", "mean", "std", "values"}`` (values: one list of
    per-seed scores per size, drawn as dots); the band is ±1 std. ``marker`` draws a vertical
    line at that many images (the original study's training set).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, curve in curves.items():
        sizes = np.asarray(curve["sizes"], dtype=np.float64)
        mean, std = np.asarray(curve["mean"]), np.asarray(curve["std"])
        (line,) = ax.plot(sizes, mean, marker="o", label=label)
        ax.fill_between(sizes, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        for size, values in zip(sizes, curve.get("values", []), strict=False):
            ax.scatter([size] * len(values), values, s=10, color=line.get_color(), alpha=0.6)
    if marker is not None:
        ax.axvline(marker, color="0.4", linestyle="--", linewidth=1)
        ax.annotate(f"original study: {marker} training photos", (marker, 0.97),
                    xycoords=("data", "axes fraction"), rotation=90, fontsize=8, color="0.3",
                    ha="right", va="top")
    ax.set_xscale("log")
    sizes = sorted({s for c in curves.values() for s in c["sizes"]})  # the marker is labelled on its line
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("labelled training images (log scale)")
    ax.set_ylabel("test mIoU")
    ax.set_title(title or "Label efficiency: test mIoU against labelled images (mean ± 1 std)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
