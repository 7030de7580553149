"""Results of the report: JSON files under ``results/`` and the tables built from them.

Every number in a generated table is read from these files, which record the profile, the
hardware and the git commit that produced them. Each table lives between
``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in the page :data:`PAGES` names: the README
keeps the headline results table, the pages under ``docs/`` the others.

Command line::

    python -m helpers.report            # rewrite every generated table from results/*.json
"""

from __future__ import annotations

import functools
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from .config import output_dir, project_path
from .files import write_json, write_text
from .provenance import clean_json as _clean
from .provenance import git_commit, hardware


def write_result(name: str, data: dict, profile: str) -> Path:
    """Write ``results/<name>.json`` with the data plus profile, hardware, commit and date.

    Smoke-profile results go to ``build/smoke/results`` instead.
    """
    path = output_dir("results", profile) / f"{name}.json"
    payload = {
        "name": name,
        "profile": profile,
        "hardware": hardware(),
        "git_commit": git_commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        **data,
    }
    return write_json(path, _clean(payload))


def model_result(checkpoint, test: dict, test_tta: dict | None = None) -> dict:
    """Return the results entry of a trained model: its test metrics, size, cost and history."""
    import json as _json

    from .checkpoint import load_model
    from .evaluate import public_metrics
    from .models import count_flops, count_parameters

    model, info = load_model(checkpoint)
    folder = Path(checkpoint).parent
    history = _json.loads((folder / "history.json").read_text()) if (folder / "history.json").is_file() else []
    data = {
        "model": model.name,
        "checkpoint": str(Path(checkpoint).relative_to(project_path()))
        if Path(checkpoint).resolve().is_relative_to(project_path()) else str(checkpoint),
        "config": info["config"].to_dict(),
        "parameters": count_parameters(model),
        "flops": count_flops(model, 360, 480),
        "best_epoch": info["epoch"],
        "training_precision": info.get("precision"),
        "epochs_run": len(history),
        "train_seconds": sum(row.get("seconds", 0.0) for row in history),
        "history": history,
        "test": public_metrics(test),
    }
    if test_tta is not None:
        data["test_flip_tta"] = public_metrics(test_tta)
    return data


def checkpoint_of(result: dict) -> Path:
    """Return the checkpoint path a results entry was computed from."""
    path = Path(result["checkpoint"])
    return path if path.is_absolute() else project_path(result["checkpoint"])


def read_results(folder: str | Path | None = None) -> dict[str, dict]:
    """Return every ``results/*.json`` by name (``build/smoke/results`` in the smoke profile)."""
    folder = Path(folder) if folder else output_dir("results")
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _fmt(value, digits=3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def results_table(results: dict[str, dict]) -> str:
    """Return the headline Markdown table of every model result (entries with ``test`` metrics)."""
    rows = [
        "| Model | Profile | Test mIoU | Pixel acc. | Dice | Per-image mIoU (seed's way) "
        "| Params (M) | GFLOPs 360x480 | Hardware |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        test = result.get("test")
        if not test:
            continue
        rows.append(
            f"| {result.get('model', name)} | {result['profile']} | {_fmt(test.get('miou'))} "
            f"| {_fmt(test.get('pixel_accuracy'))} | {_fmt(test.get('dice'))} "
            f"| {_fmt(test.get('per_image_miou'))} "
            f"| {_fmt((result.get('parameters') or 0) / 1e6, 2)} "
            f"| {_fmt((result.get('flops') or 0) / 1e9, 1)} | {result['hardware']['summary']} |"
        )
    return "\n".join(rows)


def flaws_table(results: dict[str, dict]) -> str:
    """Return the Markdown table of the original study's evaluation flaws, measured."""
    comparison = results.get("comparison")
    if not comparison:
        return "_Run `make report` to measure._"
    flaws = comparison["flaws"]
    models = list(flaws)
    rows = ["| Measure | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for measure in flaws[models[0]]:
        rows.append(f"| {measure} | " + " | ".join(_fmt(flaws[m][measure]) for m in models) + " |")
    selection = comparison.get("model_selection", {})
    for key in ("its test-subset mIoU", "its test-subset mIoU (optimistic)"):
        if all(key in selection.get(m, {}) for m in models):
            label = ("test-subset mIoU, epoch chosen on validation (correct)" if "optimistic" not in key
                     else "test-subset mIoU, epoch chosen on test (no held-out protocol)")
            rows.append(f"| {label} | " + " | ".join(_fmt(selection[m][key]) for m in models) + " |")
    noise = comparison.get("validation_flip_noise", {}).get("validation loss")
    if noise:
        values = [v for k, v in noise.items() if k.startswith("random")]
        fixed = next((v for k, v in noise.items() if not k.startswith("random")), None)
        rows.append(f"| validation loss of the final model: 3 draws of random flips (original) vs "
                    f"deterministic | {min(values):.3f} – {max(values):.3f} vs {_fmt(fixed)} |"
                    + " – |" * (len(models) - 1))
    hardware = comparison["hardware"]["summary"]
    return "\n".join(rows) + f"\n\n_Profile `{comparison['profile']}`, {hardware}, commit {comparison['git_commit']}._"


def benchmarks_table(results: dict[str, dict]) -> str:
    """Return the Markdown list of benchmark figures found in ``results/benchmark_*.json``."""
    lines = []
    for name, result in results.items():
        if not name.startswith("benchmark_"):
            continue
        summary = result.get("summary") or {k: v for k, v in result.items()
                                            if isinstance(v, int | float) and k != "git_commit"}
        figures = ", ".join(f"{k.replace('_', ' ')} **{v:.2f}**" if isinstance(v, float)
                            else f"{k.replace('_', ' ')} **{v}**" for k, v in summary.items())
        lines.append(f"- `{name.removeprefix('benchmark_')}` ({result['hardware']['summary']}, "
                     f"commit {result['git_commit']}): {figures}")
    return "\n".join(lines) or "_Run `make benchmarks` to measure._"


def crf_table(results: dict[str, dict]) -> str:
    """Return the Markdown ablation table of DeepLabV3+ and the dense CRF (notebook 07)."""
    ablation = results.get("deeplab_crf")
    if not ablation:
        return "_Run `make report` to measure._"
    rows = ["| Model | CRF | Test images | mIoU | Boundary F | Pixel acc. | ms/image (network + CRF) |",
            "|---|---|---|---|---|---|---|"]
    for label, entry in ablation["models"].items():
        for key, crf in (("without_crf_subset", "no"), ("with_crf", "yes")):
            part = entry.get(key)
            if not part:
                continue
            total = entry["forward_ms"] + (entry["crf_ms"] if crf == "yes" else 0.0)
            rows.append(f"| {label} | {crf} | {len(ablation['crf_test_indices'])} "
                        f"| {_fmt(part.get('miou'))} | {_fmt((part.get('boundary') or {}).get('bf'))} "
                        f"| {_fmt(part.get('pixel_accuracy'))} | {total:.0f} |")
    return ("\n".join(rows) + f"\n\n_Profile `{ablation['profile']}`, "
            f"{ablation['hardware']['summary']}, commit {ablation['git_commit']}; CRF parameters "
            "chosen on the validation split._")


def full_profile_table(results: dict[str, dict]) -> str:
    """Return the Markdown table of the full-profile GPU runs (benchmarks/gpu_full.sh)."""
    full = results.get("full_profile")
    if not full:
        return "_Run `benchmarks/gpu_full.sh` on a GPU, then `benchmarks/full_profile_results.py`._"
    rows = ["| Run | Seed | Epochs run | Best epoch | Val mIoU | Test mIoU | + flip | + multi-scale & flip "
            "| Test mIoU on PNG (+ flip) | Status | Hardware |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in full["runs"]:
        png = run.get("png_test_miou") or {}
        png_text = (f"{_fmt(png.get('plain'))} ({_fmt(png.get('flip'))})" if png else "–")
        status = ("finished" if run["complete"] else
                  f"stopped by the time guard, lr {run['final_lr']:.1e}")
        rows.append(f"| {run['run']} | {run['seed']} | {run['epochs_run']}/{run['epochs_planned']} "
                    f"| {run['best_epoch']} | {_fmt(run['val_miou'])} | {_fmt(run['test_miou_plain'])} "
                    f"| {_fmt(run['test_miou_flip'])} | {_fmt(run['test_miou_multiscale_flip'])} "
                    f"| {png_text} | {status} | {run['hardware']} |")
    for summary in full.get("summaries", []):
        cells = " | ".join(f"{summary[k]['mean']:.3f} ± {summary[k]['std']:.3f}"
                           for k in ("val_miou", "test_miou_plain", "test_miou_flip",
                                     "test_miou_multiscale_flip"))
        rows.append(f"| **{summary['model']}, mean ± std** | {', '.join(map(str, summary['seeds']))} "
                    f"| | | {cells} | – | finished | {summary['hardware']} |")
    return "\n".join(rows) + f"\n\n_Profile `full`, commit {full['git_commit']}. {full.get('note', '')}_"


def label_efficiency_table(results: dict[str, dict]) -> str:
    """Return the label-efficiency study's Markdown tables (one per profile) and its answer."""
    from .study import (
        STUDY_PROFILES,
        answer_sentence,
        curves_table,
        equivalent_labels,
        label_curves,
        planned_runs,
    )

    runs = (results.get("label_efficiency") or {}).get("runs") or []
    if not runs:
        return ("_Not measured yet: `make study` (quick profile, about an hour on 2 CPU cores) or "
                "`benchmarks/gpu_label_study.sh` (full profile, one GPU)._")
    parts = []
    for profile in sorted({r["profile"] for r in runs}):
        chosen = [r for r in runs if r["profile"] == profile]
        hardware = ", ".join(sorted({r["hardware"] for r in chosen}))
        commits = ", ".join(sorted({str(r["git_commit"]) for r in chosen}))
        planned = len(planned_runs(STUDY_PROFILES[profile])) if profile in STUDY_PROFILES else len(chosen)
        progress = ("" if len(chosen) >= planned else
                    f" {len(chosen)} of the {planned} planned runs so far; `make study` continues the rest.")
        parts.append(f"Profile `{profile}` (test mIoU, mean ± std over seeds, seeds in brackets):\n\n"
                     f"{curves_table(chosen)}\n\n_{hardware}; commit {commits}.{progress}_")
        curves = label_curves(chosen)
        if len(curves) == 2 and all(len(c["sizes"]) > 1 for c in curves.values()):
            smallest = min(curves["unet-effnet-lite0"]["sizes"])
            parts.append(answer_sentence(equivalent_labels(curves, smallest)))
    return "\n\n".join(parts)


def float32_recipe_table(results: dict[str, dict]) -> str:
    """Return the Markdown table of the quick profile's float32 runs (``results/float32_recipe.json``)."""
    recipe = results.get("float32_recipe")
    if not recipe:
        return "_Not measured yet._"
    rows = ["| Transfer U-Net, float32 | Epochs | Best epoch | Val mIoU | Test mIoU | Training |",
            "|---|---|---|---|---|---|"]
    for run in recipe["runs"]:
        rows.append(f"| {run['variant']} | {run['epochs']} | {run['best_epoch']} "
                    f"| {_fmt(run['val_miou'])} | {_fmt(run['test_miou'])} | `{run['train_command']}` |")
    commits = ", ".join(dict.fromkeys(run.get("commit", recipe["git_commit"]) for run in recipe["runs"]))
    return "\n".join(rows) + (f"\n\n_{recipe['hardware']['summary']}, commits {commits}; "
                              f"scored with `{recipe['runs'][0]['evaluate_command']}`. "
                              f"{recipe.get('note', '')}_")


def _report_score(models: dict, model: str, tta: bool = False) -> str:
    row = models.get(model)
    if not row or row.get("test_miou") is None:
        return "–"
    extra = f" ({_fmt(row['test_miou_flip_tta'])})" if tta and row.get("test_miou_flip_tta") else ""
    epochs = row["epochs_run"]
    return f"{epochs} epoch{'' if epochs == 1 else 's'}, {_fmt(row['test_miou'])}{extra}"


def report_runs_table(results: dict[str, dict]) -> str:
    """Return the Markdown table of ``make report`` timed from a fresh clone
    (``results/report_clone_*.json``, ``benchmarks/report_from_clone.py``): wall time with and
    without the set-up, the seconds of each notebook, and each network's epochs and test mIoU."""
    runs = [r for name, r in sorted(results.items()) if name.startswith("report_clone_")]
    if not runs:
        return "_Run `python benchmarks/report_from_clone.py --save` to measure._"
    notebooks = list(dict.fromkeys(n for r in runs for n in r["notebook_seconds"]))
    rows = ["| Command | CPU | Commit | Minutes in all | Set-up (s) | "
            + " | ".join(n.split("_")[0] for n in notebooks) + " | Transfer U-Net: epochs, test mIoU "
            "(flip TTA) | Mini U-Net | DeepLabV3+ |",
            "|---|---|---|---|---|" + "---|" * len(notebooks) + "---|---|---|"]
    for run in runs:
        score = functools.partial(_report_score, run["models"])
        seconds = " | ".join(f"{run['notebook_seconds'].get(n, 0):.0f}" for n in notebooks)
        rows.append(f"| `{run['command'].split(' (')[0]}` | {run['hardware']['summary']} "
                    f"| {run['git_commit']} | **{run['wall_seconds'] / 60:.1f}** "
                    f"| {run['setup_seconds']:.0f} | {seconds} | {score('unet-effnet-lite0', True)} "
                    f"| {score('mini-unet')} | {score('deeplabv3plus-effnet-lite0')} |")
    return "\n".join(rows) + ("\n\n_Quick profile, a fresh clone (`python benchmarks/report_from_clone.py"
                              " [--native-bf16 0] --save`); seconds per notebook include its training;"
                              " test mIoU on the 233 test images._")


def quick_recipe_table(results: dict[str, dict]) -> str:
    """Return the Markdown table of the runs that chose the quick recipe
    (``results/quick_recipe.json``): each run's precision, CPU, recipe, epochs, seed, scores and
    training time, and the command that trained it."""
    recipe = results.get("quick_recipe")
    if not recipe:
        return "_Not measured yet._"
    rows = ["| Transfer U-Net, quick profile | Precision | CPU | Epochs | Seed | Best epoch "
            "| Val mIoU | Test mIoU | Training (s) | Training command |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for run in recipe["runs"]:
        seconds = run.get("train_seconds")
        rows.append(f"| {run['variant']} | {run['precision']} | {run['cpu']} | {run['epochs']} "
                    f"| {run['seed']} | {run['best_epoch']} | {_fmt(run['val_miou'])} "
                    f"| {_fmt(run['test_miou'])} | {'–' if seconds is None else f'{seconds:.0f}'} "
                    f"| `{run['train_command']}` |")
    commits = ", ".join(dict.fromkeys(str(run["commit"]) for run in recipe["runs"]))
    return "\n".join(rows) + (f"\n\n_Commits {commits}; scored with "
                              f"`{recipe['runs'][0]['evaluate_command']}`. {recipe.get('note', '')}_")


BLOCKS = {"results-table": results_table, "float32-recipe-table": float32_recipe_table,
          "quick-recipe-table": quick_recipe_table, "report-runs-table": report_runs_table, "full-profile-table": full_profile_table,
          "flaws-table": flaws_table, "crf-table": crf_table, "benchmarks": benchmarks_table,
          "label-efficiency-table": label_efficiency_table}


# The page each generated block is written to, relative to the repository root.
PAGES = {"results-table": "README.md", "float32-recipe-table": "docs/training.md",
         "quick-recipe-table": "docs/training-recipe-measurements.md",
         "report-runs-table": "docs/speed.md",
         "full-profile-table": "docs/results.md", "flaws-table": "docs/original-study.md",
         "crf-table": "docs/deeplab-crf.md", "benchmarks": "docs/speed.md",
         "label-efficiency-table": "docs/label-efficiency.md"}


def render_blocks(text: str, names, results: dict[str, dict], page: str = "the page") -> str:
    """Return ``text`` with each named block (between ``<!-- NAME:start/end -->``) regenerated.

    A block whose markers are missing raises ``ValueError`` naming ``page``: its table would
    otherwise silently stop being updated.
    """
    for name in names:
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if start not in text or end not in text:
            raise ValueError(f"{page}: no {start} ... {end} markers; put them back where the "
                             f"table belongs, or move the block's page in helpers.report.PAGES")
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{BLOCKS[name](results)}\n{end}{tail}"
    return text


def update_pages(root: str | Path | None = None, results_folder: str | Path | None = None) -> list[Path]:
    """Rewrite every generated block in its page under ``root`` (the repository by default).

    Returns the pages that changed; a page already up to date is not written.
    """
    root = Path(root) if root else project_path()
    results = read_results(results_folder)
    changed = []
    for page in dict.fromkeys(PAGES.values()):
        path = root / page
        text = path.read_text(encoding="utf-8")
        names = [name for name, where in PAGES.items() if where == page]
        updated = render_blocks(text, names, results, page)
        if updated != text:
            write_text(path, updated)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    """Rewrite the generated tables of the README and docs/ from ``results/*.json``."""
    changed = update_pages()
    root = project_path()
    print("updated " + ", ".join(str(p.relative_to(root)) for p in changed) if changed
          else "every generated table is already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
