"""Time the smoke-profile training run in one process and under torchrun with N CPU processes.

    python benchmarks/distributed_smoke.py [--processes 2] [--repeats 2] [--profile smoke]

A correctness check of the distributed path (gloo on the CPU) with its wall time, not a scaling
figure: on a machine with few cores the processes share them, and process start-up and the
process group's setup weigh heavily in a run of seconds. Runs alternate (one process, then N,
then again) so a shared machine's load falls on both alike. Prints the wall time of each run,
the medians and each run's final validation mIoU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from helpers.config import repo_root


def train_once(processes: int, profile: str, out: Path) -> tuple[float, dict]:
    """Train one run into ``out``; return its wall time (s) and its last history row."""
    command = [sys.executable, "-m", "helpers.train", "--profile", profile, "--out", str(out)]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={processes}", *command[1:]]
    started = time.perf_counter()
    subprocess.run(command, cwd=repo_root(), check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    return seconds, json.loads((out / "history.json").read_text())[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", default="smoke")
    args = parser.parse_args(argv)
    # One process uses torch's default threads (all cores); torchrun gives each of its
    # processes one thread (OMP_NUM_THREADS=1) unless the variable is set.
    print(f"{platform.machine()}, {len(os.sched_getaffinity(0))} core(s); "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    times: dict[int, list[float]] = {1: [], args.processes: []}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for processes in (1, args.processes):
                out = Path(folder) / f"p{processes}-r{repeat}"
                seconds, last = train_once(processes, args.profile, out)
                times[processes].append(seconds)
                print(f"{processes} process(es), run {repeat + 1}: {seconds:.1f} s wall, "
                      f"{last['epoch']} epochs, val mIoU {last['val_miou']:.4f}, "
                      f"world_size {last.get('world_size', 1)}")
    for processes, values in times.items():
        print(f"median over {len(values)} runs, {processes} process(es): "
              f"{statistics.median(values):.1f} s wall (start-up included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
