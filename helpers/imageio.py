"""Photos and masks in and out: the one photo decoder, mask reading, long-side scaling, encoding.

:func:`decode_photo` decodes every photo the project reads (the datasets through
:func:`read_image`, prediction and the web app directly): a size guard before decoding,
EXIF orientation, and reduced-scale JPEG decoding when a smaller picture is enough.

Photos keep their EXIF orientation; a mask may follow either the photo as displayed (oriented)
or its pixels as stored (raw: what MATLAB's ``imread`` and so Image Labeler see).
:func:`mask_grid` finds the grid a mask was drawn on, so the orientation can be applied to both.
Every mask read here holds class ids ``0..num_classes-1`` and :data:`IGNORE_INDEX`.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .labels import ClassInfo
from .metrics import IGNORE_INDEX

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")



class ImageTooLarge(ValueError):
    """An image with more pixels than the configured limit (refused before decoding)."""


def decode_photo(source, max_pixels: int | None = None, max_side: int | None = None):
    """Return ``(image, full_size)``: the photo as RGB uint8 and its (height, width) after EXIF.

    ``source`` is a path, bytes or a file object. With ``max_side`` the image may come back
    smaller than ``full_size`` (long side at least ``max_side`` when the photo is that large):
    JPEGs decode directly at 1/2, 1/4 or 1/8 scale (PIL draft mode, several times faster),
    other formats are decoded and shrunk. Grayscale, palette, RGBA, CMYK and 16-bit images are
    converted. Raises :class:`ImageTooLarge` over ``max_pixels`` (checked from the header,
    before decoding) and ``ValueError`` for anything that is not a readable image.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise ValueError("the file is empty (0 bytes)")
        source = io.BytesIO(source)
    try:
        image = Image.open(source)
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(str(error)) from error
    except UnidentifiedImageError as error:
        raise ValueError("not an image file (unknown format)") from error
    except (OSError, SyntaxError, ValueError) as error:  # PIL's ways of saying "damaged"
        raise ValueError(f"not an image file that can be read ({error})") from error
    with image:
        stored_width, stored_height = image.size
        if max_pixels is not None and stored_width * stored_height > max_pixels:
            raise ImageTooLarge(
                f"image is {stored_width}x{stored_height} pixels, more than the limit of "
                f"{max_pixels:,} pixels")
        try:
            orientation = int(image.getexif().get(EXIF_ORIENTATION, 1))
        except Exception:  # noqa: BLE001 - a damaged EXIF block: show the pixels as stored
            orientation = 1
        full_size = ((stored_width, stored_height) if orientation in (5, 6, 7, 8)
                     else (stored_height, stored_width))
        if max_side and max(stored_width, stored_height) > max_side and image.format == "JPEG":
            scale = max_side / max(stored_width, stored_height)
            image.draft(None, (math.ceil(stored_width * scale), math.ceil(stored_height * scale)))
        try:
            image.load()
            array = to_rgb_array(ImageOps.exif_transpose(image) if orientation != 1 else image)
        except Exception as error:  # noqa: BLE001 - decoders raise many types on damaged data
            raise ValueError(f"the image data cannot be decoded ({error})") from error
    if max_side and max(array.shape[:2]) > 2 * max_side:
        array = resize_image(array, working_size(*array.shape[:2], max_side))
    return array, full_size


def read_image(source, max_pixels: int | None = None) -> np.ndarray:
    """Return an RGB uint8 array (H, W, 3) with the EXIF orientation applied.

    ``source`` is a path, bytes or a file object. Grayscale, palette, RGBA, CMYK and 16-bit
    images are converted. ``max_pixels`` rejects larger images before decoding them
    (:class:`ImageTooLarge`, a ``ValueError``), which stops decompression bombs; see
    :func:`decode_photo`.
    """
    return decode_photo(source, max_pixels)[0]


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


def list_images(folder: str | Path, suffixes=IMAGE_SUFFIXES) -> list[Path]:
    """Return the image files of a folder (not recursive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


# --------------------------------------------------------------------------- sizes and encoding


def working_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """Return (height, width) scaled so the longer side is at most ``max_side`` (never enlarged)."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Return an RGB uint8 image resized to (height, width).

    Area averaging when shrinking by more than 1.5x (no aliasing), bilinear otherwise (several
    times faster, and aliasing-free for mild factors).
    """
    import cv2

    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = height * 1.5 <= image.shape[0] and width * 1.5 <= image.shape[1]
    return cv2.resize(image, (width, height),
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def encode_png(array: np.ndarray) -> bytes:
    """Return PNG bytes of a uint8 array: (H, W) one channel, or (H, W, 3) RGB."""
    import cv2

    if array.ndim == 3:
        array = array[..., ::-1]  # OpenCV writes BGR
    ok, data = cv2.imencode(".png", np.ascontiguousarray(array), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


def encode_jpeg(image: np.ndarray, quality: int = 88) -> bytes:
    """Return JPEG bytes of an RGB uint8 image (H, W, 3)."""
    import cv2

    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()
