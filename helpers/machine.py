"""The machine the code runs on: DataLoader workers for its cores, and how long a call takes.

Imports nothing from the project: the training loop, the evaluation, the notebooks and the
benchmarks size their loaders and time their calls the same way.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable


def default_workers() -> int:
    """Return DataLoader workers for this machine: 0 with fewer than 4 cores, where workers
    compete with the compute threads (measured fastest on 2 cores), else half the cores, at
    most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 if (cores or 1) < 4 else min(8, cores // 2)


def latency_ms(run: Callable[[], object], repetitions: int = 20, warmup: int = 3,
               device=None) -> dict:
    """Return timings of ``run()`` in milliseconds: ``median_ms``, ``p90_ms``, ``min_ms`` over
    ``repetitions`` timed calls after ``warmup`` untimed ones, and ``repetitions``.

    With a CUDA ``device`` each call is followed by a synchronisation, so the time covers the
    kernels, not only their launch.
    """
    def call():
        run()
        if device is not None and getattr(device, "type", device) == "cuda":
            import torch

            torch.cuda.synchronize()

    for _ in range(warmup):
        call()
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - start))
    times.sort()
    return {"median_ms": statistics.median(times),
            "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
            "min_ms": times[0], "repetitions": repetitions}
