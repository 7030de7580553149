"""The one inference path: evaluation, prediction, the web app and export parity all use it.

It pads inputs to the encoder stride, picks the fastest precision and memory format for the
device, optionally averages a horizontal flip (test-time augmentation), and crops the padding
away again, so a number in the report and a mask in the app come from the same code.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .imageio import working_size  # noqa: F401 - importable from here as before
from .precision import choose_precision, cpu_info

STRIDE = 32


def cpu_supports_bf16() -> bool:
    """Return whether this CPU has native bfloat16 units (where bf16 autocast pays off).

    Read from the CPU's flags (:mod:`helpers.precision`), not from oneDNN, which reports bf16
    support on any AVX512 CPU and emulates it there, several times slower than float32.
    """
    return cpu_info().native_bf16


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """Return the requested device, else CUDA when available, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def amp_dtype(device: torch.device, amp: str = "auto", model_name: str = "") -> torch.dtype | None:
    """Return the autocast dtype to use, or None for float32.

    ``amp`` is ``"auto"``, ``"bf16"``, ``"fp16"`` or ``"off"``; "auto" is
    :func:`helpers.precision.choose_precision`'s decision (bf16 only on hardware with native
    bf16 units, fp16 on pre-Ampere GPUs, float32 otherwise), which also gives the reason.
    """
    return choose_precision(device, amp, model_name).dtype


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Return an autocast context for ``dtype`` (a no-op context for float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def prepare_model(model: torch.nn.Module, device: torch.device, channels_last: bool = True):
    """Move a model to a device in eval mode, channels_last when asked; returns it."""
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def compile_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """Return ``torch.compile(model)`` with the weights frozen into the compiled graph.

    Freezing lets Inductor fold every BatchNorm into its convolution and pre-pack the weights
    for oneDNN, with the activation fused into the convolution (benchmarks/inference_latency.py
    --compile times it). Only for eval-mode inference: the frozen weights
    no longer follow the module's parameters. The first call of each input shape compiles
    (about 15 s on 2 cores).
    """
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(model.eval())


def pad_to_stride(images: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """Pad (N, C, H, W) images at the bottom and right to multiples of ``stride`` (zeros)."""
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % stride, (-width) % stride
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h))


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    dtype: torch.dtype | None = None,
    tta_flip: bool = False,
    channels_last: bool = True,
    scales: tuple[float, ...] = (1.0,),
) -> torch.Tensor:
    """Return float32 logits (N, num_classes, H, W) for images (N, 3, H, W) on the 0-1 scale.

    Any H and W work: inputs are padded to the stride and the logits cropped back.
    ``tta_flip`` averages the logits of the image and its mirror; ``scales`` (multi-scale
    test-time augmentation) averages the logits of the image resized by each factor, each
    resized back to H x W.
    """
    height, width = images.shape[-2:]
    device = next(model.parameters()).device
    images = images.to(device, non_blocking=True)
    total = None
    for scale in scales:
        scaled = images
        if scale != 1.0:
            size = (round(height * scale), round(width * scale))
            scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        batch = pad_to_stride(scaled)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            logits = model(batch).float()
            if tta_flip:
                logits = 0.5 * (logits + model(batch.flip(-1)).float().flip(-1))
        logits = logits[..., :scaled.shape[-2], :scaled.shape[-1]]
        if scale != 1.0:
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        total = logits if total is None else total + logits
    return total / len(scales)


def labels_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Return class ids (N, H, W) from logits (N, C, H, W).

    ``max(1).indices`` rather than ``argmax``: measured ~10x faster over the channels of an
    NCHW tensor on the CPU.
    """
    return logits.max(1).indices


# --------------------------------------------------------------------------- large photos
#
# A 12-megapixel phone photo is about 25 times CamVid's 480x360. Two strategies keep detail
# and memory bounded (see helpers.predict for the command line):
#
# * resize (default): the network runs once at a working scale (long side ``max_side``,
#   480 = CamVid's scale), and its logits are upsampled bilinearly to the full photo size in
#   horizontal bands, taking the argmax per band: never a num_classes x 12 MP float tensor.
# * tile: the network slides a square window over a larger working scale, and the softmax
#   probabilities of overlapping windows are blended with Hann weights (no seams), then
#   upsampled the same way.


def _source_rows(out_size: int, in_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (lower, upper, weight) of bilinear resampling along one axis.

    The half-pixel convention of ``F.interpolate(..., align_corners=False)``: output pixel ``y``
    reads input position ``(y + 0.5) * in/out - 0.5``, clamped at 0.
    """
    position = (torch.arange(out_size, dtype=torch.float64) + 0.5) * (in_size / out_size) - 0.5
    position.clamp_(min=0)
    lower = position.floor().long().clamp_(max=in_size - 1)
    upper = (lower + 1).clamp_(max=in_size - 1)
    return lower, upper, (position - lower).float()


@torch.inference_mode()
def upsample_labels(scores: torch.Tensor, size: tuple[int, int], band_rows: int = 512):
    """Return class ids (H, W) uint8 (a NumPy array): the argmax of ``scores`` upsampled bilinearly.

    ``scores`` are (num_classes, h, w) logits or probabilities at the working scale and
    ``size`` is the full (H, W). The result equals ``F.interpolate(scores, size,
    mode="bilinear").argmax(0)`` (up to float rounding and ties) without ever holding
    num_classes x H x W floats: the output is built in bands of ``band_rows`` rows, each from
    the few source rows it needs, upsampled along the width ((C, rows, W) floats per band).

    Between two source rows the scores change linearly, so the label can switch only where
    the labels of the two rows differ (a class that wins at both ends wins at every blend of
    them), and there the two labels swap at one blend weight t*, computed once per column
    instead of per output row. Only where a third class would overtake both at t* (rare) are
    the output pixels interpolated and compared class by class.
    """
    height, width = scores.shape[1:]
    out_height, out_width = size
    scores = scores.float()
    lower, upper, weight = _source_rows(out_height, height)
    labels = torch.empty((out_height, out_width), dtype=torch.uint8)
    for start in range(0, out_height, band_rows):
        stop = min(out_height, start + band_rows)
        first_row, last_row = int(lower[start]), int(upper[stop - 1])
        rows = scores[:, first_row:last_row + 1]
        if width != out_width:  # along the width only: rows are independent, so bands are exact
            rows = F.interpolate(rows[None], size=(rows.shape[1], out_width), mode="bilinear",
                                 align_corners=False)[0]
        _fill_band(rows.contiguous(), lower[start:stop] - first_row, upper[start:stop] - first_row,
                   weight[start:stop], labels[start:stop])
    return labels.numpy()


def _fill_band(rows: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, weight: torch.Tensor,
               out: torch.Tensor) -> None:
    """Write into ``out`` (n, W) the argmax of ``rows`` (C, r, W) blended along the height.

    Output row i blends source rows ``lower[i]`` and ``upper[i]`` with weight ``weight[i]``
    on the upper one (see :func:`upsample_labels`).
    """
    num_classes, height, out_width = rows.shape
    flat = rows.reshape(num_classes, -1)
    row_labels = rows.max(0).indices  # (r, W)
    # switch[r, x]: the weight of row r + 1 at which column x's label turns from row r's to
    # row r + 1's; inf where both rows agree, NaN where a third class wins somewhere between.
    switch = torch.full((max(1, height - 1), out_width), float("inf"))
    gap_rows, gap_columns = torch.nonzero(row_labels[:-1] != row_labels[1:], as_tuple=True)
    third_class = False
    if gap_rows.numel():
        first = flat.index_select(1, gap_rows * out_width + gap_columns)  # (C, gaps)
        second = flat.index_select(1, (gap_rows + 1) * out_width + gap_columns)
        label_first = row_labels[gap_rows, gap_columns][None]
        label_second = row_labels[gap_rows + 1, gap_columns][None]
        lead_first = first.gather(0, label_first) - first.gather(0, label_second)  # >= 0
        lead_second = second.gather(0, label_second) - second.gather(0, label_first)  # >= 0
        t = (lead_first / (lead_first + lead_second).clamp_min(1e-12)).clamp_(0, 1)
        at_switch = first.lerp_(second, t)  # every class's score where the two labels tie
        # Each class's score minus the tied pair's is linear minus convex in t, so it peaks at
        # t*: no other class can win anywhere in the gap unless it wins at t*.
        overtaken = at_switch.max(0).values > at_switch.gather(0, label_first)[0] + 1e-6
        t = t[0]
        t[overtaken] = float("nan")
        third_class = bool(overtaken.any())
        switch[gap_rows, gap_columns] = t
    threshold = switch.index_select(0, lower.clamp(max=switch.shape[0] - 1))
    row_labels = row_labels.to(torch.uint8)
    torch.where(weight[:, None] <= threshold, row_labels.index_select(0, lower),
                row_labels.index_select(0, upper), out=out)
    if third_class:
        out_rows, columns = torch.nonzero(threshold.isnan(), as_tuple=True)
        top = flat.index_select(1, lower[out_rows] * out_width + columns)
        bottom = flat.index_select(1, upper[out_rows] * out_width + columns)
        top.lerp_(bottom, weight[out_rows])
        out[out_rows, columns] = top.max(0).indices.to(torch.uint8)


def resize_labels_nearest(labels, size: tuple[int, int]):
    """Return class ids (H, W) resized to ``size`` by nearest neighbour (pixel centres aligned)."""
    import numpy as np

    labels = np.asarray(labels)
    out_height, out_width = size
    rows = np.minimum(((np.arange(out_height) + 0.5) * labels.shape[0] / out_height).astype(np.int64),
                      labels.shape[0] - 1)
    columns = np.minimum(((np.arange(out_width) + 0.5) * labels.shape[1] / out_width).astype(np.int64),
                         labels.shape[1] - 1)
    return labels[rows][:, columns]


def tile_positions(length: int, tile: int, overlap: float) -> list[int]:
    """Return the start offsets of windows of ``tile`` pixels covering ``length`` pixels.

    Neighbouring windows overlap by at least ``overlap`` (a fraction of the window); the last
    window ends at the border.
    """
    if length <= tile:
        return [0]
    step = max(1, int(tile * (1 - overlap)))
    positions = list(range(0, length - tile, step))
    positions.append(length - tile)
    return positions


def hann_window(height: int, width: int) -> torch.Tensor:
    """Return a (height, width) 2-D Hann window, positive everywhere (peak 1 at the centre).

    Blending overlapping windows with it weights each pixel by its distance from a window's
    border, where the network sees the least context, so tiles join without seams.
    """

    def one_axis(length: int) -> torch.Tensor:
        position = (torch.arange(length, dtype=torch.float32) + 0.5) / length
        return 0.5 - 0.5 * torch.cos(2 * torch.pi * position)

    return one_axis(height)[:, None] * one_axis(width)[None, :]


@torch.inference_mode()
def predict_tiled(logits_fn, image: torch.Tensor, tile: int = 384, overlap: float = 0.25,
                  batch_size: int = 4) -> torch.Tensor:
    """Return blended class probabilities (num_classes, h, w) of a sliding-window prediction.

    ``image`` is (3, h, w) on the 0-1 scale; ``logits_fn`` maps (N, 3, t, t) images to
    (N, C, t, t) float32 logits (e.g. a ``functools.partial`` of :func:`predict_logits`).
    Windows of ``tile`` pixels overlap by ``overlap``; the softmax of each is accumulated
    with a Hann weight and divided by the summed weights. Memory: one (C, h, w) accumulator.
    """
    _, height, width = image.shape
    tile_height, tile_width = min(tile, height), min(tile, width)
    window = hann_window(tile_height, tile_width)
    windows = [(top, left) for top in tile_positions(height, tile_height, overlap)
               for left in tile_positions(width, tile_width, overlap)]
    probabilities = None
    weights = torch.zeros((height, width))
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        batch = torch.stack([image[:, top:top + tile_height, left:left + tile_width]
                             for top, left in chunk])
        softmax = logits_fn(batch).float().softmax(1)
        if probabilities is None:
            probabilities = torch.zeros((softmax.shape[1], height, width))
        for (top, left), tile_probabilities in zip(chunk, softmax, strict=True):
            probabilities[:, top:top + tile_height, left:left + tile_width] += tile_probabilities * window
            weights[top:top + tile_height, left:left + tile_width] += window
    return probabilities / weights


def onnx_logits(session, images: torch.Tensor) -> torch.Tensor:
    """Return float32 logits (N, C, H, W) from an onnxruntime session for 0-1 images (N, 3, H, W).

    The same padding to the stride and cropping as :func:`predict_logits`, so the ONNX model
    (whose input must be a multiple of 32) takes any size.
    """
    height, width = images.shape[-2:]
    batch = pad_to_stride(images.float()).contiguous().numpy()
    (logits,) = session.run(None, {session.get_inputs()[0].name: batch})
    return torch.from_numpy(logits)[..., :height, :width]
