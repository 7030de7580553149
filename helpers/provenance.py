"""Where a result came from: the hardware that produced it, the git commit, and JSON-safe values.

Every results file (``helpers.report``, the label-efficiency study, the benchmarks) records these,
so a number in the README can always name its machine and code.
"""

from __future__ import annotations

import math
import subprocess

from .config import project_path


def hardware() -> dict:
    """Return a description of the machine: CPU model, bf16 capability and cores, GPU if any,
    torch threads."""
    import os

    import torch

    from .precision import cpu_info

    # The model name from /proc/cpuinfo; it says so where SEG_NATIVE_BF16=0 hides the bf16 flags.
    cpu = cpu_info().model
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    native_bf16 = cpu_info().native_bf16
    info = {"cpu": cpu, "cpu_native_bf16": native_bf16, "cpu_bf16_flags": cpu_info().bf16_flags,
            "cores": cores, "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    bf16 = "native bf16" if native_bf16 else "no native bf16"
    info["summary"] = f"{info['gpu']}" if info["gpu"] else f"{cores} CPU cores ({cpu}, {bf16})"
    return info


def git_commit() -> str | None:
    """Return the current git commit (with ``-dirty`` when files changed), or None."""
    try:
        root = project_path()
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def clean_json(value):
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value
