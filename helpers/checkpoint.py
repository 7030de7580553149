"""The self-describing checkpoint format: the only place that pickles models.

A checkpoint holds the weights and everything needed to use them: the model's name and
width, the class names and colours, the ignore index, the input normalization, the full
training configuration, its metrics and the library versions. Prediction, evaluation, export
and the web app need only its path.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from .config import Config
from .data import IGNORE_INDEX, ClassInfo
from .models import SMP_DECODER_CHANNELS, SegmentationModel, build_model

FORMAT = "helpers-segmentation-checkpoint/1"


def library_versions() -> dict:
    """Return the versions of the libraries a checkpoint depends on."""
    import numpy
    import segmentation_models_pytorch
    import timm

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
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
    precision: dict | None = None,
) -> Path:
    """Write a checkpoint atomically (a crash never leaves half a file) and return its path.

    ``training_state`` (optimizer, scheduler, scaler, RNG, early stopping, history) is only
    needed to resume training. ``precision`` records the training precision and why it was
    chosen (:meth:`helpers.precision.Precision.to_dict`) and the CPU or GPU it was chosen for.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "model": {
            "name": model.name,
            "num_classes": model.num_classes,
            "width": config.width,
            "output_stride": config.extra.get("output_stride", 16),
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
        "versions": library_versions(),
        "training_state": training_state,
        "precision": precision,
    }
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def read_checkpoint(path: str | Path) -> dict:
    """Return the raw checkpoint dictionary, checking its format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a checkpoint written by helpers.checkpoint")
    return payload


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Return ``(model, info)``: the model in eval mode on ``device`` and the checkpoint's metadata.

    ``info`` has ``classes`` (a :class:`ClassInfo`), ``config`` (a :class:`Config`),
    ``metrics``, ``epoch``, ``versions``, ``path`` and ``precision`` (the training precision
    and its reason; None for checkpoints written before it was recorded).
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
        "versions": payload.get("versions", {}),
        "path": str(path),
        "precision": payload.get("precision"),
        "extra": {k: v for k, v in payload.items() if k.startswith("x_")},
    }
    return model, info
