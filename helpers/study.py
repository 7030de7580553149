"""The label-efficiency study: how many labelled photos does ImageNet pretraining save?

The transfer U-Net (``unet-effnet-lite0``) and the mini U-Net trained from scratch
(``mini-unet``) are trained on nested, seeded subsets of CamVid's 367 training images (23, 46,
92 and 367 by default, the 92 close to the original study's 104), several seeds each, and
scored on the full test split (dataset-level mIoU from one confusion matrix, void ignored).

The design, in three rules:

* **Equal optimizer steps.** Every run takes the same number of steps whatever its subset size,
  so a small subset is seen many more times instead of being simply under-trained. Training
  runs in passes of a fixed number of samples (``steps_per_evaluation * batch_size``, drawn from
  the subset by repetition, :class:`RepeatedSubset`), so ``helpers.train.fit`` sizes its
  one-cycle schedule in steps and validates after the same number of steps at every size.
* **Nested subsets.** The subset of size n is the first n images of one seeded permutation of
  the training split, so a larger subset holds every smaller one of the same seed: the curve
  shows the effect of adding labels, not of drawing different photos.
* **Same selection and scoring.** The checkpoint with the lowest loss on the full validation
  split is kept (``fit``'s rule) and scored once on the full test split. Early stopping is off
  (patience = the number of evaluations): the validation loss of a tiny subset rises early while
  its mIoU still improves, so a patience rule would end small-subset runs before their schedule
  has annealed, a handicap the large subsets would not share.

Resumable: one folder per run (``runs/study/PROFILE/MODEL/size-NNN/seed-S``); a run with a
``score.json`` for the same configuration is never retrained, an interrupted one resumes from
its ``last.pt``. Each finished run is appended to ``results/label_efficiency.json`` atomically.

Command line::

    python -m helpers.study labels [--profile smoke|quick|full] [--device cpu] [--jobs N]
                                   [--sizes 23,46,92,367] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .config import STUDY, Config, load_config, output_dir, project_path
from .datasets import SegmentationDataset, build_datasets
from .files import write_json
from .provenance import clean_json, git_commit, hardware
from .runs import read_history
from .study_results import (  # noqa: F401 - the study's results and analysis, read as study.*
    MODEL_LABELS,
    MODELS,
    ORIGINAL_STUDY_TRAIN_IMAGES,
    RESULTS_NAME,
    _run_key,
    answer_sentence,
    curves_table,
    default_results_path,
    equivalent_labels,
    images_needed,
    label_curves,
    per_class_at,
    read_study_results,
    record_run,
    save_figure,
)


@dataclass(frozen=True)
class StudyPlan:
    """The runs of a study profile and the schedule every one of them shares.

    ``steps`` optimizer steps per run; the full validation split is scored every
    ``steps_per_evaluation`` steps. ``jobs`` runs train at a time (separate processes). What
    each run trains with otherwise (crop, batch size, workers) is its row of
    :data:`helpers.config.RECIPES` under ``"<profile> label study"``.
    """

    sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    steps: int
    steps_per_evaluation: int
    jobs: int = 1

    @property
    def evaluations(self) -> int:
        return self.steps // self.steps_per_evaluation

    def replace(self, **changes) -> StudyPlan:
        """Return a copy with some fields changed."""
        import dataclasses

        return dataclasses.replace(self, **changes)


# Passes of 368 samples (92 steps of 4, 46 of 8): 23, 46 and 92 images divide it exactly; in
# the 367-image subset one image is drawn twice per pass.
STUDY_PROFILES: dict[str, StudyPlan] = {
    # CI: two tiny subsets, one seed, eight steps on small crops, 4 validation and test images.
    "smoke": StudyPlan(sizes=(4, 8), seeds=(0,), steps=8, steps_per_evaluation=4),
    # 2 CPU cores, about an hour: 24 runs of 276 steps (3 passes of 368 crops of 192x256, a
    # smaller crop than the report's so that 24 runs fit); benchmarks/label_study_timing.py
    # measures the per-step and per-image times and prints the arithmetic.
    "quick": StudyPlan(sizes=(23, 46, 92, 367), seeds=(0, 1, 2), steps=276,
                       steps_per_evaluation=92),
    # One GPU: 24 runs of 736 steps of 8 crops of 352x480 (16 passes of 368 crops), 4 at a time.
    "full": StudyPlan(sizes=(23, 46, 92, 367), seeds=(0, 1, 2), steps=736,
                      steps_per_evaluation=92, jobs=4),
}


# --------------------------------------------------------------------------- subsets


def subset_indices(total: int, size: int, seed: int) -> list[int]:
    """Return the indices of a seeded training subset: the first ``size`` of a permutation.

    Subsets of one seed are nested (a larger one holds every smaller one); the permutation
    depends on the seed alone, not on any global random state.
    """
    if not 0 < size <= total:
        raise ValueError(f"a subset of {size} images cannot be drawn from {total}; "
                         f"choose sizes between 1 and {total}")
    order = np.random.default_rng(seed).permutation(total)
    return [int(i) for i in order[:size]]


def subset_digest(pairs: Sequence[tuple[Path, Path]]) -> str:
    """Return a short fingerprint of a set of training images (their sorted file names)."""
    names = "\n".join(sorted(Path(image).name for image, _ in pairs))
    return hashlib.sha1(names.encode()).hexdigest()[:12]


class RepeatedSubset(SegmentationDataset):
    """Some images of a dataset, drawn in passes of a fixed number of samples.

    Item ``i`` is image ``indices[i % len(indices)]``, so one pass (``length`` items, at least
    the subset's size) shows each image ``length // n`` or ``length // n + 1`` times: with a
    length fixed across subset sizes, ``fit``'s epochs become equal numbers of optimizer steps.
    Decoded images come from the source dataset's cache, shared by every subset of it.
    """

    def __init__(self, source: SegmentationDataset, indices: Sequence[int], length: int):
        if length < len(indices):
            raise ValueError(f"a pass of {length} samples cannot show all {len(indices)} images "
                             "of the subset; raise the steps per evaluation or the batch size")
        super().__init__([source.pairs[i] for i in indices], source.classes, source.transform)
        self.source, self.indices, self.length = source, list(indices), int(length)

    def __len__(self) -> int:
        return self.length

    def load(self, index: int):
        return self.source.load(self.indices[index % len(self.indices)])


# --------------------------------------------------------------------------- configuration


def study_config(profile: str, model: str, size: int, seed: int, plan: StudyPlan | None = None) -> Config:
    """Return the training configuration of one run of the study.

    The model's row of the profile's label study (:data:`helpers.config.RECIPES`: the scratch
    model keeps its own weight decay; no per-epoch test tracking, no time budget, so every run
    takes the same number of steps on any CPU), with the study's schedule: ``plan.evaluations``
    epochs of ``plan.steps_per_evaluation`` steps and no early stopping. ``max_train_images``
    records the subset size and ``label_study`` the subset's seed and size and the schedule.
    """
    plan = plan or STUDY_PROFILES[profile]
    return load_config(f"{profile} {STUDY}", model).replace(
        seed=seed,
        epochs=plan.evaluations,
        patience=plan.evaluations,
        max_train_images=size,
        label_study={"subset_seed": seed, "subset_size": size, "steps": plan.steps,
                     "steps_per_evaluation": plan.steps_per_evaluation},
    )


def study_datasets(profile: str) -> dict[str, SegmentationDataset]:
    """Return the study's source datasets: the whole training split, and validation and test
    as the profile limits them (complete in quick and full; a handful of images in smoke)."""
    config = load_config(f"{profile} {STUDY}", MODELS[0]).replace(max_train_images=None)
    return build_datasets(config)


def run_datasets(source: dict, config: Config, plan: StudyPlan) -> dict:
    """Return the datasets of one run: the seeded subset, repeated to a fixed pass length."""
    size = config.label_study["subset_size"]
    seed = config.label_study["subset_seed"]
    indices = subset_indices(len(source["train"]), size, seed)
    length = plan.steps_per_evaluation * config.batch_size
    return {"train": RepeatedSubset(source["train"], indices, length),
            "val": source["val"], "test": source["test"]}


def run_folder(runs_root: Path, model: str, size: int, seed: int) -> Path:
    """Return the folder of one run: ``RUNS_ROOT/MODEL/size-NNN/seed-S``."""
    return Path(runs_root) / model / f"size-{size:03d}" / f"seed-{seed}"


def default_runs_root(profile: str) -> Path:
    """Return ``runs/study/PROFILE`` under the repository."""
    return project_path("runs", "study", profile)


# --------------------------------------------------------------------------- one run


def train_and_score(config: Config, folder: Path, datasets: dict, plan: StudyPlan,
                    device=None, progress: bool = False) -> dict:
    """Train one run (resuming it if interrupted), score its best checkpoint on the test split,
    write ``score.json`` (the run's done marker) and return the results entry."""
    import torch

    from .checkpoint import load_model
    from .evaluate import evaluate
    from .inference import amp_dtype, pick_device, prepare_model
    from .train import ensure_trained

    device = pick_device(device)
    started = time.perf_counter()
    best = ensure_trained(config, folder, progress=progress, datasets=datasets, device=device)
    train_seconds = time.perf_counter() - started
    model, info = load_model(best)
    model = prepare_model(model, device, config.channels_last)
    test = evaluate(model, datasets["test"], config.batch_size, amp_dtype(device, config.amp, config.model),
                    progress=progress, desc="test")
    history = read_history(folder)
    names = list(datasets["test"].classes.names)
    machine = hardware()
    entry = {
        "model": config.model,
        "size": config.label_study["subset_size"],
        "seed": config.label_study["subset_seed"],
        "profile": config.profile,
        "test_miou": test["miou"],
        "per_class_iou": dict(zip(names, (float(v) for v in test["iou"]), strict=True)),
        "test_pixel_accuracy": test["pixel_accuracy"],
        "test_images": test["images"],
        "val_miou": info["metrics"]["val"].get("miou"),
        "steps": plan.steps,
        "optimizer_steps": _optimizer_steps(folder / "last.pt"),
        "best_step": info["epoch"] * plan.steps_per_evaluation,
        "crop_size": list(config.crop_size),
        "batch_size": config.batch_size,
        "subset_digest": subset_digest(datasets["train"].pairs),
        "train_seconds": sum(row.get("seconds", 0.0) for row in history),
        "wall_seconds": train_seconds,
        "hardware": machine["summary"],
        "cpu": machine["cpu"],
        "gpu": machine["gpu"],
        "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    entry = clean_json(entry)
    write_json(folder / "score.json", {"config": config.to_dict(), "entry": entry})
    return entry


def _optimizer_steps(last_checkpoint: Path) -> int:
    """Return how many optimizer steps a run took, read from AdamW's state in ``last.pt``."""
    from .checkpoint import read_checkpoint

    state = read_checkpoint(last_checkpoint)["training_state"]["optimizer"]["state"]
    return int(max(float(s["step"]) for s in state.values()))


def finished_entry(config: Config, folder: Path) -> dict | None:
    """Return a run's results entry when it finished with this configuration, else None.

    Compared as run identities: a field added to :class:`Config` after the run, at its
    default, leaves the run finished.
    """
    import json

    from .runs import run_identity

    marker = folder / "score.json"
    if not marker.is_file():
        return None
    saved = json.loads(marker.read_text())
    same = isinstance(saved.get("config"), dict) and run_identity(saved["config"]) == run_identity(config)
    return saved["entry"] if same else None


# --------------------------------------------------------------------------- the study


def check_plan(profile: str, plan: StudyPlan) -> None:
    """Raise ValueError, naming the fix, when a plan cannot give every run the same schedule."""
    if plan.steps <= 0 or plan.steps % plan.steps_per_evaluation:
        raise ValueError(f"steps ({plan.steps}) must be a positive multiple of the steps between "
                         f"validations ({plan.steps_per_evaluation})")
    batch_size = load_config(f"{profile} {STUDY}", MODELS[0]).batch_size
    samples = plan.steps_per_evaluation * batch_size
    if max(plan.sizes) > samples:
        raise ValueError(f"subsets larger than {samples} images ({plan.steps_per_evaluation} steps "
                         f"of {batch_size}) would not be seen whole between validations; "
                         f"choose sizes up to {samples}")


def planned_runs(plan: StudyPlan) -> list[tuple[int, int, str]]:
    """Return the study's runs as (seed, size, model), seeds outermost: a study stopped early
    already holds whole curves for its first seeds."""
    return [(seed, size, model) for seed in plan.seeds for size in plan.sizes for model in MODELS]


_SOURCE_CACHE: dict = {}


def _run_one(profile: str, plan: StudyPlan, seed: int, size: int, model: str, runs_root: str,
             results_path: str, device, progress: bool, threads: int | None = None) -> dict:
    """Train, score and record one run (in this process or a worker process)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    if profile not in _SOURCE_CACHE:
        _SOURCE_CACHE[profile] = study_datasets(profile)
    source = _SOURCE_CACHE[profile]
    config = study_config(profile, model, size, seed, plan)
    folder = run_folder(Path(runs_root), model, size, seed)
    entry = train_and_score(config, folder, run_datasets(source, config, plan), plan, device, progress)
    record_run(Path(results_path), entry, Path(runs_root) / "results.lock")
    return entry


def run_study(profile: str = "quick", plan: StudyPlan | None = None, device=None,
              runs_root: str | Path | None = None, results_path: str | Path | None = None,
              progress: bool = True, on_run_done: Callable[[dict], None] | None = None) -> dict:
    """Run every unfinished run of a study; return ``{"trained": [...], "skipped": [...]}``.

    Finished runs (a ``score.json`` for the same configuration) are skipped and re-recorded in
    the results file if it lacks them; interrupted ones resume. With ``plan.jobs > 1`` runs
    train in that many worker processes (for a GPU with room for several). ``on_run_done`` gets
    each newly finished run's entry.
    """
    from tqdm.auto import tqdm

    plan = plan or STUDY_PROFILES[profile]
    check_plan(profile, plan)
    runs_root = Path(runs_root) if runs_root else default_runs_root(profile)
    results_path = Path(results_path) if results_path else default_results_path(profile)
    recorded = {_run_key(r) for r in read_study_results(results_path)["runs"]}
    skipped, pending = [], []
    for seed, size, model in planned_runs(plan):
        config = study_config(profile, model, size, seed, plan)
        entry = finished_entry(config, run_folder(runs_root, model, size, seed))
        if entry is None:
            pending.append((seed, size, model))
            continue
        skipped.append(entry)
        if _run_key(entry) not in recorded:
            record_run(results_path, entry, runs_root / "results.lock")
    trained = []
    bar = tqdm(total=len(pending), desc=f"label study ({profile})", disable=not progress or not pending)
    args = (str(runs_root), str(results_path), None if device is None else str(device))
    if plan.jobs <= 1:
        for seed, size, model in pending:
            bar.set_postfix(model=model, size=size, seed=seed)
            entry = _run_one(profile, plan, seed, size, model, *args, progress=False)
            trained.append(entry)
            bar.update()
            if on_run_done is not None:
                on_run_done(entry)
    elif pending:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, (os.cpu_count() or 1) // plan.jobs)
        context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
        with ProcessPoolExecutor(max_workers=plan.jobs, mp_context=context) as pool:
            futures = [pool.submit(_run_one, profile, plan, seed, size, model, *args, False, threads)
                       for seed, size, model in pending]
            for future in as_completed(futures):
                entry = future.result()
                trained.append(entry)
                bar.update()
                if on_run_done is not None:
                    on_run_done(entry)
    bar.close()
    return {"trained": trained, "skipped": skipped}


# --------------------------------------------------------------------------- command line


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    labels = commands.add_parser("labels", help="the label-efficiency study (resumable)")
    labels.add_argument("--profile", default=None, choices=sorted(STUDY_PROFILES),
                        help="smoke, quick or full (default: $SEG_PROFILE or quick)")
    labels.add_argument("--device", default=None, help="cpu, cuda... (default: CUDA if available)")
    labels.add_argument("--sizes", type=_int_list, default=None, help="subset sizes, e.g. 23,46,92,367")
    labels.add_argument("--seeds", type=_int_list, default=None, help="seeds, e.g. 0,1,2")
    labels.add_argument("--steps", type=int, default=None,
                        help="optimizer steps per run (a multiple of the steps per evaluation)")
    labels.add_argument("--jobs", type=int, default=None, help="runs training at a time")
    labels.add_argument("--runs-dir", default=None, help="run folders (default runs/study/PROFILE)")
    labels.add_argument("--results", default=None,
                        help="results file (default results/label_efficiency.json)")
    labels.add_argument("--figures", default=None, help="folder for label_efficiency.png "
                        "(default figures/, build/smoke/figures in the smoke profile)")
    args = parser.parse_args(argv)

    from .config import get_profile

    profile = args.profile or get_profile()
    plan = STUDY_PROFILES[profile]
    changes = {k: v for k, v in (("sizes", args.sizes), ("seeds", args.seeds), ("steps", args.steps),
                                 ("jobs", args.jobs)) if v}
    plan = plan.replace(**changes)
    try:
        outcome = run_study(profile, plan, args.device, args.runs_dir, args.results)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results_path = Path(args.results) if args.results else default_results_path(profile)
    runs = read_study_results(results_path, profile)["runs"]
    print(f"{len(outcome['trained'])} runs trained, {len(outcome['skipped'])} already finished; "
          f"results: {results_path}")
    print(curves_table(runs))
    figure = save_figure(runs, args.figures or output_dir("figures", profile),
                         title=f"{profile} profile, {runs[0]['hardware']}" if runs else "")
    print(f"figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
