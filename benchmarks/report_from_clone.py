"""Time ``make report`` as a new user runs it: a fresh clone, its set-up included.

Clones the repository's committed state into ``--where`` (with ``shared`` beside the clone, linked
to this checkout's ``../shared``, where CamVid and the campus photos are), empties the runtime
and epoch-time caches (``SEG_CACHE_DIR`` in the clone), runs ``make report`` there and prints
the wall time, the set-up's share, the seconds of each notebook and each network's epochs and
test mIoU::

    python benchmarks/report_from_clone.py [--native-bf16 0] [--where /tmp/report-clone] [--save]

``--native-bf16 0`` runs it with ``SEG_NATIVE_BF16=0``: the CPU's bf16 flags hidden, so
everything trains and runs in float32, the stand-in for a CPU without native bf16. ``--save``
writes ``results/report_clone_<bf16|float32>.json``, which ``python -m helpers.report`` shows
on docs/speed.md. The clone is kept (its notebooks, figures and results are the report's).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helpers.provenance import clean_json  # noqa: E402
from helpers.report import write_result  # noqa: E402

MODELS = ("unet-effnet-lite0", "mini-unet", "deeplabv3plus-effnet-lite0")


def clone(where: Path) -> Path:
    """Return a fresh clone of this repository's HEAD in ``where``, ``../shared`` linked beside."""
    target = where / ROOT.name
    if target.exists():
        shutil.rmtree(target)
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True)
    shared = where / "shared"
    if not shared.exists():
        shared.symlink_to((ROOT.parent / "shared").resolve())
    return target


def timed(command: list[str], cwd: Path, env: dict, log) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - started


def model_rows(folder: Path) -> dict:
    """Each network's epochs, training seconds, test mIoU and time-budget decision."""
    rows = {}
    for model in MODELS:
        path = folder / "results" / f"{model}.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        config = result.get("config", {})
        rows[model] = {"epochs_run": result.get("epochs_run"), "best_epoch": result.get("best_epoch"),
                       "train_seconds": result.get("train_seconds"),
                       "test_miou": result.get("test", {}).get("miou"),
                       "test_miou_flip_tta": (result.get("test_flip_tta") or {}).get("miou"),
                       "time_budget": config.get("time_budget")}
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--where", type=Path, default=Path("/tmp/report-clone"))
    parser.add_argument("--native-bf16", choices=("auto", "0"), default="auto",
                        help="0: SEG_NATIVE_BF16=0 (bf16 flags hidden, float32 throughout)")
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args(argv)

    variant = "float32" if args.native_bf16 == "0" else "bf16"
    folder = clone(args.where.resolve() / variant)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEG_", "VIRTUAL_ENV"))}
    env["SEG_CACHE_DIR"] = str(folder / "build" / "cache")
    if args.native_bf16 == "0":
        env["SEG_NATIVE_BF16"] = "0"
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True,
                          text=True, check=True).stdout.strip()
    print(f"fresh clone {folder} ({head}), SEG_NATIVE_BF16={env.get('SEG_NATIVE_BF16', '(unset)')}",
          flush=True)
    log_path = folder / "build" / "report.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        setup_seconds = timed(["make", "setup"], folder, env, log)
        print(f"make setup: {setup_seconds:.0f} s", flush=True)
        report_seconds = timed(["make", "report"], folder, env, log)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    record = json.loads((folder / "results" / "report_run.json").read_text())
    total = setup_seconds + report_seconds
    data = {
        "command": ("SEG_NATIVE_BF16=0 " if variant == "float32" else "") + "make report "
                   "(a fresh clone, its set-up included; python benchmarks/report_from_clone.py)",
        "variant": variant,
        "profile": record["profile"],
        "hardware": record["hardware"],
        "git_commit": record["git_commit"],
        "wall_seconds": round(total, 1),
        "setup_seconds": round(setup_seconds, 1),
        "report_seconds": round(report_seconds, 1),
        "notebook_seconds": {e["notebook"]: e["seconds"] for e in record["notebooks"]},
        "failed": record["failed"],
        "max_rss_mib": round(peak_kb / 1024),
        "models": model_rows(folder),
    }
    print(f"{data['hardware']['summary']}: {total / 60:.1f} min in all ({setup_seconds:.0f} s set-up, "
          f"{report_seconds:.0f} s make report), peak {data['max_rss_mib']} MiB")
    for name, seconds in data["notebook_seconds"].items():
        print(f"  {name}: {seconds:.0f} s")
    for model, row in data["models"].items():
        print(f"  {model}: {row['epochs_run']} epochs, {row['train_seconds'] or 0:.0f} s training, "
              f"test mIoU {row['test_miou']:.4f}")
    if record["failed"]:
        print(f"failed notebooks: {record['failed']} (log: {log_path})", file=sys.stderr)
    if args.save:
        print(write_result(f"report_clone_{variant}", clean_json(data), "quick"))
    return 1 if record["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
