"""What transfer learning keeps of a pretrained network: frozen encoder stages, a frozen
encoder for the first epochs, and a checkpoint's encoder and decoder under a new classifier.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import read_checkpoint
from .errors import CheckpointError

# State-dict prefixes of the layer that turns features into class scores, per architecture.
CLASSIFIER_PREFIXES = ("net.segmentation_head.", "net.classifier.")


def init_from_checkpoint(model: torch.nn.Module, path: str | Path, progress: bool = True) -> list[str]:
    """Load a checkpoint's encoder and decoder into ``model``, keeping ``model``'s freshly
    initialised classifier (built for the new class list); return the keys left as they were.

    The checkpoint must hold the same architecture (model name, width, decoder widths); its
    input normalization comes along, since the encoder's features were learned with it. A file
    that is not such a checkpoint raises :class:`CheckpointError` naming it and the fix.
    """
    try:
        payload = read_checkpoint(path)
        source_name = payload["model"]["name"]
        state_dict = payload["state_dict"]
    except CheckpointError as error:
        raise CheckpointError(f"--init-from {error}") from None
    except (ValueError, OSError, KeyError, TypeError) as error:
        reason = f"no {error} field" if isinstance(error, KeyError) else str(error).splitlines()[0]
        raise CheckpointError(f"--init-from {path}: not a usable checkpoint ({reason}); give the "
                              "best.pt of a finished run") from None
    if source_name != model.name:
        raise CheckpointError(f"--init-from {path}: that checkpoint holds a {source_name}, not a "
                              f"{model.name}; train with --model {source_name}")
    source = {k: v for k, v in state_dict.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    target = model.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in source.items()
                  if k in target and v.shape != target[k].shape]
    missing = [k for k in target if k not in source and not k.startswith(CLASSIFIER_PREFIXES)]
    if mismatched or missing:
        shown = "; ".join((mismatched + missing)[:4])
        raise CheckpointError(f"--init-from {path}: its layers do not fit this {model.name} "
                              f"({shown}); use the checkpoint's width and decoder widths (see its "
                              "config)")
    model.load_state_dict(source, strict=False)
    kept = [k for k in target if k.startswith(CLASSIFIER_PREFIXES)]
    if progress:
        print(f"initialised from {path}: {len(source)} tensors loaded, classifier new "
              f"({payload['model']['num_classes']} -> {model.num_classes} classes)")
    return kept


def encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """Return the encoder of a model built by :func:`helpers.models.build_model`."""
    net = model.net
    return net.encoder if hasattr(net, "encoder") else net.encoders


def freeze_encoder(model: torch.nn.Module, frozen: bool) -> None:
    """Freeze (or unfreeze) the encoder's weights; its BatchNorm layers keep training.

    As fastai's ``freeze`` does by default (``train_bn``): normalization statistics and
    affine parameters adapt to the new photos while the learned filters stay fixed.
    """
    for module in encoder_of(model).modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            continue
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(not frozen)


def encoder_stages(model: torch.nn.Module) -> list[list[torch.nn.Module]]:
    """Return a pretrained encoder's layers grouped by stage, the stem with the first.

    Stage k outputs features at 1/2^k of the input size (k = 1..5), as the U-Net's skip
    connections take them: for EfficientNet-Lite0 the stem and first block (1/2), then the
    blocks down to 1/4, 1/8, 1/16 and 1/32.
    """
    encoder = model.net.encoder if hasattr(model.net, "encoder") else None
    if encoder is not None and hasattr(getattr(encoder, "model", None), "feature_info"):
        timm_model = encoder.model  # timm, through smp's "tu-" encoders
        layers = [(name, module) for name, module in timm_model.named_children() if name != "blocks"]
        layers += [(f"blocks.{i}", stage) for i, stage in enumerate(timm_model.blocks)]
        ends = timm_model.feature_info.module_name()
    elif encoder is not None and hasattr(encoder, "features"):  # MobileNetV2 (torchvision's)
        layers = [(str(i), module) for i, module in enumerate(encoder.features)]
        ends = ["1", "3", "6", "13", str(len(encoder.features) - 1)]
    else:
        raise ValueError(f"{model.name} has no pretrained encoder whose stages could be frozen")
    stages, current = [], []
    for name, module in layers:
        current.append(module)
        if name in ends:
            stages.append(current)
            current = []
    return stages


def freeze_stages(model: torch.nn.Module, stages: int) -> None:
    """Keep the pretrained encoder's first ``stages`` stages (1/2, 1/4, ...) as ImageNet left them.

    Their weights and BatchNorm scales are not trained, so backpropagation stops before them:
    with 2 (the layers at 1/2 and 1/4 resolution, Detectron2's default ``FREEZE_AT=2``) a
    training step of the Lite0 U-Net skips the costliest part of its backward pass. Their
    BatchNorm layers also stay in inference mode, normalising with ImageNet's running
    statistics (Detectron2's ``FrozenBatchNorm2d``) rather than with each batch of 4 crops:
    the frozen stages compute the same function in training and evaluation.
    ``model.train()`` keeps them so (:meth:`helpers.models.SegmentationModel.train`).
    """
    if stages <= 0:
        return
    norms = []
    for stage in encoder_stages(model)[:stages]:
        for module in stage:
            for parameter in module.parameters():
                parameter.requires_grad_(False)
            norms += [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    model.frozen_norms = norms
    model.train(model.training)
