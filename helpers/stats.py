"""Per-channel mean and standard deviation of a set of images, computed streaming.

Pretrained encoders keep the statistics they were trained with (see ``helpers.models``); the
from-scratch network normalizes with the statistics of its own training images.

Command line::

    python -m helpers.stats --images data/CamVid/train --json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .files import write_json
from .imageio import list_images, read_image


def channel_stats(images: Iterable, progress: bool = False, total: int | None = None) -> dict:
    """Return ``{"mean": [r, g, b], "std": [r, g, b], "pixels": n}`` on the 0-1 scale.

    ``images`` yields paths or uint8 RGB arrays. Sums are kept in float64, one image in memory
    at a time; the standard deviation is the population one over all pixels.
    """
    from tqdm.auto import tqdm

    total_sum = np.zeros(3, dtype=np.float64)
    total_square = np.zeros(3, dtype=np.float64)
    pixels = 0
    for item in tqdm(images, desc="stats", total=total, disable=not progress, leave=False):
        array = read_image(item) if isinstance(item, str | Path) else np.asarray(item)
        values = array.reshape(-1, 3).astype(np.float64) / 255.0
        total_sum += values.sum(axis=0)
        total_square += np.square(values).sum(axis=0)
        pixels += values.shape[0]
    if pixels == 0:
        raise ValueError("no images to compute statistics from")
    mean = total_sum / pixels
    std = np.sqrt(np.maximum(total_square / pixels - mean**2, 0.0))
    return {"mean": mean.tolist(), "std": std.tolist(), "pixels": int(pixels)}


def cached_stats(image_paths: list[Path], json_path: str | Path, progress: bool = False) -> dict:
    """Return the statistics of some images, read from ``json_path`` or computed and saved there.

    The cache is reused only when it was computed over the same file names.
    """
    json_path = Path(json_path)
    names = sorted(p.name for p in image_paths)
    if json_path.is_file():
        cached = json.loads(json_path.read_text())
        if cached.get("images") == len(names) and cached.get("first") == names[:1]:
            return cached
    stats = channel_stats(image_paths, progress=progress, total=len(image_paths))
    stats.update(images=len(names), first=names[:1])
    write_json(json_path, stats)
    return stats


def training_stats(config, image_paths: list[Path], progress: bool = False) -> dict:
    """Return the statistics of a configuration's training images, cached next to its split.

    The cache is ``data/splits/<dataset>_train_stats.json`` for a full training split, and
    under ``build/`` for the subsets of the smoke profile, so a quick test never replaces it.
    """
    from .config import project_path

    name = "camvid" if config.dataset == "camvid" else (config.split_name or "own")
    if config.max_train_images is None:
        path = project_path("data", "splits", f"{name}_train_stats.json")
    else:
        # Subsets of one size differ by their images: the file names' digest names the cache.
        digest = hashlib.sha1("\n".join(sorted(Path(p).name for p in image_paths)).encode()).hexdigest()[:12]
        path = project_path("build", "stats", f"{name}_{len(image_paths)}_{digest}_train_stats.json")
    return cached_stats(image_paths, path, progress=progress)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.stats", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="folder of training images")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    try:
        paths = list_images(args.images)
        stats = channel_stats(paths, progress=not args.json, total=len(paths))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"mean": stats["mean"], "std": stats["std"]}))
    else:
        print(f"{len(paths)} images, {stats['pixels']:,} pixels")
        print("mean (R, G, B):", ", ".join(f"{v:.4f}" for v in stats["mean"]))
        print("std  (R, G, B):", ", ".join(f"{v:.4f}" for v in stats["std"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
