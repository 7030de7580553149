"""Inference latency of one 360x480 image (batch 1) for each runtime, on 2 CPU threads.

Runtimes: PyTorch float32 (contiguous memory), PyTorch at its best on this machine (bf16
autocast where the CPU has bf16 units, channels_last; ``--compile`` adds torch.compile with the
weights frozen, see ``helpers.inference.compile_for_inference``) and
onnxruntime (float32, the exported model). Each goes through the project's one inference path
(padding to 384x480 and cropping back included). The target for the transfer model is
<= 40 ms on 2 CPU cores.

    python benchmarks/inference_latency.py [--checkpoint runs/quick/unet-effnet-lite0/best.pt]
        [--threads 2] [--repetitions 30] [--compile] [--save] [--decoder-channels 256,128,64,32,16]

Without the checkpoint (not trained yet) an untrained unet-effnet-lite0 stands in: the timing
of a network does not depend on its weights. OpenMP threads sleep when idle (PASSIVE, as the
prediction command and the web app run); ``OMP_WAIT_POLICY=ACTIVE`` keeps them spinning, which
suits a process that only runs the network (``--save`` then writes
``results/benchmark_inference_latency_active.json``).
"""

from __future__ import annotations

import os

# As the prediction command and the web app run (see helpers.predict): idle OpenMP threads
# sleep instead of spinning. OMP_WAIT_POLICY=ACTIVE (threads spin between operations, the
# setting for a process that only runs the network) is saved as inference_latency_active.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import sys
import tempfile
from functools import partial
from pathlib import Path

import torch

from helpers.checkpoint import load_model, save_checkpoint
from helpers.config import load_config, project_path
from helpers.data import CAMVID_CLASSES
from helpers.export import export_onnx, load_onnx
from helpers.inference import (
    amp_dtype,
    compile_for_inference,
    onnx_logits,
    predict_logits,
    prepare_model,
)
from helpers.machine import latency_ms
from helpers.models import build_model

DEFAULT_CHECKPOINT = "runs/quick/unet-effnet-lite0/best.pt"


def untrained_checkpoint(folder: Path, decoder_channels=None) -> Path:
    """Write a checkpoint of an untrained unet-effnet-lite0 (ImageNet encoder) and return it."""
    config = load_config("quick", "unet-effnet-lite0")
    model = build_model(config.model, CAMVID_CLASSES.num_classes, pretrained=False,
                        decoder_channels=decoder_channels)
    return save_checkpoint(folder / "untrained.pt", model, config, CAMVID_CLASSES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=30)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--decoder-channels", default=None, metavar="C1,...,C5",
                        help="time an untrained U-Net with these decoder widths instead")
    parser.add_argument("--save", action="store_true", help="write results/inference_latency.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    scratch = tempfile.TemporaryDirectory()
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_absolute():
        checkpoint = project_path(args.checkpoint)
    decoder = [int(c) for c in args.decoder_channels.split(",")] if args.decoder_channels else None
    if checkpoint.is_file() and decoder is None:
        source = str(checkpoint)
    else:
        if decoder is None:
            print(f"{checkpoint} not found: timing an untrained unet-effnet-lite0 instead "
                  "(same network, same speed)")
        checkpoint = untrained_checkpoint(Path(scratch.name), decoder)
        source = "untrained unet-effnet-lite0" + (f", decoder {args.decoder_channels}" if decoder else "")
    image = torch.rand(1, 3, args.height, args.width)
    device = torch.device("cpu")

    model, info = load_model(checkpoint, device)
    fp32 = model.float().eval()
    timings = {"torch fp32": partial(predict_logits, fp32, image, None, channels_last=False)}

    best, _ = load_model(checkpoint, device)
    best = prepare_model(best, device, channels_last=True)
    dtype = amp_dtype(device, "auto", best.name)
    label = f"torch {'bf16' if dtype == torch.bfloat16 else 'fp32'} channels_last"
    timings[label] = partial(predict_logits, best, image, dtype, channels_last=True)
    if args.compile:
        compiled = compile_for_inference(best)
        timings[label + " compiled"] = partial(predict_logits, compiled, image, dtype,
                                               channels_last=True)

    session, _ = load_onnx(export_onnx(checkpoint), threads=args.threads)
    timings["onnxruntime fp32"] = partial(onnx_logits, session, image)

    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"{source}: {info['config'].model}, input {args.height}x{args.width} (padded to "
          f"multiples of 32), batch 1, {args.threads} threads, {args.repetitions} repetitions")
    results = {}
    with torch.inference_mode():
        for name, run in timings.items():
            results[name] = latency_ms(run, args.repetitions, warmup=5 if "compiled" in name else 3)
            r = results[name]
            print(f"  {name:<34} median {r['median_ms']:6.1f} ms   p90 {r['p90_ms']:6.1f} ms   "
                  f"min {r['min_ms']:6.1f} ms")
    fastest = min(results, key=lambda name: results[name]["median_ms"])
    print(f"fastest: {fastest}, {results[fastest]['median_ms']:.1f} ms/image "
          f"(target for the transfer model: <= 40 ms on 2 CPU cores)")
    if args.save and decoder is not None:
        print("not saved: --save records the project's model, not a --decoder-channels variant")
    elif args.save:
        from helpers.report import write_result

        policy = os.environ["OMP_WAIT_POLICY"].upper()
        summary = {"OMP wait policy": policy,
                   **{f"{name} ms": r["median_ms"] for name, r in results.items()}}
        name = "benchmark_inference_latency" + ("" if policy == "PASSIVE" else f"_{policy.lower()}")
        path = write_result(name, {
            "checkpoint": source, "model": info["config"].model, "threads": args.threads,
            "omp_wait_policy": policy,
            "input": [args.height, args.width], "batch": 1, "latency": results,
            "summary": summary},
            info["config"].profile if checkpoint.name != "untrained.pt" else "untrained")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
