"""The self-describing checkpoint format: the only place that pickles models.

A checkpoint holds the weights and everything needed to use them: the model's name and
width, the class names and colours, the ignore index, the input normalization, the full
training configuration, its metrics and the library versions. Prediction, evaluation, export
and the web app need only its path.

Checkpoints hold tensors and plain data only (dicts, lists, tuples, strings, numbers), and are
read with ``torch.load(..., weights_only=True)``: a file whose unpickling would import or call
anything else (a checkpoint from an untrusted source can run arbitrary code that way) is
refused with :class:`UnsafeCheckpointError` before any of it runs. Every other file that is not
a usable checkpoint (text, cut short, without a field, with weights or classes that do not fit
its model) raises :class:`~helpers.errors.CheckpointError` with one line naming the file and
the fix. Checkpoints are written through :func:`helpers.files.atomic_write`.
"""

from __future__ import annotations

import pickle
import platform
import random
import re
from pathlib import Path

import numpy as np
import torch

from .config import Config
from .errors import CheckpointError, ClassFileError, one_line
from .files import atomic_write
from .labels import ClassInfo
from .metrics import IGNORE_INDEX
from .models import SMP_DECODER_CHANNELS, SegmentationModel, build_model

FORMAT = "helpers-segmentation-checkpoint/1"

# Beyond tensors and plain data, what checkpoints written before they held only plain data
# contain: NumPy arrays (the RNG state of ``last.pt``) and torch's version string (a ``str``
# subclass). Rebuilding either allocates memory and copies bytes; it calls nothing else.
_ALLOWED_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype,
                    type(np.dtype(np.uint32)), torch.torch_version.TorchVersion]


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose loading would import or run code beyond tensors and plain data."""


# What every checkpoint written by save_checkpoint holds (the model's entry: these keys).
REQUIRED_FIELDS = ("format", "model", "state_dict", "classes", "config")
REQUIRED_MODEL_FIELDS = ("name", "num_classes", "mean", "std")


def library_versions() -> dict:
    """Return the versions of the libraries a checkpoint depends on."""
    import numpy
    import segmentation_models_pytorch
    import timm

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "segmentation_models_pytorch": segmentation_models_pytorch.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
    }


def save_checkpoint(
    path: str | Path,
    model: SegmentationModel,
    config: Config,
    classes: ClassInfo,
    metrics: dict | None = None,
    epoch: int | None = None,
    training_state: dict | None = None,
    world_size: int = 1,
    precision: dict | None = None,
) -> Path:
    """Write a checkpoint atomically (a crash never leaves half a file) and return its path.

    ``training_state`` (optimizer, scheduler, scaler, RNG, early stopping, history) is only
    needed to resume training. ``world_size`` is the number of processes that trained
    together (torchrun): the global batch was ``config.batch_size * world_size``.
    ``precision`` records the training precision and why it was chosen
    (:meth:`helpers.precision.Precision.to_dict`) and the CPU or GPU it was chosen for.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "model": {
            "name": model.name,
            "num_classes": model.num_classes,
            "width": config.width,
            "output_stride": config.output_stride,
            "decoder_channels": getattr(model, "decoder_channels", None),
            "mean": model.mean.flatten().tolist(),
            "std": model.std.flatten().tolist(),
        },
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": classes.to_dict(),
        "ignore_index": IGNORE_INDEX,
        "input": {"scale": "0-1 RGB", "stride": 32, "crop_size": list(config.crop_size)},
        "config": config.to_dict(),
        "metrics": metrics or {},
        "epoch": epoch,
        "world_size": world_size,
        "versions": library_versions(),
        "training_state": training_state,
        "precision": precision,
    }
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)
    return path


def read_checkpoint(path: str | Path) -> dict:
    """Return the raw checkpoint dictionary, checking its format and fields.

    Loads with ``weights_only=True``; raises :class:`UnsafeCheckpointError` for a file that
    needs anything else, naming what it asked for, :class:`~helpers.errors.CheckpointError`
    (one line: the file, what is wrong, the fix) for a file that is not a complete checkpoint
    of this project, and ``FileNotFoundError`` for a missing one.
    """
    path = Path(path)
    if path.is_dir():
        inside = next((path / n for n in ("best.pt", "last.pt") if (path / n).is_file()), None)
        raise CheckpointError(f"{path}: a folder, not a checkpoint"
                              + (f"; did you mean {inside}?" if inside else
                                 "; give the path of a best.pt written by helpers.train"))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint (train one with python -m "
                                "helpers.train, or give the path of a best.pt)")
    try:
        with torch.serialization.safe_globals(_ALLOWED_GLOBALS):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        names = _unsafe_names(path) or re.findall(r"Unsupported global: GLOBAL (\S+)", str(error))
        if not names:
            raise CheckpointError(f"{path}: {_why_unreadable(path, error)}") from None
        raise UnsafeCheckpointError(
            f"{path}: refused to load: unpickling it would import or call "
            f"{', '.join(names)}, which can run "
            "arbitrary code. Checkpoints written by helpers.train hold only tensors and plain "
            "data; this one was written by something else or altered, so it is not loaded."
        ) from None
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - torch reports damage as many types (KeyError...)
        raise CheckpointError(f"{path}: {_why_unreadable(path, error)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint written by helpers.checkpoint (a "
                              "PyTorch file of another program?); give a best.pt from "
                              "python -m helpers.train")
    missing = [k for k in REQUIRED_FIELDS if not isinstance(payload.get(k), str | dict)]
    spec = payload.get("model") if isinstance(payload.get("model"), dict) else {}
    missing += [f"model.{k}" for k in REQUIRED_MODEL_FIELDS if k not in spec and "model" not in missing]
    if missing:
        raise CheckpointError(f"{path}: an incomplete checkpoint, without {', '.join(missing)} "
                              "(edited, or written by an unfinished program?); use another "
                              "checkpoint or train again")
    return payload


def _why_unreadable(path: Path, error: Exception) -> str:
    """Return, for a file torch cannot load, what it is and what to do about it."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not head:
        return "the file is empty (0 bytes); copy the checkpoint again or train again"
    if head.startswith(b"PK\x03\x04"):
        return ("the checkpoint is damaged or cut short (a copy or download that did not "
                "finish?); copy it again, or use another checkpoint")
    try:
        head.decode("utf-8")
        kind = "a text file"
    except UnicodeDecodeError:
        kind = "not a PyTorch file"
    return (f"{kind}, not a checkpoint; give the path of a best.pt written by "
            "python -m helpers.train")


CLASS_COUNT_FIX = ("use a checkpoint trained on this class list (python -m helpers.train "
                   "--classes ...), or the class list it was trained on")


def check_class_count(path: str | Path, model_classes: int, classes: ClassInfo,
                      source: str = "its class list", fix: str = CLASS_COUNT_FIX) -> None:
    """Raise :class:`~helpers.errors.CheckpointError` unless the model in ``path`` (which
    predicts ``model_classes`` classes) fits the class list ``classes`` from ``source``.

    The one check of a model's class count, for prediction, evaluation, export and the web
    app: the message names the file, both counts and the fix.
    """
    if model_classes != classes.num_classes:
        names = ", ".join(classes.names[:6]) + (", ..." if classes.num_classes > 6 else "")
        raise CheckpointError(f"{path}: the model predicts {model_classes} classes but {source} "
                              f"has {classes.num_classes} ({names}); {fix}")


def _unsafe_names(path: Path) -> list[str]:
    """Return the globals a checkpoint's pickle names beyond tensors, plain data and arrays."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - only used to word the error message
        return []
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in _ALLOWED_GLOBALS}
    return [n for n in names if n not in allowed]


def rng_state() -> dict:
    """Return the state of torch's, NumPy's and Python's random generators as tensors and
    plain data (what :func:`read_checkpoint` accepts)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss),
                  float(cached_gaussian)],
        "python": [version, list(internal), gauss_next],
    }


def set_rng_state(state: dict) -> None:
    """Restore the generators from :func:`rng_state` (also reads the NumPy arrays of older
    checkpoints)."""
    torch.set_rng_state(state["torch"])
    if state.get("numpy") is not None:
        name, keys, position, has_gauss, cached_gaussian = state["numpy"]
        keys = np.asarray(keys.numpy() if torch.is_tensor(keys) else keys).astype(np.uint32)
        np.random.set_state((name, keys, int(position), int(has_gauss), float(cached_gaussian)))
    if state.get("python") is not None:
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Return ``(model, info)``: the model in eval mode on ``device`` and the checkpoint's metadata.

    ``info`` has ``classes`` (a :class:`ClassInfo`), ``config`` (a :class:`Config`),
    ``metrics``, ``epoch``, ``world_size`` (processes that trained it), ``versions``, ``path``
    and ``precision`` (the training precision and its reason; None for checkpoints written
    before it was recorded). Raises :class:`~helpers.errors.CheckpointError` for a file that is
    not a usable checkpoint (:func:`read_checkpoint`), an invalid class list, a class list
    whose length differs from the model's (:func:`check_class_count`), or weights that do not
    fit the model the checkpoint names.
    """
    payload = read_checkpoint(path)
    spec = payload["model"]
    try:
        classes = ClassInfo.from_dict(payload["classes"])
    except ClassFileError as error:
        raise CheckpointError(f"{path}: its class list is invalid ({error}); use another "
                              "checkpoint or train again") from None
    check_class_count(path, spec["num_classes"], classes,
                      fix="the checkpoint is damaged or was edited: use another one")
    try:
        config = Config.from_dict(payload["config"])
        model = build_model(
            spec["name"],
            spec["num_classes"],
            width=spec.get("width", config.width),
            pretrained=False,
            output_stride=spec.get("output_stride", 16),
            mean=tuple(spec["mean"]),
            std=tuple(spec["std"]),
            # Checkpoints that do not record their decoder widths carry smp's default decoder.
            decoder_channels=spec.get("decoder_channels", SMP_DECODER_CHANNELS),
        )
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path}: its model description does not build a network "
                              f"({one_line(error, 160)}); use another checkpoint") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: its weights do not fit a {spec['name']} with "
                              f"{spec['num_classes']} classes ({one_line(error, 160)}); the "
                              "checkpoint is damaged or was edited: use another one") from None
    model.to(device).eval()
    info = {
        "classes": classes,
        "config": config,
        "metrics": payload.get("metrics", {}),
        "epoch": payload.get("epoch"),
        "world_size": payload.get("world_size", 1),
        "versions": payload.get("versions", {}),
        "path": str(path),
        "precision": payload.get("precision"),
        "extra": {k: v for k, v in payload.items() if k.startswith("x_")},
    }
    return model, info
