"""Where an ONNX model's time goes: onnxruntime's own profile, per operator type and per node.

Runs the model (by default the int8 artefact ``best.int8.onnx``, made by ``python -m
helpers.quantize``) on one random image of ``--size`` (384x480: CamVid's 360x480 padded to the
encoder's stride, as every runtime pads it), batch 1, ``--threads`` threads, with onnxruntime's
profiler on, and prints the median latency, the time per operator type of the graph onnxruntime
actually runs (after its fusions: ``QLinearConv`` is a quantized convolution) and the slowest
nodes. The profiler's own overhead makes every figure a little higher than
``benchmarks/inference_latency.py`` measures::

    python benchmarks/onnx_profile.py [--model runs/quick/unet-effnet-lite0/best.int8.onnx]
        [--threads 2] [--repetitions 20] [--size 384x480] [--top 12]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the prediction command runs

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helpers.export import session_options  # noqa: E402
from helpers.precision import cpu_info  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/quick/unet-effnet-lite0/best.int8.onnx")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=20)
    parser.add_argument("--size", default="384x480", help="HEIGHTxWIDTH, multiples of 32")
    parser.add_argument("--top", type=int, default=12, help="how many of the slowest nodes to list")
    args = parser.parse_args(argv)
    import onnxruntime

    model = Path(args.model)
    model = model if model.is_absolute() else ROOT / model
    if not model.is_file():
        print(f"error: {model}: no such file (make the int8 model with python -m helpers.quantize "
              "--checkpoint CHECKPOINT, or name another with --model)", file=sys.stderr)
        return 2
    height, width = (int(side) for side in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="onnx-profile-") as folder:
        options = session_options(args.threads)  # as every project session runs
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.random.rand(1, 3, height, width).astype(np.float32)}
        warm_up = 3
        for _ in range(warm_up):
            session.run(None, feed)
        times = []
        for _ in range(args.repetitions):
            started = time.perf_counter()
            session.run(None, feed)
            times.append(1000 * (time.perf_counter() - started))
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = warm_up + args.repetitions
    by_type, by_node, counts = collections.Counter(), collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_type[event["args"]["op_name"]] += event["dur"]
            by_node[event["name"].removesuffix("_kernel_time")] += event["dur"]
            counts[event["args"]["op_name"]] += 1
    total = sum(by_type.values())
    print(f"{model.name}: {height}x{width}, batch 1, {args.threads} threads, CPU: {cpu_info().describe()}")
    print(f"median {statistics.median(times):.1f} ms over {args.repetitions} runs (profiler on); "
          f"operators {total / runs / 1000:.1f} ms per run\n")
    print(f"{'operator type':<24} {'ms/run':>7} {'share':>6} {'nodes':>6}")
    for name, microseconds in by_type.most_common():
        print(f"{name:<24} {microseconds / runs / 1000:7.2f} {100 * microseconds / total:5.1f}% "
              f"{counts[name] // runs:6d}")
    print(f"\nslowest {args.top} nodes (ms/run)")
    for name, microseconds in by_node.most_common(args.top):
        print(f"  {microseconds / runs / 1000:6.2f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
