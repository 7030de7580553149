"""Checking a folder dataset of your own labelled photos, and writing a resized copy.

:func:`inspect_dataset` pairs photos with masks, reports every problem naming its file and
decides which grid (raw or oriented, see :func:`helpers.imageio.mask_grid`) each mask follows;
:func:`resize_dataset` writes a smaller copy with those orientations applied.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .files import atomic_write
from .imageio import _pack_rgb, mask_grid, orient, read_photo, read_raw_mask, working_size
from .labels import ClassInfo
from .pairs import dataset_pairs


@dataclass
class DatasetCheck:
    """What :func:`inspect_dataset` found: the pairs, every problem (one line each, naming the
    file), the grid each rotated photo's mask follows (``"raw"`` or ``"oriented"``, see
    :func:`mask_grid`) and notes to show the user once."""

    pairs: list[tuple[Path, Path]]
    problems: list[str]
    mask_grids: dict[Path, str]
    notes: list[str]


def inspect_dataset(images_dir=None, masks_dir=None, classes: ClassInfo | None = None,
                    progress: bool = True, pairs_file=None) -> DatasetCheck:
    """Check a dataset and find the grid each mask follows.

    Checks pairing, that each file can be read, that each mask has the size of its photo as
    displayed or as stored (EXIF orientation applied or not: MATLAB ignores it) and, given
    ``classes``, that mask values belong to the class file. A mask that fits both grids
    equally well takes the grid most of the dataset's masks follow.
    """
    from tqdm.auto import tqdm

    pairs, problems = dataset_pairs(images_dir, masks_dir, pairs_file)
    grids: dict[Path, str] = {}
    for image_path, mask_path in tqdm(pairs, desc="checking", disable=not progress, leave=False):
        try:
            photo, orientation = read_photo(image_path)
        except Exception as error:  # noqa: BLE001 - any decoder error means "unreadable"
            problems.append(f"{image_path}: unreadable image ({error})")
            photo = None
        try:
            raw = read_raw_mask(mask_path)
        except Exception as error:  # noqa: BLE001
            problems.append(f"{mask_path}: unreadable mask ({error})")
            continue
        if photo is not None:
            grid = mask_grid(photo, orientation, raw)
            if grid is None:
                problems.append(size_mismatch(image_path, mask_path, photo.shape[:2], orientation,
                                              raw.shape[:2]))
            elif orientation != 1:
                grids[mask_path] = grid
        if classes is not None:
            problems.extend(_label_problems(mask_path, raw, classes))
    return DatasetCheck(pairs, problems, *_settle_grids(grids, len(pairs)))


def _settle_grids(grids: dict[Path, str], count: int) -> tuple[dict[Path, str], list[str]]:
    """Give undecided masks the dataset's majority grid; return the grids and the notes."""
    decided = [g for g in grids.values() if g != "unknown"]
    fallback = "raw" if decided.count("raw") > decided.count("oriented") else "oriented"
    unknown = sorted(m for m, g in grids.items() if g == "unknown")
    grids = {m: (fallback if g == "unknown" else g) for m, g in grids.items()}
    notes = []
    raw = sorted(m for m, g in grids.items() if g == "raw")
    if raw:
        notes.append(
            f"{len(raw)} of {count} mask(s) follow their photo's pixels as stored, not its EXIF "
            "orientation (as MATLAB's imread reads photos): the orientation is applied to those "
            f"masks too ({_names(raw)})"
        )
    if unknown:
        notes.append(
            f"{len(unknown)} mask(s) fit both the stored and the displayed grid of their rotated "
            f"or mirrored photo ({_names(unknown)}); taken as {fallback}, like the rest of the "
            "dataset: check them with an overlay"
        )
    return grids, notes


def _names(paths: list[Path], shown: int = 3) -> str:
    names = ", ".join(p.name for p in paths[:shown])
    return names + (f" and {len(paths) - shown} more" if len(paths) > shown else "")


def size_mismatch(image_path, mask_path, photo_size, orientation, mask_size) -> str:
    """Return the problem line of a mask whose size fits neither grid of its photo."""
    height, width = photo_size
    text = (f"{mask_path}: mask is {mask_size[1]}x{mask_size[0]} but image {Path(image_path).name} "
            f"is {width}x{height}")
    if orientation in (5, 6, 7, 8):
        text += f" as stored and {height}x{width} as displayed (EXIF orientation {orientation})"
    return text + " (width x height)"


def _label_problems(mask_path: Path, raw: np.ndarray, classes: ClassInfo) -> list[str]:
    if raw.ndim == 2:
        allowed = classes.known_values()
        bad = sorted(set(np.unique(raw).tolist()) - allowed)
        if bad:
            return [f"{mask_path}: label values {bad} are not in the class file "
                    f"(allowed: {sorted(allowed)})"]
        return []
    allowed_colors = {tuple(c) for c in classes.colors}
    if classes.ignore_color is not None:
        allowed_colors.add(tuple(classes.ignore_color))
    # One integer per colour: np.unique over RGB rows (axis=0) is far slower.
    colors = {(int(v) >> 16, (int(v) >> 8) & 255, int(v) & 255) for v in np.unique(_pack_rgb(raw))}
    bad = sorted(colors - allowed_colors)
    return [f"{mask_path}: colours {bad[:5]} are not in the class file"] if bad else []


def check_dataset(images_dir, masks_dir, classes: ClassInfo, progress: bool = True,
                  pairs_file=None) -> list[str]:
    """Return every problem of a dataset, one line each, naming the file (empty when fine).

    See :func:`inspect_dataset`; ``pairs_file`` replaces the two folders.
    """
    return inspect_dataset(images_dir, masks_dir, classes, progress, pairs_file).problems


def resize_dataset(
    images_dir, masks_dir, out_dir, max_side: int = 1024, progress: bool = True, pairs_file=None
) -> tuple[Path, Path]:
    """Write a resized copy of a dataset to ``out_dir/images`` and ``out_dir/masks``.

    The longer side becomes ``max_side`` (never enlarged), aspect ratio kept; images use area
    interpolation, masks nearest-neighbour so labels stay labels. EXIF orientation is applied
    to the photo, and to its mask when the mask follows the stored pixels (:func:`mask_grid`),
    then dropped. Each mask is named after its photo, so a pairs-file dataset (MATLAB's
    ``Label_N.png``) becomes two folders paired by name. The originals are never touched.
    Returns the two new folders.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    pairs, problems = dataset_pairs(images_dir, masks_dir, pairs_file)
    sources = {p.parent.resolve() for pair in pairs for p in pair}
    sources |= {Path(d).resolve() for d in (images_dir, masks_dir) if d}
    if {(out_dir / "images").resolve(), (out_dir / "masks").resolve()} & sources:
        raise ValueError(f"--out {out_dir} would overwrite the originals; choose a new folder")
    stems: dict[str, Path] = {}
    for image_path, _ in pairs:
        if image_path.stem in stems:
            problems.append(f"{image_path}: same name as {stems[image_path.stem]}; the resized "
                            "copy names files by photo, rename one of them")
        stems[image_path.stem] = image_path
    if problems:
        raise ValueError("cannot resize, fix these first:\n" + "\n".join(problems))
    out_images, out_masks = out_dir / "images", out_dir / "masks"
    out_images.mkdir(parents=True, exist_ok=True)
    out_masks.mkdir(parents=True, exist_ok=True)
    grids: dict[Path, str] = {}
    undecided = []
    for image_path, mask_path in tqdm(pairs, desc="resizing", disable=not progress):
        photo, orientation = read_photo(image_path)
        mask = read_raw_mask(mask_path)
        grid = mask_grid(photo, orientation, mask)
        if grid is None:
            raise ValueError(size_mismatch(image_path, mask_path, photo.shape[:2], orientation,
                                           mask.shape[:2]))
        if grid == "unknown":
            undecided.append((image_path, mask_path))
            continue
        grids[mask_path] = grid
        _write_resized(photo, orientation, mask, grid, image_path, out_images, out_masks, max_side)
    grids.update({m: "unknown" for _, m in undecided})
    grids, notes = _settle_grids(grids, len(pairs))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for image_path, mask_path in undecided:
        photo, orientation = read_photo(image_path)
        _write_resized(photo, orientation, read_raw_mask(mask_path), grids[mask_path],
                       image_path, out_images, out_masks, max_side)
    return out_images, out_masks


def _write_resized(photo, orientation, mask, grid, image_path, out_images, out_masks, max_side):
    import cv2

    image = orient(photo, orientation)
    if grid == "raw":
        mask = orient(mask, orientation)
    height, width = working_size(*image.shape[:2], max_side)
    if (height, width) != image.shape[:2]:
        size = (width, height)
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    jpeg = image_path.suffix.lower() in (".jpg", ".jpeg")
    with atomic_write(out_images / f"{image_path.stem}{'.jpg' if jpeg else '.png'}", "wb") as out:
        Image.fromarray(image).save(out, "JPEG" if jpeg else "PNG", quality=95)
    with atomic_write(out_masks / f"{image_path.stem}.png", "wb") as out:
        Image.fromarray(mask).save(out, "PNG")
