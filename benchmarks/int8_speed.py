"""The int8 speed target in one command: int8 against the fastest runtime not in int8, three CPUs.

Runs ``benchmarks/inference_latency.py --int8 --compile --save`` three times, each in a fresh
process (the settings are read when the libraries load), every runtime timed in turns within
its process (360x480, batch 1, ``--threads`` threads):

1. ``native``: the CPU as it is (bf16 and AMX where it has them);
2. ``bf16-hidden``: ``SEG_NATIVE_BF16=0``, the runtime choice of a CPU without native bf16;
3. ``no-amx``: also ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI``, oneDNN (PyTorch) limited to
   AVX512-VNNI, as on an Intel Xeon without AMX or an AMD EPYC (onnxruntime's own kernels
   still pick their instructions from the CPU: on an AMX CPU its int8 may use AMX).

Prints the int8 median against the fastest runtime not in int8 for each (target <= 0.5x) and
writes ``results/benchmark_int8_speed.json`` (each case also writes its own
``benchmark_inference_latency_int8*.json``)::

    python benchmarks/int8_speed.py [--checkpoint runs/quick/unet-effnet-lite0/best.pt]
        [--threads 2] [--repetitions 30] [--cases native bf16-hidden no-amx]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CASES = {
    "native": {},
    "bf16-hidden": {"SEG_NATIVE_BF16": "0"},
    "no-amx": {"SEG_NATIVE_BF16": "0", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"},
}
RESULTS = {"native": "benchmark_inference_latency_int8",
           "bf16-hidden": "benchmark_inference_latency_int8_bf16-hidden",
           "no-amx": "benchmark_inference_latency_int8_bf16-hidden_no-amx"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/quick/unet-effnet-lite0/best.pt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=30)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args(argv)

    from helpers.config import project_path
    from helpers.report import write_result

    script = Path(__file__).with_name("inference_latency.py")
    rows = {}
    for case in args.cases:
        print(f"\n=== {case} ===", flush=True)
        environment = {**os.environ, **CASES[case], "OMP_NUM_THREADS": str(args.threads)}
        command = [sys.executable, str(script), "--int8", "--compile", "--save",
                   "--checkpoint", args.checkpoint, "--threads", str(args.threads),
                   "--repetitions", str(args.repetitions)]
        if subprocess.run(command, env=environment).returncode != 0:
            print(f"error: the {case} case failed", file=sys.stderr)
            return 1
        result = json.loads((project_path("results") / f"{RESULTS[case]}.json").read_text())
        latency = result["latency"]
        baseline = result["fastest_not_int8"]
        rows[case] = {"cpu": result["cpu"], "onednn_max_cpu_isa": result.get("onednn_max_cpu_isa"),
                      "int8_ms": latency["onnx-int8"]["median_ms"], "fastest_not_int8": baseline,
                      "fastest_not_int8_ms": latency[baseline]["median_ms"],
                      "ratio": result["int8_vs_fastest_not_int8"],
                      "medians_ms": {name: r["median_ms"] for name, r in latency.items()}}
    print("\nint8 (onnx-int8) against the fastest runtime not in int8, medians of "
          f"{args.repetitions} turns, {args.threads} threads, 360x480, batch 1:")
    for case, row in rows.items():
        print(f"  {case:<12} {row['int8_ms']:6.1f} ms vs {row['fastest_not_int8']} "
              f"{row['fastest_not_int8_ms']:6.1f} ms = {row['ratio']:.2f}x "
              f"(target <= 0.50x: {'met' if row['ratio'] <= 0.5 else 'NOT met'})  [{row['cpu']}"
              + (f", ONEDNN_MAX_CPU_ISA={row['onednn_max_cpu_isa']}" if row["onednn_max_cpu_isa"]
                 else "") + "]")
    path = write_result("benchmark_int8_speed", {
        "checkpoint": args.checkpoint, "threads": args.threads, "repetitions": args.repetitions,
        "input": [360, 480], "batch": 1, "cases": rows,
        "summary": {f"{case} int8 vs fastest not int8": row["ratio"] for case, row in rows.items()}},
        "benchmark")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
