"""The label-efficiency study's results: the results file every run is recorded in, and what
the curves say (test mIoU per subset size, and how many labelled images the scratch model needs
to match the pretrained one).

``results/label_efficiency.json`` holds one entry per run, keyed by (profile, model, subset
size, seed); :mod:`helpers.study` trains and records the runs, notebook 08 and
:mod:`helpers.report` read them back.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .config import output_dir
from .files import write_json

MODELS = ("unet-effnet-lite0", "mini-unet")
MODEL_LABELS = {"unet-effnet-lite0": "pretrained (U-Net, EfficientNet-Lite0)",
                "mini-unet": "from scratch (mini U-Net)"}
# The original study trained on about 104 of its 130 labelled campus photos.
ORIGINAL_STUDY_TRAIN_IMAGES = 104
RESULTS_NAME = "label_efficiency"


def default_results_path(profile: str) -> Path:
    """Return ``results/label_efficiency.json`` (``build/smoke/results/`` in the smoke profile)."""
    return output_dir("results", profile) / f"{RESULTS_NAME}.json"


def record_run(results_path: Path, entry: dict, lock_path: Path | None = None) -> None:
    """Add (or replace) one run's entry in the results file, atomically and under a file lock.

    Runs are keyed by (profile, model, size, seed), so the file can hold several profiles.
    """
    results_path = Path(results_path)
    lock_path = Path(lock_path) if lock_path else results_path.with_name(f".{results_path.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock, _locked(lock):
        data = read_study_results(results_path)
        key = _run_key(entry)
        data["runs"] = sorted([r for r in data["runs"] if _run_key(r) != key] + [entry], key=_run_key)
        write_json(results_path, data)


@contextlib.contextmanager
def _locked(handle):
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): runs of one process never collide anyway
        yield
        return
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)


def _run_key(entry: dict) -> tuple:
    return (entry["profile"], MODELS.index(entry["model"]) if entry["model"] in MODELS else 99,
            entry["model"], entry["size"], entry["seed"])


def read_study_results(path: str | Path | None = None, profile: str | None = None) -> dict:
    """Return the results file (``{"name", "runs": [...]}``), empty when absent; ``profile``
    keeps that profile's runs only."""
    path = Path(path) if path else default_results_path(profile or "quick")
    data = json.loads(path.read_text()) if Path(path).is_file() else {"name": RESULTS_NAME, "runs": []}
    if profile is not None:
        data = {**data, "runs": [r for r in data["runs"] if r["profile"] == profile]}
    return data


def label_curves(runs: Sequence[dict], metric: str = "test_miou") -> dict[str, dict]:
    """Return each model's curve: ``{model: {"sizes", "mean", "std", "seeds", "values"}}``.

    ``std`` is the sample standard deviation over seeds (0 with a single seed); sizes ascend.
    """
    curves: dict[str, dict] = {}
    for model in [m for m in MODELS if any(r["model"] == m for r in runs)]:
        sizes = sorted({r["size"] for r in runs if r["model"] == model})
        values = [[r[metric] for r in runs if r["model"] == model and r["size"] == s] for s in sizes]
        curves[model] = {
            "sizes": sizes,
            "values": values,
            "seeds": [len(v) for v in values],
            "mean": [float(np.mean(v)) for v in values],
            "std": [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in values],
        }
    return curves


def per_class_at(runs: Sequence[dict], size: int) -> dict[str, dict[str, float]]:
    """Return ``{model: {class: mean IoU over seeds}}`` at one subset size (NaN-free means)."""
    table: dict[str, dict[str, float]] = {}
    for model in MODELS:
        chosen = [r["per_class_iou"] for r in runs if r["model"] == model and r["size"] == size]
        if not chosen:
            continue
        table[model] = {name: float(np.nanmean([np.nan if c[name] is None else c[name] for c in chosen]))
                        for name in chosen[0]}
    return table


def images_needed(sizes: Sequence[int], values: Sequence[float], target: float) -> float | None:
    """Return how many labelled images a curve needs to reach ``target``, or None if it never does.

    The curve is piecewise linear in log(size) between measured sizes; the first crossing
    counts. A target at or below the first value returns the first size (no extrapolation).
    """
    if not sizes:
        return None
    if values[0] >= target:
        return float(sizes[0])
    for (s0, v0), (s1, v1) in zip(zip(sizes, values, strict=True), zip(sizes[1:], values[1:], strict=True),
                                  strict=False):
        if v0 < target <= v1:
            fraction = (target - v0) / (v1 - v0)
            return float(math.exp(math.log(s0) + fraction * (math.log(s1) - math.log(s0))))
    return None


def equivalent_labels(curves: dict[str, dict], size: int, pretrained: str = MODELS[0],
                      scratch: str = MODELS[1]) -> dict:
    """Return how many labelled images the scratch model needs to match the pretrained one's
    mean test mIoU at ``size``, with a range from the ±1 std bands.

    ``{"size", "target", "target_std", "needed", "low", "high"}``: ``needed`` from the mean
    curves; ``low`` where the scratch model's upper band meets the pretrained model's lower
    band, ``high`` where its lower band meets the upper band. None means "not within the
    largest subset".
    """
    p, s = curves[pretrained], curves[scratch]
    index = p["sizes"].index(size)
    target, spread = p["mean"][index], p["std"][index]
    upper = [m + d for m, d in zip(s["mean"], s["std"], strict=True)]
    lower = [m - d for m, d in zip(s["mean"], s["std"], strict=True)]
    return {
        "size": size,
        "seeds": min(p["seeds"] + s["seeds"]),
        "target": target,
        "target_std": spread,
        "needed": images_needed(s["sizes"], s["mean"], target),
        "low": images_needed(s["sizes"], upper, target - spread),
        "high": images_needed(s["sizes"], lower, target + spread),
        "largest": s["sizes"][-1],
    }


def answer_sentence(result: dict) -> str:
    """Return the study's answer in one sentence from :func:`equivalent_labels`."""
    def amount(value):
        return f"more than {result['largest']}" if value is None else f"{value:.0f}"

    if result.get("seeds", 2) < 2:
        spread, band = "", "one seed per point so far, so no uncertainty yet"
    elif result["low"] is None:
        spread = f" ± {result['target_std']:.3f}"
        band = "its upper ±1 std band stays below the pretrained model's lower band at every size"
    else:
        spread = f" ± {result['target_std']:.3f}"
        band = f"range from the ±1 std bands: {amount(result['low'])} to {amount(result['high'])}"
    head = (f"With {result['size']} labelled photos the pretrained model reaches a test mIoU of "
            f"{result['target']:.3f}{spread}")
    if result["needed"] is None:
        return f"{head}; the scratch model does not reach it with all {result['largest']} ({band})."
    return f"{head}, which the scratch model needs about {result['needed']:.0f} for ({band})."


def curves_table(runs: Sequence[dict]) -> str:
    """Return a Markdown table: test mIoU mean ± std (seeds) per model and subset size."""
    curves = label_curves(runs)
    sizes = sorted({s for c in curves.values() for s in c["sizes"]})
    rows = ["| Model | " + " | ".join(f"{s} images" for s in sizes) + " |",
            "|---" * (len(sizes) + 1) + "|"]
    for model, curve in curves.items():
        cells = []
        for size in sizes:
            if size not in curve["sizes"]:
                cells.append("–")
                continue
            i = curve["sizes"].index(size)
            cells.append(f"{curve['mean'][i]:.3f} ± {curve['std'][i]:.3f} ({curve['seeds'][i]})")
        rows.append(f"| {MODEL_LABELS.get(model, model)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def save_figure(runs: Sequence[dict], folder: str | Path | None = None, title: str = "") -> Path:
    """Draw the label-efficiency curve of some runs and save it as ``label_efficiency.png``."""
    from . import plots

    curves = label_curves(runs)
    labelled = {MODEL_LABELS.get(m, m): c for m, c in curves.items()}
    fig = plots.label_efficiency(labelled, marker=ORIGINAL_STUDY_TRAIN_IMAGES, title=title)
    return plots.save_fig(fig, "label_efficiency", folder)
