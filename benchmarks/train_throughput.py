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

Prints images/s for both and their ratio, and writes ``results/benchmark_train_throughput.json``.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from helpers import report, seed_everything
from helpers.config import load_config
from helpers.data import IGNORE_INDEX, build_datasets
from helpers.inference import amp_dtype, pick_device
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


def timed(step, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - started) / repeats


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
    ours_s = timed(our_step, args.repeats)
    theirs_s = timed(their_step, args.repeats)
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
    report.write_result("benchmark_train_throughput", figures, "benchmark")


if __name__ == "__main__":
    main()
