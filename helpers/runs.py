"""Run bookkeeping: where a run lives, what makes two runs the same, and the files beside its
checkpoints (``config.json``, ``history.csv``/``history.json``, ``done.json``).

A run's folder holds ``best.pt`` and ``last.pt`` (:mod:`helpers.checkpoint`), the configuration
it trains, its per-epoch history and, once it has finished, ``done.json``. Every file is written
through :mod:`helpers.files` (a crash leaves the old file or the new one, never half of one).
Runs never replace each other: a folder holding another configuration's checkpoints is refused
(:func:`refuse_other_run`), and the notebooks' runs go beside it (:func:`run_folder`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

from .checkpoint import read_checkpoint
from .config import Config, project_path
from .errors import CheckpointError, InputError
from .files import write_json, write_text

# Config fields that change how a run is watched or planned, not what it computes: the epochs
# a time budget planned are in the identity, the budget and its measurement are not.
NOT_PART_OF_A_RUN = ("tensorboard", "train_minutes", "time_budget")
# Config fields that change what a run computes only when several processes train it.
DISTRIBUTED_ONLY = ("sync_batchnorm",)
DONE_FILE = "done.json"


def run_dir(config: Config) -> Path:
    """Return the default output folder of a run.

    CamVid: ``runs/<profile>/<model>``; your own data: ``runs/<profile>/<dataset>/<model>``
    (``<dataset>-<split>`` with a named split), so a run on another dataset never lands in
    the CamVid run's folder.
    """
    from .datasets import dataset_name

    root = Path(config.runs_dir)
    root = root if root.is_absolute() else project_path(config.runs_dir)
    if config.dataset == "camvid":
        return root / config.profile / config.model
    name = dataset_name(config)
    if config.split_name and config.split_name != name:
        name = f"{name}-{config.split_name}"
    return root / config.profile / name / config.model


def run_identity(config: Config | dict, world_size: int | None = None) -> dict:
    """Return the fields that make two runs the same run (defaults filled in for fields a
    configuration saved by an older version lacks).

    A run trained by several processes (torchrun) also has its ``world_size``: the global
    batch is ``batch_size`` x ``world_size``, so it is part of what was computed. A saved
    configuration (a dict) carries its own ``world_size`` (1 when absent); a :class:`Config`
    takes ``world_size`` (default 1).
    """
    data = config.to_dict() if isinstance(config, Config) else config
    if world_size is None:
        world_size = 1 if isinstance(config, Config) else int(data.get("world_size", 1))
    identity = Config.from_dict(data).to_dict()
    for name in NOT_PART_OF_A_RUN:
        identity.pop(name, None)
    if world_size > 1:
        identity["world_size"] = world_size
    else:
        for name in DISTRIBUTED_ONLY:
            identity.pop(name, None)
    return identity


def config_hash(config: Config) -> str:
    """Return a short hash of a configuration's run identity (8 hex digits)."""
    text = json.dumps(run_identity(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def read_run_checkpoint(path: Path) -> dict:
    """Return a checkpoint of a run folder, or raise :class:`CheckpointError` naming the file
    and the fix when it cannot be read."""
    try:
        return read_checkpoint(path)
    except CheckpointError:
        raise
    except (ValueError, OSError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{message.rstrip('.')}. Move {path} out of {path.parent} (or "
                              "train into another folder with --out) and run again.") from None


def saved_run_config(out_dir: str | Path) -> dict | None:
    """Return the configuration (with ``world_size``) of the run whose checkpoints a folder
    holds, or None when it holds none."""
    out_dir = Path(out_dir)
    for name in ("best.pt", "last.pt"):
        if (out_dir / name).is_file():
            payload = read_run_checkpoint(out_dir / name)
            return {**payload["config"], "world_size": payload.get("world_size", 1)}
    return None


def other_run_in(out_dir: str | Path, config: Config, world_size: int = 1) -> list[str]:
    """Return how the run whose checkpoints a folder holds differs from ``config`` trained by
    ``world_size`` processes, one ``field: saved -> new`` line each (empty when the folder
    holds no checkpoint or the same run)."""
    saved = saved_run_config(out_dir)
    if saved is None:
        return []
    theirs, ours = run_identity(saved), run_identity(config, world_size)
    defaults = {"world_size": 1}  # one process records none in the identity
    # A field that only matters with several processes is no difference when one side has one.
    keys = [k for k in {**ours, **theirs} if k not in DISTRIBUTED_ONLY or (k in ours and k in theirs)]
    return [f"{k}: {theirs.get(k, defaults.get(k))!r} -> {ours.get(k, defaults.get(k))!r}"
            for k in keys if theirs.get(k) != ours.get(k)]


def refuse_other_run(out_dir: Path, differences: list[str]) -> None:
    """Raise :class:`InputError`: ``out_dir`` holds another configuration's run, which is kept."""
    shown = "; ".join(differences[:6]) + ("; ..." if len(differences) > 6 else "")
    raise InputError(
        f"{out_dir} holds the checkpoints of a run with another configuration ({shown}); "
        "they are kept. Train into another folder with --out DIR, or continue that run with "
        "--resume and its own settings."
    )


def run_folder(config: Config) -> Path:
    """Return the folder the notebooks keep a configuration's run in: the default folder
    (:func:`run_dir`), or ``<folder>@<config hash>`` beside it when the default holds the
    checkpoints of another configuration."""
    folder = run_dir(config)
    if other_run_in(folder, config):
        return folder.with_name(f"{folder.name}@{config_hash(config)}")
    return folder


def write_run_config(out_dir: Path, config: Config, world_size: int = 1) -> Path:
    """Write the configuration a run trains (with its number of processes) as ``config.json``."""
    return write_json(Path(out_dir) / "config.json", {**config.to_dict(), "world_size": world_size})


def write_history(history: list[dict], out_dir: Path) -> None:
    """Write the per-epoch history as ``history.csv`` and ``history.json``."""
    if not history:
        return
    table = io.StringIO(newline="")
    # Rows before validation starts lack its columns: the last row has them all.
    writer = csv.DictWriter(table, fieldnames=list(history[-1].keys()))
    writer.writeheader()
    writer.writerows(history)
    write_text(Path(out_dir) / "history.csv", table.getvalue())
    write_json(Path(out_dir) / "history.json", history)


def read_history(checkpoint_or_dir: str | Path) -> list[dict]:
    """Return the per-epoch history of a run (given its folder or one of its checkpoints)."""
    path = Path(checkpoint_or_dir)
    folder = path if path.is_dir() else path.parent
    return json.loads((folder / "history.json").read_text())


def validated_epochs(history: list[dict]) -> list[dict]:
    """Return the rows of a history whose epoch was scored on validation (every epoch, or
    those from the annealed one on with ``Config.validate_annealed_only``)."""
    return [row for row in history if "val_loss" in row]


def mark_done(out_dir: Path, best_epoch: int, epochs_run: int, stopped_early: bool) -> Path:
    """Write ``done.json``: the run finished (its best epoch is 1-based)."""
    return write_json(Path(out_dir) / DONE_FILE, {"best_epoch": best_epoch, "epochs_run": epochs_run,
                                                  "stopped_early": stopped_early}, indent=None)


def clear_done(out_dir: Path) -> None:
    """Remove ``done.json``: the run is training (again)."""
    (Path(out_dir) / DONE_FILE).unlink(missing_ok=True)


def finished_run(out_dir: Path, config: Config) -> Path | None:
    """Return the best checkpoint of ``out_dir`` when it holds this configuration's finished
    run, else None."""
    out_dir = Path(out_dir)
    if not ((out_dir / DONE_FILE).is_file() and (out_dir / "best.pt").is_file()):
        return None
    saved = saved_run_config(out_dir)
    same = saved is not None and run_identity(saved) == run_identity(config)
    return out_dir / "best.pt" if same else None
