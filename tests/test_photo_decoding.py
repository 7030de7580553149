"""The photo decoder: accepted formats only, memory bounded before decoding, 8 bits early,
large pictures shrunk while converting, one decode at a time."""

from __future__ import annotations

import io
import re
import threading
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers import imageio
from helpers.errors import ImageTooLarge, PhotoError, UnsupportedPhotoFormat
from helpers.imageio import decode_photo, decoding_bytes, read_image, to_rgb_array


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    """A 96x64 RGB picture with structure (a gradient and noise)."""
    rng = np.random.default_rng(0)
    pixels = np.zeros((64, 96, 3), np.uint8)
    pixels[..., 0] = np.arange(96)[None, :] * 2
    pixels[..., 1] = np.arange(64)[:, None] * 3
    pixels[..., 2] = rng.integers(0, 255, (64, 96))
    return Image.fromarray(pixels)


# --------------------------------------------------------------------------- formats


def accepted_files(picture) -> dict[str, bytes]:
    second = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return {
        "JPEG": encoded(picture, "JPEG", quality=95),
        "PNG": encoded(picture, "PNG"),
        "WEBP": encoded(picture, "WEBP", lossless=True),
        "TIFF": encoded(picture, "TIFF"),
        "BMP": encoded(picture, "BMP"),
        "GIF": encoded(picture, "GIF"),
        "MPO": encoded(picture, "MPO", save_all=True, append_images=[second]),
    }


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "MPO"])
def test_every_accepted_format_decodes(picture, fmt):
    data = accepted_files(picture)[fmt]
    assert Image.open(io.BytesIO(data)).format == fmt
    image, full_size = decode_photo(data)
    assert image.shape == (64, 96, 3) and image.dtype == np.uint8 and full_size == (64, 96)
    lossless = fmt in ("PNG", "WEBP", "TIFF", "BMP")
    difference = np.abs(image.astype(int) - np.asarray(picture).astype(int)).mean()
    assert difference == 0 if lossless else difference < 40  # GIF: a 256-colour palette


OTHER_FORMATS = {
    # Formats Pillow reads that are not photos: each decoder is code an upload would reach.
    "ICO": ({}, "an icon (ICO) file"), "PCX": ({}, ""), "TGA": ({}, ""), "PPM": ({}, ""),
    "EPS": ({}, "a PostScript or EPS file"), "DDS": ({}, ""), "QOI": ({}, ""), "SGI": ({}, ""),
    "IM": ({}, "a text file"),
}


@pytest.mark.parametrize("fmt", sorted(OTHER_FORMATS))
def test_formats_outside_the_list_are_refused_without_decoding(picture, fmt, monkeypatch):
    options, looks_like = OTHER_FORMATS[fmt]
    data = encoded(picture, fmt, **options)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself would open it
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("a pixel was decoded"))
    with pytest.raises(UnsupportedPhotoFormat) as error:
        decode_photo(data)
    message = str(error.value)
    assert "not an image in an accepted format: use a JPEG, PNG, WebP, TIFF, BMP, GIF or MPO file" \
        in message
    assert message.startswith(looks_like) and "\n" not in message


@pytest.mark.parametrize("data, looks_like", [
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "a PDF document"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
     "a HEIC/HEIF photo (read only where the pillow-heif plugin is installed), not an image"),
    (b"just some notes,\nnot a photo\n", "a text file"),
    (bytes(range(200, 256)) * 3, "not an image"),
])
def test_refusals_say_what_the_file_looks_like(data, looks_like):
    with pytest.raises(UnsupportedPhotoFormat, match=r"^" + re.escape(looks_like)):
        decode_photo(data)


def test_empty_damaged_and_missing_files(picture, tmp_path):
    with pytest.raises(PhotoError, match="empty"):
        decode_photo(b"")
    with pytest.raises(PhotoError, match="cannot be decoded"):
        decode_photo(encoded(picture, "PNG")[:300])
    with pytest.raises(FileNotFoundError):
        decode_photo(tmp_path / "missing.jpg")
    for error in (UnsupportedPhotoFormat, ImageTooLarge):
        assert issubclass(error, PhotoError) and issubclass(error, ValueError)


# --------------------------------------------------------------------------- memory


def test_a_decompression_bomb_is_refused_from_its_header(monkeypatch):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 1, 0, 0, 0, 0)  # 900 megapixels, no data
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("a pixel was decoded"))
    with pytest.raises(ImageTooLarge, match=r"^image has 900,000,000 pixels, over Pillow's "
                                            r"decompression-bomb limit of 178,956,970 pixels$"):
        decode_photo(bomb)


def test_the_pixel_limit_is_checked_from_the_header(picture, monkeypatch):
    data = encoded(picture, "PNG")
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("a pixel was decoded"))
    with pytest.raises(ImageTooLarge, match="96x64 pixels, more than the limit of 6,000 pixels"):
        decode_photo(data, max_pixels=6000)


@pytest.mark.parametrize("fmt, mode, bytes_per_pixel", [
    ("PNG", "I;16", 2), ("PNG", "RGBA", 4), ("PNG", "1", 1), ("PNG", "P", 1), ("PNG", "RGB", 4),
    ("GIF", "P", 1), ("WEBP", "RGB", 16), ("BMP", "RGB", 4),
])
def test_decoding_bytes_count_the_picture_pillow_keeps_and_the_decoders_copies(
        fmt, mode, bytes_per_pixel):
    image = Image.open(io.BytesIO(encoded(Image.new(mode, (300, 200)), fmt)))
    assert decoding_bytes(image) == 300 * 200 * bytes_per_pixel


def test_a_compressed_bmp_and_a_single_strip_tiff_count_their_decoders_buffers():
    bmp = Image.open(io.BytesIO(rle8_bmp(300, 200)))
    assert bmp.tile[0][0] == "bmp_rle" and decoding_bytes(bmp) == 3 * 300 * 200
    one_strip = Image.open(io.BytesIO(encoded(Image.new("RGB", (300, 200)), "TIFF",
                                              compression="tiff_adobe_deflate",
                                              strip_size=300 * 200 * 3)))
    assert one_strip.tag_v2[278] == 200
    assert decoding_bytes(one_strip) == 300 * 200 * 4 + 300 * 200 * 3


def rle8_bmp(width: int, height: int) -> bytes:
    """An 8-bit run-length-encoded BMP of zeros (a few bytes per row whatever its width)."""
    import struct

    runs = b"\xff\x00" * (width // 255) + (bytes([width % 255, 0]) if width % 255 else b"")
    pixels = (runs + b"\x00\x00") * height + b"\x00\x01"
    palette = b"\x00" * 1024
    offset = 14 + 40 + len(palette)
    return (b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
            + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835,
                          256, 0) + palette + pixels)


def test_a_progressive_jpeg_counts_its_full_size_coefficients_and_is_refused(monkeypatch):
    picture = Image.new("RGB", (1600, 1200), (90, 120, 150))
    progressive = encoded(picture, "JPEG", progressive=True, subsampling=0)
    baseline = encoded(picture, "JPEG", subsampling=0)
    coefficients = 3 * 1600 * 1200 * 2  # three full-size components, 2 bytes per sample
    image = Image.open(io.BytesIO(progressive))
    assert decoding_bytes(image) == pytest.approx(1600 * 1200 * 4 + coefficients, rel=0.02)
    image.draft("RGB", (200, 150))  # an eighth: the coefficients are still all held
    assert decoding_bytes(image, (1600, 1200)) == pytest.approx(200 * 150 * 4 + coefficients,
                                                                rel=0.02)
    baseline_image = Image.open(io.BytesIO(baseline))
    baseline_image.draft("RGB", (200, 150))
    assert decoding_bytes(baseline_image, (1600, 1200)) == 200 * 150 * 4
    limit = 4 * 2**20
    assert decode_photo(baseline, max_side=200, max_decode_bytes=limit)[0].shape == (150, 200, 3)
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("a pixel was decoded"))
    with pytest.raises(ImageTooLarge, match="1600x1200 JPEG image would take 11 MB of memory, "
                                            "more than the limit of 4 MB"):
        decode_photo(progressive, max_side=200, max_decode_bytes=limit)


def test_a_baseline_jpeg_whose_first_scan_lacks_components_counts_coefficients():
    data = bytearray(encoded(Image.new("RGB", (320, 240)), "JPEG"))
    image = Image.open(io.BytesIO(bytes(data)))
    assert decoding_bytes(image) == 320 * 240 * 4  # one interleaved scan: decoded as it streams
    sos = data.index(b"\xff\xda")
    assert data[sos + 4] == 3
    data[sos + 4] = 1  # the first scan now holds one component: libjpeg buffers the rest
    assert decoding_bytes(Image.open(io.BytesIO(bytes(data)))) > 320 * 240 * 4 + 320 * 240 * 2


def test_a_large_webp_is_refused_before_its_decoder_runs(monkeypatch):
    data = encoded(Image.new("RGB", (2000, 1500), (1, 2, 3)), "WEBP", lossless=True)
    assert len(data) < 2000
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("a pixel was decoded"))
    with pytest.raises(ImageTooLarge, match="2000x1500 WEBP image would take 46 MB"):
        decode_photo(data, max_decode_bytes=32 * 2**20)


def test_sixteen_bit_pictures_become_8_bits_by_rounding_without_a_float_copy(monkeypatch):
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = np.floor(values / 65535 * 255 + 0.5).astype(np.uint8)
    real_asarray = np.asarray

    def no_floats(array, *args, **kwargs):
        result = real_asarray(array, *args, **kwargs)
        assert result.dtype.kind != "f", "a 16-bit picture was converted through floats"
        return result

    monkeypatch.setattr(imageio.np, "asarray", no_floats)
    image = read_image(encoded(Image.fromarray(values), "PNG"))
    monkeypatch.undo()
    np.testing.assert_array_equal(image[..., 0], expected)
    assert (image[..., 0] == image[..., 2]).all()
    dark = np.arange(200, dtype=np.uint16).reshape(10, 20)  # no value above 255: kept as is
    np.testing.assert_array_equal(read_image(encoded(Image.fromarray(dark), "PNG"))[..., 1], dark)


def conversions(picture: Image.Image) -> dict[str, Image.Image]:
    palette = picture.convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 5
    rgba = picture.convert("RGBA")
    rgba.putalpha(Image.fromarray((np.arange(96)[None] * 2).repeat(64, 0).astype(np.uint8)))
    gray = np.asarray(picture.convert("L"))
    return {"RGBA": rgba, "P+transparency": palette, "CMYK": picture.convert("CMYK"),
            "I;16": Image.fromarray(gray.astype(np.uint16) * 257),
            "F": Image.fromarray(gray.astype(np.float32) * 3.3), "1": picture.convert("1"),
            "LA": picture.convert("LA"), "I": Image.fromarray(gray.astype(np.int32))}


@pytest.mark.parametrize("mode", ["RGBA", "P+transparency", "CMYK", "I;16", "F", "1", "LA", "I"])
def test_conversion_in_bands_equals_the_whole_picture_at_once(picture, mode, monkeypatch):
    image = conversions(picture)[mode]
    whole = to_rgb_array(image)
    monkeypatch.setattr(imageio, "BAND_PIXELS", 96 * 5)  # bands of 5 or 6 rows
    np.testing.assert_array_equal(to_rgb_array(image), whole)
    reduced = to_rgb_array(image, 3)  # bands of 6 rows: whole 3x3 blocks
    assert reduced.shape == (22, 32, 3)
    np.testing.assert_array_equal(reduced, np.asarray(Image.fromarray(whole).reduce(3)))


def test_a_large_png_is_shrunk_while_converting_to_what_was_asked(picture, monkeypatch):
    large = picture.resize((2400, 1600), Image.Resampling.BICUBIC)
    data = encoded(large, "PNG")
    factors = []
    real = imageio.to_rgb_array
    monkeypatch.setattr(imageio, "to_rgb_array",
                        lambda image, reduce=1: factors.append(reduce) or real(image, reduce))
    image, full_size = decode_photo(data, max_side=400)
    assert factors == [6] and full_size == (1600, 2400) and image.shape == (267, 400, 3)
    reference = cv2.resize(np.asarray(large), (400, 267), interpolation=cv2.INTER_AREA)
    assert np.abs(image.astype(int) - reference.astype(int)).mean() < 1.5


def test_decodes_run_one_at_a_time(picture, monkeypatch):
    running, most = [0], [0]
    lock = threading.Lock()
    real = imageio.to_rgb_array

    def slow(image, reduce=1):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return real(image, reduce)

    monkeypatch.setattr(imageio, "to_rgb_array", slow)
    data = encoded(picture, "PNG")
    threads = [threading.Thread(target=decode_photo, args=(data,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == imageio.DECODE_SLOTS == 1


@pytest.mark.parametrize("fmt", ["PNG", "PNG with EXIF", "JPEG", "WEBP", "TIFF", "GIF"])
def test_no_pixel_is_decoded_outside_the_decode_slot(picture, fmt, monkeypatch):
    """Reading a PNG's EXIF block decodes the whole picture in Pillow: the orientation is read
    only once the picture is decoded, inside the slot (and after the memory check)."""
    from PIL import ImageFile

    exif = Image.Exif()
    exif[0x0112] = 6
    options = {"exif": exif} if fmt == "PNG with EXIF" else {}
    data = encoded(picture, fmt.split()[0], **options)
    inside, outside = [], []

    class Slot:
        def __enter__(self):
            inside.append(True)

        def __exit__(self, *exc):
            inside.pop()

    real_load = ImageFile.ImageFile.load

    def load(self):
        if not inside:  # recorded, not raised: a caller may catch exceptions
            outside.append(self.format)
        return real_load(self)

    monkeypatch.setattr(imageio, "_decode_slots", Slot())
    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    image, full_size = decode_photo(data, max_pixels=10_000, max_side=48)
    assert outside == [], "a picture was decoded outside the decode slot"
    assert full_size == ((96, 64) if options else (64, 96))
    assert (image.shape[0] > image.shape[1]) == (full_size[0] > full_size[1])
