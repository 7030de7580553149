"""Photos and masks in and out: the one photo decoder, mask reading, long-side scaling, encoding.

:func:`decode_photo` decodes every photo the project reads for prediction and the web app
(the datasets read theirs through :func:`read_photo`), with bounded memory:

* only the photo formats of :func:`photo_formats` are opened (JPEG, PNG, WebP, TIFF, BMP, GIF,
  MPO; HEIF where a plugin such as pillow-heif is installed): Pillow's other decoders (EPS
  through Ghostscript, PSD, ICO, ...) are never reached;
* the pixel count and the memory decoding will take (:func:`decoding_bytes`, from the header:
  the decoded picture at the bit depth Pillow keeps, plus what each decoder holds beside it)
  are checked against their limits before any pixel is decoded;
* large JPEGs decode directly at 1/2, 1/4 or 1/8 scale (PIL draft mode); other formats are
  converted to 8 bits and shrunk by an integer factor a band of rows at a time, so no
  full-size copy is made beside the decoded picture (16-bit pictures never become floats);
* one decode runs at a time in a process (:data:`DECODE_SLOTS`): concurrent requests queue
  instead of multiplying the memory.

Photos keep their EXIF orientation; a mask may follow either the photo as displayed (oriented)
or its pixels as stored (raw: what MATLAB's ``imread`` and so Image Labeler see).
:func:`mask_grid` finds the grid a mask was drawn on, so the orientation can be applied to both.
Every mask read here holds class ids ``0..num_classes-1`` and :data:`IGNORE_INDEX`.
"""

from __future__ import annotations

import functools
import io
import math
import re
import threading
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageTooLarge, PhotoError, UnsupportedPhotoFormat, one_line
from .labels import ClassInfo
from .metrics import IGNORE_INDEX

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")

# The formats photos are read from (Pillow's names); HEIF joins where a plugin provides it.
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "MPO")
FORMAT_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "TIFF": "TIFF", "BMP": "BMP",
                "GIF": "GIF", "MPO": "MPO", "HEIF": "HEIC/HEIF"}
# Memory one decode may take (see decoding_bytes). Pillow keeps up to 4 bytes per pixel, so a
# 60-megapixel PNG or TIFF fits; a WebP decoder holds about four copies of its picture (up to
# 16 MP here), and a progressive JPEG all its DCT coefficients (2 bytes per sample).
DEFAULT_MAX_DECODE_BYTES = 256 * 2**20
# Decodes that run at once in this process; the others wait their turn.
DECODE_SLOTS = 1
_decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)
# Rows are converted to 8-bit RGB (and shrunk) in bands of about this many pixels.
BAND_PIXELS = 1 << 21

__all__ = ["ImageTooLarge"]  # re-exported: defined with the other typed errors


@functools.cache
def photo_formats() -> tuple[str, ...]:
    """Return the Pillow formats photos are opened with: :data:`PHOTO_FORMATS`, plus ``HEIF``
    when the pillow-heif plugin is installed (it is not a dependency of the project)."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return PHOTO_FORMATS
    register_heif_opener()
    return (*PHOTO_FORMATS, "HEIF")


@functools.cache
def _opened_formats() -> tuple[str, ...]:
    """The accepted formats that Pillow opens by name (an MPO file is opened by the JPEG
    plugin, which recognises its second picture)."""
    Image.init()
    return tuple(f for f in photo_formats() if f in Image.OPEN)


def accepted_formats_text() -> str:
    """Return the accepted photo formats as words: ``JPEG, PNG, WebP, TIFF, BMP, GIF or MPO``."""
    names = [FORMAT_NAMES.get(f, f) for f in photo_formats()]
    return ", ".join(names[:-1]) + " or " + names[-1]


def open_photo(source) -> Image.Image:
    """Return a photo opened (header read, nothing decoded) in one of :func:`photo_formats`.

    ``source`` is a path or a file object. Raises :class:`UnsupportedPhotoFormat` for any other
    file (saying what it looks like when it is a common document or image type),
    :class:`ImageTooLarge` over Pillow's own decompression-bomb limit and :class:`PhotoError`
    for a damaged header. A missing file raises ``FileNotFoundError``.
    """
    try:
        image = Image.open(source, formats=_opened_formats())
    except Image.DecompressionBombError as error:
        found = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(found[1]):,} pixels" if found else "more pixels than any photo"
        raise ImageTooLarge(f"image has {size}, over Pillow's decompression-bomb limit of "
                            f"{2 * Image.MAX_IMAGE_PIXELS:,} pixels") from None
    except UnidentifiedImageError:
        what = _looks_like(source)
        raise UnsupportedPhotoFormat(
            f"{what + ', ' if what else ''}not an image in an accepted format: use a "
            f"{accepted_formats_text()} file") from None
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # PIL's ways of saying "damaged"
        raise PhotoError(f"not an image file that can be read ({one_line(error)})") from None
    if image.format not in photo_formats():  # a format a plugin opens beside its own (none now)
        image.close()
        raise UnsupportedPhotoFormat(f"a {image.format} image, not one of the accepted formats: "
                                     f"use a {accepted_formats_text()} file")
    return image


# Leading bytes of files people upload by mistake, to say what they sent.
_SIGNATURES = (
    (b"%PDF", "a PDF document"), (b"%!PS", "a PostScript or EPS file"),
    (b"\xc5\xd0\xd3\xc6", "an EPS file"), (b"8BPS", "a Photoshop (PSD) file"),
    (b"\x00\x00\x01\x00", "an icon (ICO) file"), (b"PK\x03\x04", "a ZIP archive"),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 file"), (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 file"),
    (b"<svg", "an SVG drawing"), (b"<?xml", "an XML (perhaps SVG) file"),
)
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")


def _looks_like(source) -> str:
    """Return what an unaccepted file seems to be (``a PDF document``, ``a text file``...), or
    an empty string."""
    try:
        if isinstance(source, str | Path):
            with open(source, "rb") as handle:
                head = handle.read(64)
        else:
            position = source.tell()
            source.seek(0)
            head = source.read(64)
            source.seek(position)
    except (OSError, AttributeError):
        return ""
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    if head[4:8] == b"ftyp":
        if head[8:12] in _HEIF_BRANDS:
            return "a HEIC/HEIF photo (read only where the pillow-heif plugin is installed)"
        if head[8:12] in (b"avif", b"avis"):
            return "an AVIF image"
        return "a video or MP4-family file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:  # a character cut at the end of the 64 bytes is fine
        text = head[:error.start].decode("utf-8") if error.start > len(head) - 4 else ""
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "a text file"
    return ""


def pillow_bytes_per_pixel(mode: str) -> int:
    """Return the bytes Pillow keeps per pixel of a decoded picture in ``mode``: 1 for the
    8-bit one-band modes, 2 for 16-bit, 4 for every other mode (RGB is stored as RGBX)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def decoding_bytes(image: Image.Image, stored_size: tuple[int, int] | None = None) -> int:
    """Return the bytes decoding an opened (not yet loaded) picture will hold at its peak.

    The decoded picture at the size it will decode to (after :meth:`PIL.Image.Image.draft`)
    and the bit depth Pillow keeps, plus what the format's decoder holds beside it, measured
    with this project's Pillow: a WebP decoder keeps its own canvases (four copies in all), a
    compressed BMP is decoded in Python (three copies), a TIFF decodes one strip or tile at a
    time into a buffer of its own, and a progressive (or otherwise multi-scan) JPEG holds the
    DCT coefficients of the whole picture at ``stored_size`` (width, height; default: its
    size now), whatever its draft scale.
    """
    width, height = image.size
    decoded = width * height * pillow_bytes_per_pixel(image.mode)
    codec = image.tile[0][0] if image.tile else ""
    if image.format == "WEBP":
        return 4 * decoded
    if image.format == "HEIF":
        return 2 * decoded  # the plugin's own decoded picture, then Pillow's copy
    if codec in ("bmp_rle", "bmp_rle4", "bmp_rle8"):
        return 3 * decoded
    if image.format == "TIFF":
        return decoded + _tiff_buffer_bytes(image)
    if image.format in ("JPEG", "MPO") and _jpeg_keeps_coefficients(image):
        return decoded + _jpeg_coefficient_bytes(image.layer, stored_size or image.size)
    return decoded


def _tiff_buffer_bytes(image: Image.Image) -> int:
    """Return the bytes of the largest strip or tile of a TIFF, decompressed."""
    tags = image.tag_v2
    width, height = image.size
    bits = tags.get(258, (8,))
    bits = sum(bits) if isinstance(bits, tuple) else int(bits) * int(tags.get(277, 1))
    if 322 in tags and 323 in tags:  # tiled
        return math.ceil(int(tags[322]) * bits / 8) * int(tags[323])
    rows = min(int(tags.get(278, height) or height), height)
    return math.ceil(width * bits / 8) * rows


def _jpeg_keeps_coefficients(image: Image.Image) -> bool:
    """Return whether libjpeg must buffer a JPEG's whole coefficient array: a progressive
    file, or one whose first scan does not hold every component (several scans)."""
    if image.info.get("progressive") or image.info.get("progression"):
        return True
    handle = image.fp
    position = handle.tell()
    try:
        handle.seek(0)
        return _first_scan_components(handle) < len(image.layer)
    except (OSError, ValueError, IndexError):
        return True  # unreadable markers: count the memory rather than risk it
    finally:
        handle.seek(position)


def _first_scan_components(handle) -> int:
    """Return the number of components in a JPEG stream's first scan (its SOS header)."""
    if handle.read(2) != b"\xff\xd8":
        raise ValueError("no JPEG start marker")
    while True:
        byte = handle.read(1)
        if not byte:
            raise ValueError("no start of scan")
        if byte != b"\xff":
            continue
        marker = handle.read(1)
        while marker == b"\xff":  # fill bytes
            marker = handle.read(1)
        if not marker or marker == b"\xd9":
            raise ValueError("no start of scan")
        if marker in (b"\x00", b"\x01") or b"\xd0" <= marker <= b"\xd8":
            continue  # markers without a length
        length = int.from_bytes(handle.read(2), "big")
        if marker == b"\xda":
            return handle.read(1)[0]
        if length < 2:
            raise ValueError("damaged marker")
        handle.seek(length - 2, io.SEEK_CUR)


def _jpeg_coefficient_bytes(layers, size: tuple[int, int]) -> int:
    """Return the bytes of a JPEG's DCT coefficients at ``size`` (2 bytes per sample), from
    its components' sampling factors (Pillow's ``layer``: id, h, v, table)."""
    width, height = size
    samples = [(h, v) for _, h, v, _ in layers]
    h_max, v_max = max(h for h, _ in samples), max(v for _, v in samples)
    blocks = sum((math.ceil(width * h / (8 * h_max)) + h) * (math.ceil(height * v / (8 * v_max)) + v)
                 for h, v in samples)
    return blocks * 64 * 2


def decode_photo(source, max_pixels: int | None = None, max_side: int | None = None,
                 max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES):
    """Return ``(image, full_size)``: the photo as RGB uint8 and its (height, width) after EXIF.

    ``source`` is a path, bytes or a file object in an accepted format (:func:`photo_formats`).
    With ``max_side`` the image may come back smaller than ``full_size`` (long side at least
    ``max_side`` when the photo is that large): JPEGs decode directly at 1/2, 1/4 or 1/8
    scale (PIL draft mode, several times faster), other formats are shrunk by an integer
    factor while they are converted. Grayscale, palette, RGBA, CMYK and 16-bit images are
    converted to 8-bit RGB. Raises :class:`ImageTooLarge` over ``max_pixels`` or when
    decoding would take more than ``max_decode_bytes`` (both checked from the header, before
    decoding), :class:`UnsupportedPhotoFormat` for any other file and :class:`PhotoError` for
    a damaged one. Decodes one at a time (:data:`DECODE_SLOTS`).
    """
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise PhotoError("the file is empty (0 bytes)")
        source = io.BytesIO(source)
    image = open_photo(source)
    with image:
        stored_width, stored_height = image.size
        if max_pixels is not None and stored_width * stored_height > max_pixels:
            raise ImageTooLarge(
                f"image is {stored_width}x{stored_height} pixels, more than the limit of "
                f"{max_pixels:,} pixels")
        factor = 1
        long_side = max(stored_width, stored_height)
        if max_side and long_side > max_side and image.format in ("JPEG", "MPO"):
            scale = max_side / long_side
            image.draft(None, (math.ceil(stored_width * scale), math.ceil(stored_height * scale)))
        elif max_side and long_side > 2 * max_side:
            # Shrunk while converting (block means) to at least the size asked for; the area
            # resampling below then takes it to that size, as it does a full decode.
            factor = long_side // max_side
        needed = decoding_bytes(image, (stored_width, stored_height))
        if max_decode_bytes is not None and needed > max_decode_bytes:
            raise ImageTooLarge(
                f"decoding this {stored_width}x{stored_height} {image.format} image would take "
                f"{needed / 2**20:,.0f} MB of memory, more than the limit of "
                f"{max_decode_bytes / 2**20:,.0f} MB")
        with _decode_slots:
            try:
                image.load()
                array = to_rgb_array(image, factor)
            except Exception as error:  # noqa: BLE001 - decoders raise many types on damaged data
                raise PhotoError(f"the image data cannot be decoded ({one_line(error)})") from None
            # Read after decoding: a PNG's EXIF block may follow its pixels, and Pillow decodes
            # the whole picture to reach it.
            orientation = _orientation(image)
    full_size = ((stored_width, stored_height) if orientation in (5, 6, 7, 8)
                 else (stored_height, stored_width))
    array = orient(array, orientation)
    if max_side and (factor > 1 or max(array.shape[:2]) > 2 * max_side):
        array = resize_image(array, working_size(*array.shape[:2], max_side))
    return array, full_size


def _orientation(image: Image.Image) -> int:
    """Return a loaded image's EXIF orientation (1-8; 1 when absent or damaged)."""
    try:
        orientation = int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a damaged EXIF block: show the pixels as stored
        return 1
    return orientation if orientation in range(1, 9) else 1


def read_image(source, max_pixels: int | None = None) -> np.ndarray:
    """Return an RGB uint8 array (H, W, 3) with the EXIF orientation applied.

    ``source`` is a path, bytes or a file object. Grayscale, palette, RGBA, CMYK and 16-bit
    images are converted. ``max_pixels`` rejects larger images before decoding them
    (:class:`ImageTooLarge`, a ``ValueError``), which stops decompression bombs; see
    :func:`decode_photo`.
    """
    return decode_photo(source, max_pixels, max_decode_bytes=None)[0]


EXIF_ORIENTATION = 0x0112


def read_photo(source) -> tuple[np.ndarray, int]:
    """Return ``(rgb, orientation)``: the pixels as stored (H, W, 3 uint8) and the EXIF
    orientation (1-8, 1 = none) that displays them upright; ``orient(rgb, orientation)`` equals
    :func:`read_image`."""
    with open_photo(source) as image:
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


def to_rgb_array(image: Image.Image, reduce: int = 1) -> np.ndarray:
    """Return a decoded PIL image as RGB uint8 (H, W, 3): 16-bit scaled, alpha over white.

    ``reduce`` shrinks it by that integer factor (the mean of each ``reduce`` x ``reduce``
    block; sizes rounded up). Converted a band of rows at a time: beside the decoded picture,
    only one band is ever held at more than 8 bits per channel.
    """
    width, height = image.size
    convert = _band_converter(image)
    out = np.empty((math.ceil(height / reduce), math.ceil(width / reduce), 3), dtype=np.uint8)
    rows = max(1, BAND_PIXELS // max(1, width) // reduce) * reduce
    for top in range(0, height, rows):
        band = image if rows >= height else image.crop((0, top, width, min(height, top + rows)))
        converted = convert(band)
        if reduce > 1:
            converted = converted.reduce(reduce)
        pixels = np.asarray(converted, dtype=np.uint8)
        out[top // reduce: top // reduce + pixels.shape[0]] = (
            pixels[..., None] if pixels.ndim == 2 else pixels)
    return out


def _band_converter(image: Image.Image):
    """Return a function turning a band of ``image`` into an 8-bit PIL image (``L`` or
    ``RGB``), with the scale of 16-bit and float pictures taken from the whole picture."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # Scaled to 8 bits from the 16-bit range (or kept when no value exceeds 255), rounded,
        # in integers: never a float copy of the picture.
        peak = 65535 if (image.getextrema()[1] or 0) > 255 else 255

        def convert(band):
            values = np.asarray(band).astype(np.int32)  # 65535 * 510 fits
            np.clip(values, 0, peak, out=values)
            values *= 510
            values += peak
            values //= 2 * peak  # round(value / peak * 255)
            return Image.fromarray(values.astype(np.uint8))

        return convert
    if image.mode == "F":
        peak = max(float(image.getextrema()[1]), 1.0)

        def convert(band):
            values = np.asarray(band).astype(np.float64)
            values /= peak
            values *= 255.0
            return Image.fromarray(np.clip(values, 0, 255, out=values).astype(np.uint8))

        return convert
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        def convert(band):
            # Transparent pixels composited on white, as a browser shows them.
            rgba = band.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")

        return convert
    return lambda band: band.convert("RGB")


def read_raw_mask(path: str | Path) -> np.ndarray:
    """Return a mask file as stored: (H, W) of class values, or (H, W, 3) for colour masks."""
    with open_photo(path) as image:
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
