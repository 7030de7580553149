"""Training throughput: the project's training step against the original study's loop.

Both run in this one process, on the same model (same initial weights) and the same batches of
CamVid crops, so only the loop differs:

* ours: ``helpers.train.train_one_epoch`` — channels-last memory, bf16 autocast where the CPU
  has native bf16 units (:mod:`helpers.precision`; fp16 or bf16 on a GPU) with depthwise
  convolutions kept in float32 on the CPU, the fused AdamW kernel, the confusion matrix
  accumulated on the device, no host synchronisation per batch;
* the original: float32, and after every batch a softmax, an argmax, and a Python loop over the
  classes reading IoU numbers back with ``.item()``.

    python benchmarks/train_throughput.py [--model unet-effnet-lite0] [--batches 20]
        [--precisions auto,off]

Prints images/s for both and their ratio against the target (>= 2.3x where the CPU has native
bf16, >= 1.3x in float32), the seconds one epoch of the profile takes at that speed (its
training batches plus its evaluation at 360x480), and the CPU with its bf16 capability.
``--precisions auto,off`` times our loop in both precisions, interleaved: on a CPU with native
bf16, ``off`` (float32) simulates a CPU without it. On the CPU it also times one dense and one
depthwise convolution, forward + backward, in each precision and memory format (what the loop
can gain at most). Writes ``results/benchmark_train_throughput[_MODEL][_cuda][_PROFILE][_amp-...].json``.
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
import torch.nn.functional as F

from helpers import report, seed_everything
from helpers.config import load_config
from helpers.data import build_datasets
from helpers.inference import pick_device, predict_logits
from helpers.metrics import IGNORE_INDEX
from helpers.models import build_model
from helpers.precision import choose_precision, cpu_info
from helpers.train import TrainState, build_optimizer, train_one_epoch


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


def evaluation_seconds(model, dtype, batch_size: int, repeats: int = 3) -> float:
    """Seconds per evaluation batch at CamVid's native 360x480 through the inference path."""
    images = torch.rand(batch_size, 3, 360, 480)
    model.eval()
    predict_logits(model, images, dtype=dtype)  # warm-up (kernel selection)
    seconds = timed_alternately({"eval": lambda: predict_logits(model, images, dtype=dtype)}, repeats)
    return seconds["eval"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="unet-effnet-lite0")
    parser.add_argument("--batches", type=int, default=20, help="batches per timed pass")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per loop")
    parser.add_argument("--profile", default="quick", help="crop size and batch size come from it")
    parser.add_argument("--device", default=None)
    parser.add_argument("--precisions", default="auto", metavar="AMP[,AMP...]",
                        help="our loop in each of these amp settings (auto, bf16, fp16, off), "
                             "interleaved, e.g. auto,off: 'off' on a CPU with native bf16 "
                             "simulates one without")
    args = parser.parse_args()

    seed_everything(0)
    device = pick_device(args.device)
    full_config = load_config(args.profile, args.model)
    config = full_config.replace(max_train_images=args.batches * 4)
    datasets = build_datasets(full_config)
    train_set = build_datasets(config)["train"]
    train_set.transform.set_random_seed(0)
    loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, shuffle=False)
    batches = [batch for batch, _ in zip(loader, range(args.batches), strict=False)]
    num_classes = train_set.classes.num_classes
    base = build_model(args.model, num_classes, width=config.width)
    amps = [amp.strip() for amp in args.precisions.split(",") if amp.strip()]
    precisions = {amp: choose_precision(device, amp, args.model) for amp in amps}

    def schedule(optimizer):
        steps = (args.repeats + 1) * len(batches)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps)

    steps, models = {}, {}
    for amp, precision in precisions.items():
        ours = copy.deepcopy(base).to(device).to(memory_format=torch.channels_last)
        optimizer = build_optimizer(ours, config, device)
        scheduler = schedule(optimizer)
        scaler = torch.amp.GradScaler(device.type) if precision.grad_scaler else None
        models[amp] = ours

        state = TrainState(ours, optimizer, scheduler, device, precision.dtype, scaler)

        def our_step(state=state):
            train_one_epoch(state, batches, progress=False)

        steps[f"ours {amp}"] = our_step

    theirs = copy.deepcopy(base).to(device)
    optimizer2 = torch.optim.AdamW(theirs.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler2 = schedule(optimizer2)

    def their_step():
        original_epoch(theirs, batches, optimizer2, scheduler2, device, num_classes)

    steps["original"] = their_step
    images = len(batches) * config.batch_size
    for step in steps.values():  # warm-up passes (allocator, oneDNN kernel selection)
        step()
    seconds = timed_alternately(steps, args.repeats)
    theirs_s = seconds["original"]
    hardware = report.hardware()
    cpu = cpu_info()
    # One quick epoch: every training batch, then validation and the tracked test images.
    train_batches = len(datasets["train"]) // config.batch_size
    eval_images = len(datasets["val"]) + min(full_config.track_test_each_epoch, len(datasets["test"]))
    eval_batches = math.ceil(len(datasets["val"]) / config.batch_size) + math.ceil(
        (eval_images - len(datasets["val"])) / config.batch_size)
    print(f"{args.model}, {config.crop_size[0]}x{config.crop_size[1]} crops, batch "
          f"{config.batch_size}, {device} ({hardware['summary']}); CPU {cpu.describe()}")
    variants = {}
    for amp, precision in precisions.items():
        ours_s = seconds[f"ours {amp}"]
        speedup = theirs_s / ours_s
        simulated = device.type == "cpu" and cpu.native_bf16 and precision.dtype is None
        target = 2.3 if precision.dtype is not None and device.type == "cpu" else 1.3
        eval_s = evaluation_seconds(models[amp], precision.dtype, config.batch_size)
        epoch_s = train_batches * ours_s / len(batches) + eval_batches * eval_s
        variants[amp] = {
            "precision": precision.to_dict(),
            "images_per_second": images / ours_s,
            "speedup": speedup,
            "target_speedup": target,
            "meets_target": speedup >= target,
            "simulates_cpu_without_native_bf16": simulated,
            "seconds_per_train_batch": ours_s / len(batches),
            "seconds_per_eval_batch_360x480": eval_s,
            "estimated_seconds_per_epoch": epoch_s,
            "epoch_estimate": f"{train_batches} training batches + {eval_batches} evaluation "
                              f"batches ({eval_images} images at 360x480)",
        }
        label = f"ours ({precision.name}, {precision.reason})"
        print(f"  {label}: {images / ours_s:.2f} images/s, {speedup:.2f}x the original "
              f"(target >= {target}x{' without native bf16' if target == 1.3 else ''}: "
              f"{'met' if speedup >= target else 'NOT met'})"
              f"{'  [forced fp32: simulates a CPU without native bf16]' if simulated else ''}")
        print(f"    one {args.profile} epoch: {train_batches} x {ours_s / len(batches):.3f} s + "
              f"{eval_batches} x {eval_s:.3f} s (evaluation) = {epoch_s:.0f} s")
    print(f"  original loop (fp32, per-batch .item()): {images / theirs_s:.2f} images/s")
    first = variants[amps[0]]
    figures = {
        "model": args.model,
        "crop_size": list(config.crop_size),
        "batch_size": config.batch_size,
        "images_per_pass": images,
        "ours_images_per_second": first["images_per_second"],
        "original_images_per_second": images / theirs_s,
        "speedup": first["speedup"],
        "ours_precision": precisions[amps[0]].name,
        "device": str(device),
        "cpu": cpu.describe(),
        "cpu_native_bf16": cpu.native_bf16,
        "variants": variants,
    }
    figures["summary"] = {"ours images per s": figures["ours_images_per_second"],
                          "original images per s": figures["original_images_per_second"],
                          "speed-up": figures["speedup"],
                          "precision": figures["ours_precision"]}
    for amp in amps[1:]:
        figures["summary"][f"speed-up amp={amp}"] = variants[amp]["speedup"]
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
    if amps != ["auto"]:
        name += "_amp-" + "-".join(amps)
    report.write_result(name, figures, "benchmark")


if __name__ == "__main__":
    main()
