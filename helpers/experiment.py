"""The steps notebooks 03 (transfer learning) and 04 (mini U-Net) share, for one model each.

Train (or reuse) the run, score it on the test split, then look: metrics tables, predictions
next to the ground truth, predictions on the campus photos. :func:`report_model` is the one call
both notebooks make for all of it; training and scoring themselves are
:func:`helpers.train.ensure_trained` and :func:`ensure_result`, which writes the model's entry
with :mod:`helpers.report`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import Config
from .labels import ClassInfo
from .report import checkpoint_of, model_result, read_results, write_result

METRIC_ROWS = {"miou": "mIoU", "pixel_accuracy": "pixel accuracy",
               "mean_class_accuracy": "mean class accuracy", "dice": "Dice (macro)"}


def ensure_result(config: Config, checkpoint: str | Path | None = None,
                  progress: bool = True) -> dict:
    """Return a model's results entry, training and evaluating it on test first if needed.

    ``checkpoint`` is the model to score (:func:`helpers.hub.checkpoint_for` finds one: a run of
    this machine, or the released weights); without it ``config`` trains, exactly
    (:func:`helpers.train.ensure_trained`: plan it for this machine first with
    :func:`helpers.budget.plan_run`, as the notebooks do). The entry (``results/<model>.json``)
    is reused while it belongs to this checkpoint file; otherwise the model is (re)scored, with
    and without flip TTA in one pass, and the entry rewritten.
    """
    from .evaluate import evaluate_checkpoint_with_and_without_flip
    from .train import ensure_trained

    best = Path(checkpoint) if checkpoint is not None else ensure_trained(config, progress=progress)
    stamp = best.stat().st_mtime_ns
    existing = read_results().get(config.model)
    if (existing and existing.get("checkpoint_mtime_ns") == stamp
            and checkpoint_of(existing).resolve() == best.resolve()):
        return existing
    test, test_tta = evaluate_checkpoint_with_and_without_flip(best, "test", progress=progress)
    data = model_result(best, test, test_tta) | {"checkpoint_mtime_ns": stamp}
    write_result(config.model, data, config.profile)
    return read_results()[config.model]


def metrics_table(result: dict):
    """Return a DataFrame of the test metrics without and with flip TTA.

    ``result`` is a model's result from :func:`ensure_result`.
    """
    import pandas as pd

    scores = {"test": result["test"], "test + flip TTA": result["test_flip_tta"]}
    return pd.DataFrame({name: [score[key] for key in METRIC_ROWS] for name, score in scores.items()},
                        index=list(METRIC_ROWS.values()))


def per_class_table(test: dict, classes: ClassInfo):
    """Return a DataFrame of IoU and Dice per class from a test result (NaN: class absent)."""
    import pandas as pd

    return pd.DataFrame({"IoU": test["iou"], "Dice": test["dice_per_class"]},
                        index=list(classes.names))


def predictions_on_test_images(checkpoint: str | Path, config: Config, count: int = 3):
    """Return ``(images, truths, predictions)`` for ``count`` evenly spaced test images.

    uint8 RGB images, their masks and the model's class ids, all at the native resolution,
    through the project's one inference path.
    """
    from .checkpoint import load_model
    from .datasets import build_datasets, evenly_spaced
    from .inference import amp_dtype, labels_from_logits, pick_device, predict_logits, prepare_model
    from .transforms import to_tensor

    device = pick_device()
    model, _ = load_model(checkpoint)
    model = prepare_model(model, device, config.channels_last)
    dtype = amp_dtype(device, config.amp, config.model)
    test_set = build_datasets(config)["test"]
    images, truths, predictions = [], [], []
    for index in evenly_spaced(range(len(test_set)), count):
        image, mask = test_set.load(index)
        logits = predict_logits(model, to_tensor(image)[None], dtype=dtype)
        images.append(image)
        truths.append(mask)
        predictions.append(labels_from_logits(logits)[0].cpu().numpy())
    return images, truths, predictions


def campus_predictions_figure(checkpoint: str | Path, photos: list[Path]):
    """Return a figure of the model's labels over some campus photos (see
    :func:`helpers.downloads.campus_photos`), each titled with the time its prediction took."""
    import matplotlib.pyplot as plt

    from .predict import Predictor

    predictor = Predictor(checkpoint)
    fig, axes = plt.subplots(1, len(photos), figsize=(4 * len(photos), 5), squeeze=False)
    for ax, photo in zip(axes[0], photos, strict=True):
        prediction = predictor.predict_file(photo)
        ax.imshow(prediction.overlay(max_side=640))
        ax.set_title(f"{photo.name} ({prediction.total_ms:.0f} ms)", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


@dataclass
class ModelReport:
    """What :func:`report_model` found: the results entry, its tables and the saved figures."""

    result: dict  # the model's entry of results/<model>.json (see :func:`ensure_result`)
    metrics: object  # DataFrame: test metrics without and with flip TTA
    per_class: object  # DataFrame: IoU and Dice per class
    figures: dict[str, Path] = field(default_factory=dict)  # saved figures by name


def report_model(checkpoint: str | Path, config: Config, label: str, figure_prefix: str,
                photos: list[Path] = (), progress: bool = True) -> ModelReport:
    """Score a trained model on the test split and draw what notebooks 03 and 04 show of it.

    Scores (or reuses) the test metrics with and without flip TTA (:func:`ensure_result`),
    then draws the per-class IoU, predictions next to the ground truth on evenly spaced test
    images and predictions on ``photos`` (campus photos, see
    :func:`helpers.downloads.campus_photos`; none: no figure). The figures are saved as
    ``<figure_prefix>_iou``, ``<figure_prefix>_test_predictions`` and ``<figure_prefix>_campus``
    and left open, so a notebook shows them. ``label`` names the model in the figures.
    """
    from .checkpoint import load_model
    from .plots import iou_bars, prediction_grid, save_fig

    classes = load_model(checkpoint)[1]["classes"]
    result = ensure_result(config, checkpoint, progress=progress)
    test = result["test"]
    figures = {}
    fig = iou_bars({label: test["iou"]}, classes.names,
                   f"Per-class IoU on the test split (mIoU {test['miou']:.3f})")
    figures["iou"] = save_fig(fig, f"{figure_prefix}_iou")
    images, truths, predictions = predictions_on_test_images(checkpoint, config)
    fig = prediction_grid(images, {"ground truth": truths, label: predictions}, classes)
    figures["test_predictions"] = save_fig(fig, f"{figure_prefix}_test_predictions")
    if photos:
        fig = campus_predictions_figure(checkpoint, list(photos))
        figures["campus"] = save_fig(fig, f"{figure_prefix}_campus")
    return ModelReport(result, metrics_table(result), per_class_table(test, classes), figures)
