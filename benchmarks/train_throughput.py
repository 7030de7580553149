"""Training throughput: the project's training step against the original study's loop.

Both run in this one process, on the same model (same initial weights) and the same batches of
CamVid crops, so only the loop differs:

* ours: ``helpers.train.train_one_epoch`` — channels-last memory, bf16 autocast where the CPU
  has bf16 units (fp16/bf16 on a GPU) with depthwise convolutions kept in float32 on the CPU,
  the fused AdamW kernel, the confusion matrix accumulated on the device, no host
  synchronisation per batch;
* the original: float32, and after every batch a softmax, an argmax, and a Python loop over the
  classes reading IoU numbers back with ``.item()``.

    python benchmarks/train_throughput.py [--model unet-effnet-lite0] [--batches 20]

Prints images/s for both and their ratio, and on the CPU the forward + backward time of one
dense and one depthwise convolution in each precision and memory format (what the loop can gain
at most); writes ``results/benchmark_train_throughput[_MODEL][_cuda][_PROFILE].json``.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from helpers import report, seed_everything
from helpers.config import load_config
from helpers.data import build_datasets
from helpers.inference import amp_dtype, pick_device
from helpers.metrics import IGNORE_INDEX
from helpers.models import build_model
from helpers.train import build_optimizer, train_one_epoch


def original_epoch(model, batches, optimizer, scheduler, device, num_classes):
    """The original study's loop: fp32, per-batch softmax/argmax, per-class .item() IoUs."""
    model.train()
    running_loss, ious = 0.0, []
    for images, masks in batches:
        images, masks = images.to(device), masks.to(device)
        optimizer.zero_grad()
        outputs = model(images)
        loss = F.cross_entropy(outputs, masks, ignore_index=IGNORE_INDEX)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running_loss += loss.item()
        predictions = torch.argmax(F.softmax(outputs, dim=1), dim=1)
        for c in range(num_classes):
            intersection = ((predictions == c) & (masks == c)).sum().item()
            union = ((predictions == c) | (masks == c)).sum().item()
            if union > 0:
                ious.append(intersection / union)
    return running_loss / len(batches)


def timed_alternately(steps: dict, repeats: int) -> dict:
    """Seconds per call of each step, the steps taking turns so machine drift hits all alike."""
    seconds = dict.fromkeys(steps, 0.0)
    for _ in range(repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            seconds[name] += time.perf_counter() - started
    return {name: total / repeats for name, total in seconds.items()}


def convolution_ceiling(repeats: int = 5) -> dict:
    """Forward + backward ms of two convolutions in the original's format and in ours.

    What the precision and memory format can buy at most, kernel by kernel: a dense 3x3
    convolution (the U-Net decoders, the whole mini U-Net) and a 5x5 depthwise one
    (EfficientNet's blocks), batch 4, float32 NCHW against bf16 channels-last (and, for the
    depthwise one, float32 channels-last, what our loop uses for it on the CPU).
    """
    layers = {"dense 3x3, 64 ch, 128x128": (64, 1, 3), "depthwise 5x5, 240 ch, 32x32": (240, 240, 5)}
    formats = {"fp32 NCHW": (torch.float32, torch.contiguous_format),
               "fp32 channels-last": (torch.float32, torch.channels_last),
               "bf16 channels-last": (torch.bfloat16, torch.channels_last)}
    figures = {}
    for layer, (channels, groups, kernel) in layers.items():
        size = 128 if groups == 1 else 32
        for fmt, (dtype, memory_format) in formats.items():
            conv = torch.nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=groups,
                                   bias=False).to(dtype=dtype, memory_format=memory_format)
            x = torch.randn(4, channels, size, size, dtype=dtype).contiguous(memory_format=memory_format)
            x.requires_grad_(True)

            def step(conv=conv, x=x):
                conv(x).sum().backward()

            step()
            figures[f"{layer}, {fmt}"] = 1000 * timed_alternately({"step": step}, repeats)["step"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="unet-effnet-lite0")
    parser.add_argument("--batches", type=int, default=20, help="batches per timed pass")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per loop")
    parser.add_argument("--profile", default="quick", help="crop size and batch size come from it")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    seed_everything(0)
    device = pick_device(args.device)
    config = load_config(args.profile, args.model, max_train_images=args.batches * 4)
    train_set = build_datasets(config)["train"]
    train_set.transform.set_random_seed(0)
    loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, shuffle=False)
    batches = [batch for batch, _ in zip(loader, range(args.batches), strict=False)]
    num_classes = train_set.classes.num_classes
    base = build_model(args.model, num_classes, width=config.width)
    dtype = amp_dtype(device, config.amp, args.model)

    def schedule(optimizer):
        steps = (args.repeats + 1) * len(batches)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps)

    ours = copy.deepcopy(base).to(device).to(memory_format=torch.channels_last)
    optimizer = build_optimizer(ours, config, device)
    scheduler = schedule(optimizer)

    def our_step():
        train_one_epoch(ours, batches, optimizer, scheduler, None, None, device, dtype,
                        channels_last=True, progress=False)

    theirs = copy.deepcopy(base).to(device)
    optimizer2 = torch.optim.AdamW(theirs.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler2 = schedule(optimizer2)

    def their_step():
        original_epoch(theirs, batches, optimizer2, scheduler2, device, num_classes)

    images = len(batches) * config.batch_size
    our_step()  # warm-up passes (allocator, oneDNN kernel selection)
    their_step()
    seconds = timed_alternately({"ours": our_step, "original": their_step}, args.repeats)
    ours_s, theirs_s = seconds["ours"], seconds["original"]
    figures = {
        "model": args.model,
        "crop_size": list(config.crop_size),
        "batch_size": config.batch_size,
        "images_per_pass": images,
        "ours_images_per_second": images / ours_s,
        "original_images_per_second": images / theirs_s,
        "speedup": theirs_s / ours_s,
        "ours_precision": str(dtype).replace("torch.", "") if dtype else "float32",
        "device": str(device),
    }
    hardware = report.hardware()["summary"]
    print(f"{args.model}, {config.crop_size[0]}x{config.crop_size[1]} crops, batch "
          f"{config.batch_size}, {device} ({hardware})")
    print(f"  ours ({figures['ours_precision']}, channels-last, on-device metrics): "
          f"{figures['ours_images_per_second']:.2f} images/s")
    print(f"  original loop (fp32, per-batch .item()):          "
          f"{figures['original_images_per_second']:.2f} images/s")
    print(f"  speed-up: {figures['speedup']:.2f}x")
    figures["summary"] = {"ours images per s": figures["ours_images_per_second"],
                          "original images per s": figures["original_images_per_second"],
                          "speed-up": figures["speedup"]}
    if device.type == "cpu":
        figures["convolution_ceiling_ms"] = convolution_ceiling()
        print("one convolution, forward + backward (ms):")
        for name, ms in figures["convolution_ceiling_ms"].items():
            print(f"  {name:<52} {ms:7.2f}")
    name = "benchmark_train_throughput"
    if args.model != "unet-effnet-lite0":
        name += "_" + args.model
    if device.type != "cpu":
        name += "_" + device.type
    if args.profile != "quick":
        name += "_" + args.profile
    report.write_result(name, figures, "benchmark")


if __name__ == "__main__":
    main()
