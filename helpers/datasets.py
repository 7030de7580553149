"""Datasets for training and evaluation: the :class:`SegmentationDataset` of (image,
mask) pairs, the CamVid and folder builders, seeded splits and class weighting.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .checks import inspect_dataset, size_mismatch
from .config import Config, project_path
from .downloads import CAMVID_SPLITS, find_camvid
from .errors import SplitError, one_line
from .files import atomic_write
from .imageio import encode_mask, mask_grid, orient, read_photo, read_raw_mask
from .labels import CAMVID_CLASSES, ClassInfo, load_class_file
from .pairs import _relative, dataset_pairs, pair_files


def split_pairs(
    pairs: Sequence[tuple[Path, Path]], seed: int = 42, fractions=(0.8, 0.1, 0.1)
) -> dict[str, list[tuple[Path, Path]]]:
    """Return a seeded train/val/test split of pairs (sorted by name first, so it is stable).

    From 3 pairs on, the validation and test splits get at least one pair each.
    """
    ordered = sorted(pairs, key=lambda p: p[0].name)
    random.Random(seed).shuffle(ordered)
    n = len(ordered)
    n_val = round(n * fractions[1])
    n_test = n - round(n * fractions[0]) - n_val
    if n >= 3:  # never an empty validation or test split (a run would score nothing)
        n_val, n_test = max(1, n_val), max(1, n_test)
    n_train = n - n_val - n_test
    return {
        "train": ordered[:n_train],
        "val": ordered[n_train : n_train + n_val],
        "test": ordered[n_train + n_val :],
    }


SPLIT_HEADER = ("split", "image", "mask")


def split_file(name: str, splits_dir: str | Path | None = None) -> Path:
    """Return the path of a saved split: ``data/splits/<name>.csv`` (or under ``splits_dir``)."""
    return Path(splits_dir or project_path("data", "splits")) / f"{name}.csv"


def load_or_make_split(
    images_dir, masks_dir, name: str, seed: int = 42, splits_dir: str | Path | None = None,
    pairs_file=None, pairs: Sequence[tuple[Path, Path]] | None = None, resplit: bool = False,
) -> dict[str, list[tuple[Path, Path]]]:
    """Return the split of a dataset, reading ``data/splits/<name>.csv`` or writing it first.

    The CSV keeps file names only (paths relative to the pairs file's folder for a
    ``pairs_file`` dataset), so the same split is reused on every run and machine. It is
    written atomically, and checked against the dataset on every use (:func:`read_split`,
    :func:`check_split`): a file that does not parse, pairs added to or gone from the dataset
    since, or an empty split raise :class:`SplitError` naming the file and the fix.
    ``resplit`` writes a new split in place of the saved one. ``pairs`` are the dataset's
    pairs when the caller has paired it already (:func:`helpers.checks.inspect_dataset`).
    """
    csv_path = split_file(name, splits_dir)
    if pairs_file:
        base = Path(pairs_file).parent
        bases = (base, base)
    else:
        bases = (Path(images_dir), Path(masks_dir))
    if pairs is None:
        pairs, problems = dataset_pairs(images_dir, masks_dir, pairs_file)
        if problems:
            raise ValueError("cannot split, fix these first:\n" + "\n".join(problems))
    if csv_path.is_file() and not resplit:
        split = read_split(csv_path, bases)
        check_split(split, pairs, csv_path)
        return split
    if len(pairs) < 3:
        raise SplitError(f"{len(pairs)} image/mask pair(s): a train, a validation and a test "
                         "split need at least 3 (10 or more to be of use)")
    split = split_pairs(pairs, seed)
    with atomic_write(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SPLIT_HEADER)
        for split_name in CAMVID_SPLITS:
            for image_path, mask_path in split[split_name]:
                writer.writerow([split_name, _relative(image_path, bases[0]),
                                 _relative(mask_path, bases[1])])
    return split


_RESPLIT = ("make a new one with --resplit (python -m helpers.data split ... --resplit, or "
            "helpers.train --resplit; it changes which photos are test photos, so retrain "
            "before scoring)")


def read_split(csv_path: str | Path, bases: tuple[Path, Path]) -> dict[str, list[tuple[Path, Path]]]:
    """Return a saved split's pairs by split, paths joined to ``bases`` (images, masks folders).

    Raises :class:`SplitError` (naming the file and line) for a header or a row that does not
    parse, or a pair listed twice: what a write cut short or an edit by hand leaves.
    """
    csv_path = Path(csv_path)
    split: dict[str, list[tuple[Path, Path]]] = {s: [] for s in CAMVID_SPLITS}
    try:
        with csv_path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise SplitError(f"{csv_path}: not a split file ({one_line(error)}); {_RESPLIT}") from None
    if not rows or tuple(cell.strip().lower() for cell in rows[0]) != SPLIT_HEADER:
        got = ",".join(rows[0]) if rows else "an empty file"
        raise SplitError(f"{csv_path}, line 1: expected the header 'split,image,mask', got "
                         f"{got[:60]!r}; the file is damaged or not a split: {_RESPLIT}")
    seen: dict[tuple[str, str], int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row]
        if len(cells) != 3 or cells[0] not in CAMVID_SPLITS or not cells[1] or not cells[2]:
            raise SplitError(f"{csv_path}, line {line}: expected 'train|val|test,IMAGE,MASK', "
                             f"got {','.join(row)[:80]!r} (a file cut short?): {_RESPLIT}")
        if (cells[1], cells[2]) in seen:
            raise SplitError(f"{csv_path}, line {line}: {cells[1]} is listed again (first on "
                             f"line {seen[cells[1], cells[2]]}): {_RESPLIT}")
        seen[cells[1], cells[2]] = line
        split[cells[0]].append((bases[0] / cells[1], bases[1] / cells[2]))
    return split


def check_split(split: dict[str, list[tuple[Path, Path]]], pairs: Sequence[tuple[Path, Path]],
                csv_path: str | Path) -> None:
    """Raise :class:`SplitError` unless a saved split holds exactly the dataset's ``pairs`` and
    none of its train, validation and test splits is empty."""
    def key(pair):
        return tuple(Path(p).resolve() for p in pair)

    listed = {key(pair): pair for pairs_of_split in split.values() for pair in pairs_of_split}
    present = {key(pair): pair for pair in pairs}
    added = [present[k][0].name for k in present.keys() - listed.keys()]
    gone = [listed[k][0].name for k in listed.keys() - present.keys()]
    found = []
    if added:
        found.append(f"{len(added)} pair(s) of the dataset are not in it, added since it was "
                     f"made ({_names(added)})")
    if gone:
        found.append(f"{len(gone)} of its pair(s) are no longer in the dataset, removed, renamed "
                     f"or re-paired ({_names(gone)})")
    if found:
        raise SplitError(f"{csv_path}: the saved split does not match the dataset: "
                         f"{'; '.join(found)}. Restore the dataset, or {_RESPLIT}")
    for name, title in (("train", "training"), ("val", "validation"), ("test", "test")):
        if not split[name]:
            raise SplitError(f"{csv_path}: the {title} split is empty (no row starts with "
                             f"'{name},'): {_RESPLIT}")


def _names(names: list[str], shown: int = 3) -> str:
    names = sorted(names)
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def camvid_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """Return the (image, mask) pairs of an official CamVid split."""
    if split not in CAMVID_SPLITS:
        raise ValueError(f"split must be one of {CAMVID_SPLITS}, not {split!r}")
    root = Path(root)
    pairs, problems = pair_files(root / split, root / f"{split}annot")
    if problems:
        raise ValueError(f"CamVid {split} split is damaged:\n" + "\n".join(problems))
    return pairs


class SegmentationDataset:
    """A map-style dataset of (image, mask) pairs.

    Items are ``(image, mask)``: a float32 tensor (3, H, W) on the 0-1 scale (normalization
    belongs to the model, see :mod:`helpers.models`) and an int64 tensor (H, W) of training ids
    with :data:`IGNORE_INDEX`. ``transform`` is an albumentations transform applied jointly.
    Photos are turned upright by their EXIF orientation, and so is each mask drawn on the
    stored pixels: ``mask_grids`` (from :func:`inspect_dataset`) says which masks those are;
    masks it does not list are matched by :func:`mask_grid` when loaded.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        classes: ClassInfo,
        transform: Callable | None = None,
        cache: bool = False,
        mask_grids: dict[Path, str] | None = None,
    ):
        self.pairs = list(pairs)
        self.classes = classes
        self.transform = transform
        self.mask_grids = {Path(m).resolve(): g for m, g in (mask_grids or {}).items()}
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the untransformed pair: uint8 RGB (H, W, 3) and uint8 mask (H, W)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        image_path, mask_path = self.pairs[index]
        photo, orientation = read_photo(image_path)
        mask = read_raw_mask(mask_path)
        grid = self.mask_grids.get(Path(mask_path).resolve()) or mask_grid(photo, orientation, mask)
        if grid is None:
            raise ValueError(size_mismatch(image_path, mask_path, photo.shape[:2], orientation,
                                           mask.shape[:2])
                             + "; run `python -m helpers.data check` on the dataset")
        if grid == "raw":
            mask = orient(mask, orientation)
        pair = orient(photo, orientation), encode_mask(mask, self.classes)
        if self._cache is not None:
            self._cache[index] = pair
        return pair

    def __getitem__(self, index: int):
        import torch

        from .transforms import to_tensor

        image, mask = self.load(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return to_tensor(image), torch.from_numpy(np.ascontiguousarray(mask)).long()


def class_pixel_counts(dataset: SegmentationDataset, progress: bool = False) -> np.ndarray:
    """Return the labelled-pixel count of each class over a dataset (ignored pixels excluded)."""
    from tqdm.auto import tqdm

    counts = np.zeros(dataset.classes.num_classes, dtype=np.int64)
    for index in tqdm(range(len(dataset)), desc="counting", disable=not progress, leave=False):
        _, mask = dataset.load(index)
        counts += np.bincount(mask.ravel(), minlength=256)[: dataset.classes.num_classes]
    return counts


def median_frequency_weights(counts: np.ndarray, image_counts: np.ndarray | None = None):
    """Return SegNet's median-frequency class weights, ``median(freq) / freq``.

    ``freq[c]`` is the pixel count of class c divided by the pixel count of the images where
    c appears (Eigen & Fergus); with no ``image_counts`` the total pixel count is used.
    Classes never seen get weight 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum() if image_counts is None else np.asarray(image_counts, dtype=np.float64)
    freq = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    seen = freq > 0
    weights = np.zeros_like(freq)
    weights[seen] = np.median(freq[seen]) / freq[seen]
    return weights


def camvid_datasets(config: Config, root: str | Path | None = None, train_transform=None,
                    eval_transform=None) -> dict[str, SegmentationDataset]:
    """Return CamVid's train/val/test datasets, limited to the profile's image counts."""
    from .transforms import eval_transform as default_eval
    from .transforms import train_transform as default_train

    root = find_camvid(root)
    limits = {
        "train": config.max_train_images,
        "val": config.max_val_images,
        "test": config.max_test_images,
    }
    transforms = {
        "train": train_transform or default_train(config.crop_size, config.rotate_limit,
                                                   config.scale_limit),
        "val": eval_transform or default_eval(),
        "test": eval_transform or default_eval(),
    }
    datasets = {}
    for split in CAMVID_SPLITS:
        pairs = camvid_pairs(root, split)
        if limits[split] is not None:
            pairs = evenly_spaced(pairs, limits[split])
        datasets[split] = SegmentationDataset(
            pairs, CAMVID_CLASSES, transforms[split], cache=config.cache_images
        )
    return datasets


def build_datasets(config: Config, train_transform=None, eval_transform=None,
                   resplit: bool = False):
    """Return the train/val/test datasets a configuration names (CamVid or a folder dataset).

    A folder dataset (two folders, or a pairs file) is paired and checked first
    (:func:`inspect_dataset`) and split 80/10/10 with the split saved as
    ``data/splits/<split_name(config)>.csv`` and checked on every use
    (:func:`load_or_make_split`; ``resplit`` replaces it with a new split).
    """
    if config.dataset == "camvid":
        return camvid_datasets(config, None, train_transform, eval_transform)
    if config.dataset != "folder":
        raise ValueError(f"dataset must be 'camvid' or 'folder', not {config.dataset!r}")
    from .transforms import eval_transform as default_eval
    from .transforms import train_transform as default_train

    if not ((config.pairs_file or (config.images_dir and config.masks_dir)) and config.class_file):
        raise ValueError("a folder dataset needs images_dir and masks_dir (or pairs_file), "
                         "and class_file")
    classes = load_class_file(config.class_file)
    found = inspect_dataset(config.images_dir, config.masks_dir, classes,
                            pairs_file=config.pairs_file)
    if found.problems:
        raise ValueError(
            f"{len(found.problems)} problem(s) in the dataset:\n" + "\n".join(found.problems)
            + "\nfix them (python -m helpers.data check ...) before training"
        )
    for note in found.notes:
        print(f"note: {note}")
    split = load_or_make_split(config.images_dir, config.masks_dir, split_name(config),
                               config.seed, pairs_file=config.pairs_file, pairs=found.pairs,
                               resplit=resplit)
    transforms = {
        "train": train_transform or default_train(config.crop_size, config.rotate_limit,
                                                   config.scale_limit),
        "val": eval_transform or default_eval(),
        "test": eval_transform or default_eval(),
    }
    return {
        s: SegmentationDataset(split[s], classes, transforms[s], cache=config.cache_images,
                               mask_grids=found.mask_grids)
        for s in CAMVID_SPLITS
    }


def dataset_name(config: Config) -> str:
    """Return a short name for a configuration's dataset: ``camvid``, the pairs file's stem,
    or the images folder's name (its parent's when the folder is called ``images``)."""
    if config.dataset == "camvid":
        return "camvid"
    if config.pairs_file:
        return Path(config.pairs_file).stem
    if not config.images_dir:
        return "folder"
    images = Path(config.images_dir).resolve()
    return images.parent.name if images.name.lower() == "images" else images.name


def split_name(config: Config) -> str:
    """Return the name of a folder dataset's saved split (``data/splits/<name>.csv``): the
    configuration's ``split_name``, else the dataset's name (:func:`dataset_name`)."""
    return config.split_name or dataset_name(config)


def evenly_spaced(items: Sequence, count: int) -> list:
    """Return ``count`` items spread evenly over a sequence (CamVid is ordered by video)."""
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]
