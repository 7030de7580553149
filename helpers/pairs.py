"""Pairing photos with their masks: by file name in two folders, or from a CSV pairs
file (MATLAB Image Labeler's ``Label_N.png`` masks), and writing such a file.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from .files import atomic_write
from .imageio import IMAGE_SUFFIXES, MASK_SUFFIXES, list_images


def pair_files(images_dir, masks_dir) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair images with masks by file stem.

    Returns the pairs and a list of problems (image without mask, mask without image,
    two files with the same stem, a symbolic link whose target is gone).
    """
    problems: list[str] = []
    mask_suffixes = MASK_SUFFIXES + (".jpg", ".jpeg")
    images = _by_stem(list_images(images_dir), problems)
    masks = _by_stem(list_images(masks_dir, mask_suffixes), problems)
    # A link whose target is gone is reported as such, and its partner is not "alone".
    broken_images = _dangling_links(images_dir, IMAGE_SUFFIXES, problems)
    broken_masks = _dangling_links(masks_dir, mask_suffixes, problems)
    for stem in sorted(images.keys() - masks.keys() - broken_masks.keys()):
        problems.append(f"{images[stem]}: image without mask (expected {Path(masks_dir) / stem}.png)")
    for stem in sorted(masks.keys() - images.keys() - broken_images.keys()):
        problems.append(f"{masks[stem]}: mask without image")
    for stem in sorted(masks.keys() & images.keys()):
        if masks[stem].suffix.lower() in (".jpg", ".jpeg"):
            problems.append(
                f"{masks[stem]}: JPEG mask; lossy compression changes label values, "
                "export masks as PNG"
            )
    pairs = [(images[s], masks[s]) for s in sorted(images.keys() & masks.keys())]
    return pairs, problems


def _dangling_links(folder, suffixes, problems: list[str]) -> dict[str, Path]:
    """Return the symbolic links of a folder whose targets do not exist, by stem, each with a
    problem line."""
    found = {}
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() in suffixes and path.is_symlink() and not path.exists():
            problems.append(f"{path}: a symbolic link to {os.readlink(path)}, which does not "
                            "exist; point it at the file or remove it")
            found[path.stem] = path
    return found


def _by_stem(paths: list[Path], problems: list[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        if path.stem in found:
            problems.append(f"{path}: same name as {found[path.stem]}; keep one of them")
        else:
            found[path.stem] = path
    return found


def read_pairs_file(path: str | Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Read a CSV of ``image,mask`` paths, one pair a row, and return the pairs and problems.

    The header names the columns ``image`` and ``mask`` (other columns are ignored; without a
    header the first two columns are taken). Relative paths are relative to the CSV's folder.
    A path that does not exist (an absolute path from another computer, e.g. MATLAB's on
    Windows) is looked for by file name in the CSV's folder and in a folder of the same name
    there (``PixelLabelData/Label_1.png``), so the CSV can travel with copies of the files.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such pairs file")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{path}: empty pairs file; expected a header 'image,mask' and one row per pair")
    header = [cell.strip().lower() for cell in rows[0]]
    if "image" in header and "mask" in header:
        columns, first = (header.index("image"), header.index("mask")), 2
    else:
        columns, first = (0, 1), 1
    pairs, problems = [], []
    seen_images: dict[Path, int] = {}
    seen_masks: dict[Path, int] = {}
    for line, row in enumerate(rows[first - 1:], start=first):
        if len(row) <= max(columns):
            problems.append(f"{path}, line {line}: expected an image and a mask path, got {row}")
            continue
        found = [_locate(row[c].strip(), path.parent) for c in columns]
        for kind, given, resolved in zip(("image", "mask"), (row[c] for c in columns), found,
                                         strict=True):
            link = _dangling(given.strip(), path.parent)
            if resolved is None and link is not None:
                problems.append(f"{path}, line {line}: {kind} {link} is a symbolic link to "
                                f"{os.readlink(link)}, which does not exist; point it at the "
                                "file or remove it")
            elif resolved is None:
                problems.append(f"{path}, line {line}: {kind} {given.strip()} not found (looked "
                                f"at that path and by name in {path.parent})")
        if None in found:
            continue
        image, mask = found
        for seen, file, kind in ((seen_images, image, "image"), (seen_masks, mask, "mask")):
            if file in seen:
                problems.append(f"{path}, line {line}: {kind} {file} is already paired on line "
                                f"{seen[file]}")
            seen.setdefault(file, line)
        if mask.suffix.lower() in (".jpg", ".jpeg"):
            problems.append(f"{mask}: JPEG mask; lossy compression changes label values, "
                            "export masks as PNG")
        pairs.append((image, mask))
    return pairs, problems


def _locate(given: str, base: Path) -> Path | None:
    """Return the file a pairs-file cell names (see :func:`read_pairs_file`), or None."""
    from pathlib import PureWindowsPath

    candidate = Path(given).expanduser()
    candidate = candidate if candidate.is_absolute() else base / candidate
    parts = PureWindowsPath(given).parts if "\\" in given else Path(given).parts
    for path in (candidate, *(base.joinpath(*tail) for tail in (parts[-2:], parts[-1:]) if tail)):
        if path.is_file():
            return Path(os.path.abspath(path))  # "a/../b" -> "b", symlinks kept
    return None


def _dangling(given: str, base: Path) -> Path | None:
    """Return the symbolic link a pairs-file cell names when its target is gone, else None."""
    candidate = Path(given).expanduser()
    candidate = candidate if candidate.is_absolute() else base / candidate
    return candidate if candidate.is_symlink() and not candidate.exists() else None


def dataset_pairs(images_dir=None, masks_dir=None, pairs_file=None
                  ) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Return a dataset's (image, mask) pairs and pairing problems: from a pairs file when one
    is given (:func:`read_pairs_file`), else the two folders paired by name. No pairs at all
    is a problem too."""
    if pairs_file:
        pairs, problems = read_pairs_file(pairs_file)
        where = f"{pairs_file}: no image/mask pairs (one row 'image,mask' per photo)"
    elif images_dir and masks_dir:
        pairs, problems = pair_files(images_dir, masks_dir)
        where = (f"{images_dir} and {masks_dir}: no image/mask pairs (each photo needs a mask "
                 "of the same name, e.g. IMG_1.jpg and IMG_1.png)")
    else:
        raise ValueError("give an images folder and a masks folder, or a pairs file (--pairs)")
    if not pairs:
        problems.append(where)
    return pairs, problems


def write_pairs_file(pairs: Sequence[tuple[Path, Path]], path: str | Path) -> Path:
    """Write pairs as a CSV of ``image,mask`` paths relative to the CSV's folder; return it."""
    path = Path(path)
    with atomic_write(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask"])
        for image_path, mask_path in pairs:
            writer.writerow([_relative(image_path, path.parent), _relative(mask_path, path.parent)])
    return path


def _relative(path: Path, base: Path) -> str:
    """Return ``path`` relative to ``base`` (with ``..`` where needed), POSIX-style."""
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()
