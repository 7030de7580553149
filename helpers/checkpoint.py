"""The self-describing checkpoint format: the only place that pickles models.

A checkpoint holds the weights and everything needed to use them: the model's name and
width, the class names and colours, the ignore index, the input normalization, the full
training configuration, its metrics and the library versions. Prediction, evaluation, export
and the web app need only its path.

Checkpoints hold tensors and plain data only (dicts, lists, tuples, strings, numbers), and are
read with ``torch.load(..., weights_only=True)``: a file whose unpickling would import or call
anything else (a checkpoint from an untrusted source can run arbitrary code that way) is
refused with :class:`UnsafeCheckpointError` before any of it runs.
"""

from __future__ import annotations

import os
import pickle
import platform
import random
import re
from pathlib import Path

import numpy as np
import torch

from .config import Config
from .labels import ClassInfo
from .metrics import IGNORE_INDEX
from .models import SMP_DECODER_CHANNELS, SegmentationModel, build_model

FORMAT = "helpers-segmentation-checkpoint/1"

# Beyond tensors and plain data, what checkpoints written before they held only plain data
# contain: NumPy arrays (the RNG state of ``last.pt``) and torch's version string (a ``str``
# subclass). Rebuilding either allocates memory and copies bytes; it calls nothing else.
_ALLOWED_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype,
                    type(np.dtype(np.uint32)), torch.torch_version.TorchVersion]


class UnsafeCheckpointError(ValueError):
    """A checkpoint whose loading would import or run code beyond tensors and plain data."""


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
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def read_checkpoint(path: str | Path) -> dict:
    """Return the raw checkpoint dictionary, checking its format.

    Loads with ``weights_only=True``; raises :class:`UnsafeCheckpointError` (a ``ValueError``)
    for a file that needs anything else, naming what it asked for, and ``ValueError`` for a
    file that is not a checkpoint of this project.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        with torch.serialization.safe_globals(_ALLOWED_GLOBALS):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        names = _unsafe_names(path) or re.findall(r"Unsupported global: GLOBAL (\S+)", str(error))
        if not names:
            raise ValueError(f"{path}: not a readable PyTorch checkpoint ({error})") from None
        raise UnsafeCheckpointError(
            f"{path}: refused to load: unpickling it would import or call "
            f"{', '.join(names)}, which can run "
            "arbitrary code. Checkpoints written by helpers.train hold only tensors and plain "
            "data; this one was written by something else or altered, so it is not loaded."
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a checkpoint written by helpers.checkpoint")
    return payload


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
    before it was recorded).
    """
    payload = read_checkpoint(path)
    spec = payload["model"]
    model = build_model(
        spec["name"],
        spec["num_classes"],
        width=spec["width"],
        pretrained=False,
        output_stride=spec.get("output_stride", 16),
        mean=tuple(spec["mean"]),
        std=tuple(spec["std"]),
        # Checkpoints that do not record their decoder widths carry smp's default decoder.
        decoder_channels=spec.get("decoder_channels", SMP_DECODER_CHANNELS),
    )
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    info = {
        "classes": ClassInfo.from_dict(payload["classes"]),
        "config": Config.from_dict(payload["config"]),
        "metrics": payload.get("metrics", {}),
        "epoch": payload.get("epoch"),
        "world_size": payload.get("world_size", 1),
        "versions": payload.get("versions", {}),
        "path": str(path),
        "precision": payload.get("precision"),
        "extra": {k: v for k, v in payload.items() if k.startswith("x_")},
    }
    return model, info
