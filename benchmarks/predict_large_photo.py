"""Wall time and peak memory of predicting full-size campus phone photos, per strategy.

For each strategy (``resize``: the default single pass at long side 480 with banded logit
upsampling; ``tile``: sliding windows at long side 960) a fresh process loads the model, warms
it up, then predicts every photo: decode (JPEG draft mode) -> full-size mask -> overlay
(long side 1600), and separately the time to write the mask PNG and overlay JPEG. Peak memory
is the process's peak resident set size while predicting (``VmHWM``, reset after warm-up),
next to its size after loading the model. Target: a 12 MP photo in <= 1.5 s on 2 CPU cores
in the default mode.

    python benchmarks/predict_large_photo.py [--checkpoint CKPT] [--photos DIR] [--limit N]
        [--threads 2] [--modes resize tile] [--tile 384] [--runtimes auto onnx-int8]

``--runtimes`` runs each strategy once per runtime (default ``auto``, what the prediction
command picks); with ``onnx-int8`` (the int8 model beside the checkpoint, made by
``python -m helpers.quantize``) the results go to ``benchmark_large_photo_int8.json``.
"""

from __future__ import annotations

import os

# As the prediction command and the web app run (see helpers.predict): idle OpenMP threads
# sleep instead of spinning. Set OMP_WAIT_POLICY=ACTIVE to compare.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from helpers.config import project_path
from helpers.data import find_campus

DEFAULT_CHECKPOINT = "runs/quick/unet-effnet-lite0/best.pt"


def memory_mb(field: str) -> float:
    """Return a memory figure of this process from /proc/self/status (VmRSS, VmHWM) in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, in KB on Linux


def reset_peak_memory() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux); return whether it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(args) -> dict:
    """Predict every photo with one strategy in this process; return timings and memory."""
    import torch

    from helpers.imageio import encode_jpeg, encode_png
    from helpers.predict import Predictor

    torch.set_num_threads(args.threads)
    import cv2

    cv2.setNumThreads(args.threads)
    mode, _, runtime = args.worker.partition("/")
    predictor = Predictor(args.checkpoint, tile=args.tile if mode == "tile" else None,
                          runtime=runtime or "auto", progress=False)
    predictor.warmup()
    photos = sorted(Path(args.photos).glob("*.jpg"))[: args.limit]
    predictor.predict_file(photos[0])  # the first full-size call also sizes buffers
    loaded_mb = memory_mb("VmRSS")
    reset = reset_peak_memory()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for path in photos:
            start = time.perf_counter()
            prediction = predictor.predict_file(path)
            overlay = prediction.overlay()
            done = time.perf_counter()
            Path(folder, "mask.png").write_bytes(encode_png(prediction.mask))
            Path(folder, "overlay.jpg").write_bytes(encode_jpeg(overlay))
            written = time.perf_counter()
            rows.append({"photo": path.name, "width": prediction.width, "height": prediction.height,
                         "seconds": done - start, "seconds_with_files": written - start,
                         "steps_ms": {k: round(v) for k, v in prediction.timings.items()}})
    return {"mode": mode, "runtime": predictor.describe()["runtime"],
            "precision": predictor.describe()["precision"], "rows": rows, "loaded_mb": loaded_mb,
            "peak_mb": memory_mb("VmHWM"), "peak_reset": reset}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    parser.add_argument("--photos", default=None, help="default: the campus photos")
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["resize", "tile"], choices=["resize", "tile"])
    parser.add_argument("--tile", type=int, default=384)
    parser.add_argument("--runtimes", nargs="+", default=["auto"],
                        help="runtimes to run each strategy with (auto, onnx-int8, onnx, ...)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    checkpoint = Path(args.checkpoint)
    checkpoint = checkpoint if checkpoint.is_absolute() else project_path(args.checkpoint)
    scratch = tempfile.TemporaryDirectory()
    if not checkpoint.is_file():
        sys.path.insert(0, str(Path(__file__).parent))
        from inference_latency import untrained_checkpoint

        print(f"{checkpoint} not found: using an untrained unet-effnet-lite0 (timings of the "
              "network are the same; upsampling is faster where masks have fewer boundaries)")
        checkpoint = untrained_checkpoint(Path(scratch.name))
    args.photos = args.photos or str(find_campus())
    if not Path(args.photos).is_dir():
        print(f"error: {args.photos}: no such folder of photos (--photos)", file=sys.stderr)
        return 2
    print(f"{checkpoint}, {args.threads} threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY')}, photos from {args.photos}")
    summary = {}
    runs = [(mode, runtime) for mode in args.modes for runtime in args.runtimes]
    for mode, runtime in runs:
        key = mode if args.runtimes == ["auto"] else f"{mode}/{runtime}"
        command = [sys.executable, __file__, "--worker", f"{mode}/{runtime}",
                   "--checkpoint", str(checkpoint),
                   "--photos", args.photos, "--threads", str(args.threads), "--tile", str(args.tile)]
        if args.limit:
            command += ["--limit", str(args.limit)]
        environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        finished = subprocess.run(command, capture_output=True, text=True, env=environment)
        if finished.returncode != 0:
            print(finished.stderr, file=sys.stderr)
            return 1
        result = json.loads(finished.stdout.strip().splitlines()[-1])
        summary[key] = result
        print(f"\n{mode} ({'long side 480, one pass' if mode == 'resize' else f'long side 960, {args.tile}px windows'}), "
              f"{result['runtime']} in {result['precision']}:")
        for row in result["rows"]:
            steps = ", ".join(f"{k} {v}" for k, v in row["steps_ms"].items())
            print(f"  {row['photo']:<16} {row['width']}x{row['height']}  {row['seconds']:.2f} s "
                  f"({row['seconds_with_files']:.2f} s with files)  [{steps} ms]")
        twelve = [r for r in result["rows"] if 11e6 <= r["width"] * r["height"] <= 13e6]
        for label, rows in (("all photos", result["rows"]), ("12 MP photos", twelve)):
            if rows:
                seconds = [r["seconds"] for r in rows]
                with_files = [r["seconds_with_files"] for r in rows]
                print(f"  {label}: median {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s "
                      f"(decode -> mask -> overlay); with writing the files median "
                      f"{statistics.median(with_files):.2f} s")
        print(f"  memory: {result['loaded_mb']:.0f} MB after loading the model, peak "
              f"{result['peak_mb']:.0f} MB while predicting"
              + ("" if result["peak_reset"] else " (peak since the process started)"))
    for result in summary.values():
        twelve = [r["seconds"] for r in result["rows"] if 11e6 <= r["width"] * r["height"] <= 13e6]
        if twelve and result["mode"] == "resize":
            print(f"\n12 MP photo, default mode, {result['runtime']}: median "
                  f"{statistics.median(twelve):.2f} s end to end (target <= 1.5 s on 2 CPU cores)")
        elif twelve:
            print(f"\n12 MP photo, {result['mode']}, {result['runtime']}: median "
                  f"{statistics.median(twelve):.2f} s end to end")
    figures = {}
    for mode, result in summary.items():
        twelve = [r["seconds"] for r in result["rows"] if 11e6 <= r["width"] * r["height"] <= 13e6]
        if twelve:
            figures[f"{mode} 12MP median s"] = statistics.median(twelve)
        figures[f"{mode} peak MB"] = result["peak_mb"]
    from helpers.precision import cpu_info
    from helpers.report import write_result

    name = "benchmark_large_photo" + ("_int8" if "onnx-int8" in args.runtimes else "")
    write_result(name, {"checkpoint": str(checkpoint), "threads": args.threads,
                        "cpu": cpu_info().describe(), "modes": summary, "summary": figures},
                 "benchmark")
    return 0


if __name__ == "__main__":
    sys.exit(main())
