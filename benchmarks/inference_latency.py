"""Inference latency of one 360x480 image (batch 1) for each runtime, on 2 CPU threads.

Runtimes, each through the project's one inference path (padding to 384x480 and cropping back
included), taking turns so that a shared machine's drift hits all alike: PyTorch float32 in
contiguous memory (the original's way), every runtime :mod:`helpers.runtime` chooses from
(PyTorch float32 and bf16 channels-last, ``--compile`` adding their torch.compile'd versions
with frozen weights, onnxruntime float32), and the prediction path: the runtime that
``helpers.predict`` and the web app run with ``--runtime auto`` on this machine. Prints the
CPU and whether it has native bf16, and the prediction path against the fastest runtime of
the same run (target: within 10%).

    python benchmarks/inference_latency.py [--checkpoint runs/quick/unet-effnet-lite0/best.pt]
        [--threads 2] [--repetitions 30] [--compile] [--int8] [--save]
        [--decoder-channels 256,128,64,32,16]

``--int8`` also times the int8 model (``onnx-int8``: ``best.int8.onnx`` beside the checkpoint,
made by ``python -m helpers.quantize``; made here in a scratch folder where it is absent)
and prints its median against the fastest runtime that is not int8 (target: <= 0.5x);
``--save`` then writes ``..._int8[...].json``. ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI`` keeps
oneDNN (PyTorch) off AMX, to measure a VNNI CPU without it (``..._no-amx``);
``benchmarks/int8_speed.py`` runs the three cases in one command.

Without the checkpoint (not trained yet) an untrained unet-effnet-lite0 stands in: the timing
of a network does not depend on its weights. OpenMP threads sleep when idle (PASSIVE, as the
prediction command and the web app run); ``OMP_WAIT_POLICY=ACTIVE`` keeps them spinning, which
suits a process that only runs the network (``--save`` then writes
``results/benchmark_inference_latency_active.json``). ``SEG_NATIVE_BF16=0`` hides the CPU's bf16
flags, simulating a CPU without native bf16 (``--save``: ``..._bf16-hidden.json``).
"""

from __future__ import annotations

import os

# As the prediction command and the web app run (see helpers.predict): idle OpenMP threads
# sleep instead of spinning. OMP_WAIT_POLICY=ACTIVE (threads spin between operations, the
# setting for a process that only runs the network) is saved as inference_latency_active.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path

import torch

from helpers.checkpoint import load_model, save_checkpoint
from helpers.config import load_config, project_path
from helpers.data import CAMVID_CLASSES
from helpers.inference import predict_logits
from helpers.machine import latency_ms
from helpers.models import build_model
from helpers.precision import HIDE_BF16_ENV, cpu_info
from helpers.predict import Predictor
from helpers.runtime import load_runtime

DEFAULT_CHECKPOINT = "runs/quick/unet-effnet-lite0/best.pt"


def untrained_checkpoint(folder: Path, decoder_channels=None) -> Path:
    """Write a checkpoint of an untrained unet-effnet-lite0 (ImageNet encoder) and return it."""
    config = load_config("quick", "unet-effnet-lite0")
    model = build_model(config.model, CAMVID_CLASSES.num_classes, pretrained=False,
                        decoder_channels=decoder_channels)
    return save_checkpoint(folder / "untrained.pt", model, config, CAMVID_CLASSES)


def int8_model(checkpoint: Path, folder: Path) -> Path:
    """Return a checkpoint with a fresh int8 model beside it: ``checkpoint`` itself when its
    ``best.int8.onnx`` is there and current, else a copy in ``folder`` quantized now."""
    import shutil

    from helpers.errors import CheckpointError
    from helpers.quantize import artefact_path, check_artefact, quantize_checkpoint

    try:
        check_artefact(artefact_path(checkpoint), checkpoint)
        return checkpoint
    except CheckpointError as error:
        print(f"{error}: quantizing a copy for this benchmark", flush=True)
    copy = Path(shutil.copy(checkpoint, folder / "int8-source.pt"))
    quantize_checkpoint(copy, progress=False)
    return copy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=30)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--int8", action="store_true", help="also time the int8 model")
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
    cpu = cpu_info()

    model, info = load_model(checkpoint, device)
    fp32 = model.float().eval()
    # The original's way: float32, contiguous (NCHW) memory, eager.
    timings = {"torch fp32 NCHW": partial(predict_logits, fp32, image, None, channels_last=False)}
    # Every runtime helpers.runtime can choose from, loaded the way it loads them; bf16 here
    # even where it is only emulated, to show what emulation costs (but not when the bf16
    # flags are hidden to simulate a CPU without them: this CPU's bf16 is native).
    simulated = os.environ.get(HIDE_BF16_ENV, "").strip() == "0"
    names = [n for n in ("torch-fp32", "torch-bf16") if not (simulated and "bf16" in n)]
    names += [f"{n}-compiled" for n in names if args.compile] + ["onnx"]
    for name in names:
        loaded = load_runtime(name, checkpoint, device, threads=args.threads)
        timings[name] = partial(loaded.logits, image)
    int8_info, int8_checkpoint = None, checkpoint
    if args.int8:
        int8_checkpoint = int8_model(checkpoint, Path(scratch.name))
        loaded = load_runtime("onnx-int8", int8_checkpoint, device, threads=args.threads)
        timings["onnx-int8"] = partial(loaded.logits, image)
        int8_info = loaded.describe()
    # The prediction path: what helpers.predict and the web app run with --runtime auto
    # (measured once on this machine and cached, see helpers.runtime), with the int8 model
    # beside the checkpoint when --int8 made one.
    predictor = Predictor(int8_checkpoint, runtime="auto", threads=args.threads, compile=args.compile)
    chosen = predictor.describe()
    path_label = f"prediction path ({chosen['runtime']})"
    timings[path_label] = partial(predictor._logits, image)

    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    print(f"CPU: {cpu.describe()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
          + (f"; ONEDNN_MAX_CPU_ISA={isa}" if isa else ""))
    print(f"{source}: {info['config'].model}, input {args.height}x{args.width} (padded to "
          f"multiples of 32), batch 1, {args.threads} threads, {args.repetitions} repetitions, "
          "runtimes taking turns")
    with torch.inference_mode():
        for name, run in timings.items():  # warm-up: kernel selection, compilation
            for _ in range(5 if "compiled" in name or "compiled" in path_label else 3):
                run()
        samples = {name: [] for name in timings}
        order = list(timings)
        for repetition in range(args.repetitions):
            # A different order each round: no runtime always follows the same one (whose
            # threads may still be winding down).
            shift = repetition % len(order)
            for name in order[shift:] + order[:shift]:
                samples[name].append(latency_ms(timings[name], repetitions=1, warmup=0)["median_ms"])
    results = {}
    for name, values in samples.items():
        values.sort()
        results[name] = {"median_ms": statistics.median(values),
                         "p90_ms": values[min(len(values) - 1, int(0.9 * len(values)))],
                         "min_ms": values[0], "repetitions": len(values)}
        r = results[name]
        print(f"  {name:<38} median {r['median_ms']:6.1f} ms   p90 {r['p90_ms']:6.1f} ms   "
              f"min {r['min_ms']:6.1f} ms")
    fastest = min((n for n in results if n != path_label), key=lambda n: results[n]["median_ms"])
    int8_ratio = int8_baseline = None
    if args.int8:
        int8_baseline = min((n for n in results if n not in (path_label, "onnx-int8")
                             and "int8" not in n), key=lambda n: results[n]["median_ms"])
        int8_ratio = results["onnx-int8"]["median_ms"] / results[int8_baseline]["median_ms"]
        print(f"int8: onnx-int8 {results['onnx-int8']['median_ms']:.1f} ms = {int8_ratio:.2f}x the "
              f"fastest runtime not in int8 ({int8_baseline}, "
              f"{results[int8_baseline]['median_ms']:.1f} ms) (target <= 0.50x: "
              f"{'met' if int8_ratio <= 0.5 else 'NOT met'})")
    ratio = results[path_label]["median_ms"] / results[fastest]["median_ms"]
    print(f"fastest: {fastest}, {results[fastest]['median_ms']:.1f} ms/image")
    print(f"prediction path: {chosen['runtime']} ({'cached' if chosen['choice'].get('cached') else 'measured now'}), "
          f"{results[path_label]['median_ms']:.1f} ms = {ratio:.2f}x the fastest "
          f"(target <= 1.10x: {'met' if ratio <= 1.10 else 'NOT met'})")
    if args.save and decoder is not None:
        print("not saved: --save records the project's model, not a --decoder-channels variant")
    elif args.save:
        from helpers.report import write_result

        policy = os.environ["OMP_WAIT_POLICY"].upper()
        summary = {"OMP wait policy": policy,
                   **{f"{name} ms": r["median_ms"] for name, r in results.items()},
                   "prediction path vs fastest": ratio}
        name = "benchmark_inference_latency" + ("_int8" if args.int8 else "")
        name += "" if policy == "PASSIVE" else f"_{policy.lower()}"
        name += "_bf16-hidden" if simulated else ""
        name += "_no-amx" if "AMX" not in isa.upper() and isa else ""
        if args.int8:
            summary.update({"int8 vs fastest not int8": int8_ratio,
                            "fastest not int8": int8_baseline})
        path = write_result(name, {
            "checkpoint": source, "model": info["config"].model, "threads": args.threads,
            "omp_wait_policy": policy, "cpu": cpu.describe(), "cpu_native_bf16": cpu.native_bf16,
            "input": [args.height, args.width], "batch": 1, "latency": results,
            "fastest": fastest, "prediction_path": chosen, "prediction_path_vs_fastest": ratio,
            "onednn_max_cpu_isa": isa or None,
            **({"int8": int8_info, "int8_vs_fastest_not_int8": int8_ratio,
                "fastest_not_int8": int8_baseline} if args.int8 else {}),
            "summary": summary},
            info["config"].profile if checkpoint.name != "untrained.pt" else "untrained")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
