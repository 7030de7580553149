"""The web app: results, the JSON API, unusual images, and every kind of bad input."""

from __future__ import annotations

import base64
import html
import http.client
import io
import json
import re
import struct
import threading
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from helpers.data import read_image
from helpers.predict import Predictor
from helpers.webapp import create_app
from helpers.webapp.app import DEFAULT_TILE
from helpers.webapp.browser import BackgroundServer

MAX_UPLOAD = 4 * 2**20


@pytest.fixture(scope="module")
def predictor(smoke_checkpoint):
    return Predictor(smoke_checkpoint, runtime="torch")


@pytest.fixture(scope="module")
def app(predictor):
    return create_app(predictor, max_upload_bytes=MAX_UPLOAD)


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def campus_photo(campus_dir):
    path = campus_dir / "UNH_DL_55.jpg"
    return path.read_bytes(), Image.open(path).size


@pytest.fixture(scope="module")
def camvid_image(camvid_dir):
    return read_image(sorted((camvid_dir / "test").glob("*.png"))[0])  # 360x480 RGB


def post(client, data: bytes | None, filename="photo.jpg", field="image", path="/api/predict",
         **fields):
    form = dict(fields)
    if data is not None:
        form[field] = (io.BytesIO(data), filename)
    return client.post(path, data=form, content_type="multipart/form-data")


def decode_mask(payload: dict) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(payload["mask_png"])))
    image.load()
    return image


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG, written row by row: 30000x30000 is ~110 KB on disk and
    900 million pixels decoded (a decompression bomb)."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body)
            + png_chunk(b"IEND", b""))


# --------------------------------------------------------------------------- normal use


def test_healthz_reports_model_and_classes(client, predictor):
    payload = client.get("/healthz").get_json()
    assert payload["status"] == "ok" and payload["model"] == "unet-effnet-lite0"
    assert [c["name"] for c in payload["classes"]] == list(predictor.classes.names)
    assert payload["num_classes"] == 11 and payload["max_upload_bytes"] == MAX_UPLOAD


def test_index_has_the_upload_form(client):
    page = client.get("/").get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in page
    assert re.search(r'<input type="file" name="image"', page)
    assert 'type="submit"' in page


def test_api_predict_returns_full_size_class_mask(client, campus_photo, predictor):
    data, (width, height) = campus_photo
    response = post(client, data, "UNH_DL_55.jpg")
    assert response.status_code == 200
    payload = response.get_json()
    assert (payload["width"], payload["height"]) == (width, height)
    assert [c["name"] for c in payload["classes"]] == list(predictor.classes.names)
    assert all(len(c["color"]) == 3 for c in payload["classes"])
    assert abs(sum(c["share"] for c in payload["classes"]) - 1) < 1e-4
    mask = decode_mask(payload)
    assert mask.mode == "L" and mask.size == (width, height)
    values = np.asarray(mask)
    assert values.max() < 11
    counts = np.bincount(values.ravel(), minlength=11) / values.size
    np.testing.assert_allclose([c["share"] for c in payload["classes"]], counts, atol=1e-5)
    assert payload["inference_ms"] > 0 and payload["total_ms"] >= payload["inference_ms"]


def test_form_upload_shows_photo_overlay_mask_and_legend(client, campus_photo):
    response = post(client, campus_photo[0], "UNH_DL_55.jpg", path="/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for element in ("photo", "overlay", "mask"):
        match = re.search(rf'<img id="{element}" src="data:image/(?:jpeg|png);base64,([^"]+)"', page)
        assert match, element
        picture = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
        assert max(picture.size) == 1024
    entries = re.findall(r'<li class="legend-entry[^"]*">\s*<svg class="swatch" [^>]*>'
                         r'<rect width="1" height="1" fill="(#[0-9a-f]{6})"/></svg>\s*'
                         r'<span class="name">(\w+)</span>\s*<span class="share">([\d.]+)%</span>',
                         page)
    assert len(entries) == 11
    assert abs(sum(float(share) for _, _, share in entries) - 100) < 1.0
    assert re.search(r"Network \d+ ms", page)


@pytest.mark.parametrize("option, value", [("tile", "1"), ("crf", "on")])
def test_tile_and_crf_options_return_the_predictors_mask(client, predictor, camvid_image,
                                                         option, value):
    response = post(client, encoded(Image.fromarray(camvid_image), "PNG"), "a.png",
                    **{option: value})
    assert response.status_code == 200
    expected = (predictor.predict(camvid_image, tile=DEFAULT_TILE) if option == "tile"
                else predictor.predict(camvid_image, crf=True))
    np.testing.assert_array_equal(np.asarray(decode_mask(response.get_json())), expected.mask)


# --------------------------------------------------------------------------- unusual valid images


def unusual_images(rgb: np.ndarray) -> dict[str, tuple[bytes, tuple[int, int]]]:
    """Each unusual-but-valid image as file bytes with its expected (width, height)."""
    import cv2

    image = Image.fromarray(rgb)
    height, width = rgb.shape[:2]
    gray = np.asarray(image.convert("L"))
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.fromarray((np.arange(width)[None, :].repeat(height, 0) % 256).astype(np.uint8)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    ok, rgb16 = cv2.imencode(".png", (rgb[..., ::-1].astype(np.uint16) * 257))
    assert ok
    return {
        "cmyk.jpg": (encoded(image.convert("CMYK"), "JPEG"), (width, height)),
        "gray16.png": (encoded(Image.fromarray(gray.astype(np.uint16) * 257), "PNG"), (width, height)),
        "rgb16.png": (rgb16.tobytes(), (width, height)),
        "rgba.png": (encoded(rgba, "PNG"), (width, height)),
        "gray.jpg": (encoded(image.convert("L"), "JPEG"), (width, height)),
        "palette.png": (encoded(image.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), (width, height)),
        "rotated.jpg": (encoded(image, "JPEG", exif=exif), (height, width)),
    }


@pytest.mark.parametrize("name", ["cmyk.jpg", "gray16.png", "rgb16.png", "rgba.png", "gray.jpg",
                                  "palette.png", "rotated.jpg"])
def test_unusual_valid_images(client, camvid_image, name):
    data, (width, height) = unusual_images(camvid_image)[name]
    response = post(client, data, name)
    assert response.status_code == 200, response.get_json()
    payload = response.get_json()
    assert (payload["width"], payload["height"]) == (width, height)
    assert decode_mask(payload).size == (width, height)


def test_exif_rotated_photo_gives_the_mask_of_the_upright_photo(client, camvid_image):
    # Lossless PNGs (with an eXIf chunk) so both uploads decode to exactly the same pixels.
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = Image.fromarray(camvid_image).rotate(90, expand=True)  # as a sideways camera stores it
    rotated = decode_mask(post(client, encoded(stored, "PNG", exif=exif), "sideways.png").get_json())
    upright = decode_mask(post(client, encoded(Image.fromarray(camvid_image), "PNG"), "up.png").get_json())
    assert rotated.size == upright.size == (480, 360)
    np.testing.assert_array_equal(np.asarray(rotated), np.asarray(upright))


# --------------------------------------------------------------------------- bad input


BAD_INPUTS = {
    "not an image": (b"GIF? no, just some text that is not an image", "notes.jpg", 415,
                     "notes.jpg: a text file, not an image in an accepted format: use a JPEG, "
                     "PNG, WebP, TIFF, BMP, GIF or MPO file"),
    "a PDF": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>>", "scan.jpg", 415,
              "scan.jpg: a PDF document, not an image in an accepted format"),
    "zero bytes": (b"", "empty.jpg", 400, "empty"),
}


@pytest.mark.parametrize("path", ["/api/predict", "/"])
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_files_get_a_clear_4xx(client, path, case):
    data, filename, status, message = BAD_INPUTS[case]
    response = post(client, data, filename, path=path)
    assert response.status_code == status
    check_refusal(response, path, message)


def check_refusal(response, path, message):
    if path.startswith("/api/"):
        assert response.is_json and message in response.get_json()["error"]
    else:
        page = response.get_data(as_text=True)
        assert response.mimetype == "text/html"
        shown = re.search(r'<p class="error" role="alert" id="error">([^<]*)</p>', page)
        assert shown and message in html.unescape(shown.group(1))


@pytest.mark.parametrize("path", ["/api/predict", "/"])
def test_truncated_image(client, campus_photo, path):
    response = post(client, campus_photo[0][: len(campus_photo[0]) // 3], "cut.jpg", path=path)
    assert response.status_code == 400
    check_refusal(response, path, "truncated")


@pytest.mark.parametrize("path", ["/api/predict", "/"])
def test_missing_or_wrongly_named_field(client, campus_photo, path):
    response = post(client, None, path=path, note="hello")
    assert response.status_code == 400
    check_refusal(response, path, "no file in the form field 'image'")
    response = post(client, campus_photo[0], field="photo", path=path)
    assert response.status_code == 400
    check_refusal(response, path, "file fields sent: photo")
    response = client.post(path, data=b'{"image": "x"}', content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize("path", ["/api/predict", "/"])
def test_decompression_bomb_refused_before_decoding(client, path):
    bomb = bilevel_png(30000, 30000)
    assert len(bomb) < 300_000
    response = post(client, bomb, "bomb.png", path=path)
    assert response.status_code == 413
    check_refusal(response, path, "pixels")


def test_image_over_the_pixel_limit(predictor, camvid_image):
    client = create_app(predictor, max_pixels=100_000).test_client()
    response = post(client, encoded(Image.fromarray(camvid_image), "PNG"), "big.png")  # 172,800 pixels
    assert response.status_code == 413
    assert "more than the limit of 100,000 pixels" in response.get_json()["error"]


@pytest.mark.parametrize("path", ["/api/predict", "/"])
def test_body_over_the_upload_limit(client, path):
    response = post(client, b"\xff" * (MAX_UPLOAD + 1000), "huge.jpg", path=path)
    assert response.status_code == 413
    check_refusal(response, path, "larger than the limit of 4 MB")


def test_file_name_with_path_parts_is_never_used_as_a_path(client, camvid_image, tmp_path,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = encoded(Image.fromarray(camvid_image), "PNG")
    response = post(client, data, "../../etc/passwd.png")
    assert response.status_code == 200
    assert response.get_json()["filename"] == "etc_passwd.png"
    page = post(client, data, "../../<script>x</script>.png", path="/").get_data(as_text=True)
    assert "<script>x</script>" not in page
    assert list(tmp_path.iterdir()) == []


def test_uploads_stay_in_memory(client, campus_photo, monkeypatch):
    import tempfile

    import werkzeug.formparser

    def no_temporary_files(*args, **kwargs):
        raise AssertionError("an upload was spooled to a temporary file")

    for name in ("SpooledTemporaryFile", "TemporaryFile"):
        if hasattr(werkzeug.formparser, name):
            monkeypatch.setattr(werkzeug.formparser, name, no_temporary_files)
        monkeypatch.setattr(tempfile, name, no_temporary_files)
    response = post(client, campus_photo[0])  # ~0.6 MB, over werkzeug's 500 KB spooling size
    assert response.status_code == 200


# --------------------------------------------------------------------------- a real server


def request(url: str, method="GET", path="/healthz", body: bytes = b"", headers=None):
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def multipart(data: bytes, filename="photo.jpg", field="image") -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_server_survives_bad_input_and_answers_concurrent_requests(app, camvid_dir):
    images = [read_image(p) for p in sorted((camvid_dir / "test").glob("*.png"))[:3]]
    uploads = [multipart(encoded(Image.fromarray(image), "PNG")) for image in images]
    with BackgroundServer(app, threads=4) as server:
        for bad, expected in ((b"", 400), (b"junk", 415), (bilevel_png(30000, 30000), 413),
                              (b"\0" * (MAX_UPLOAD + 10), 413), (b"\0" * 64 * 2**20, 413)):
            status, body = request(server.url, "POST", "/api/predict", *multipart(bad))
            assert status == expected and json.loads(body)["error"]
        status, body = request(server.url)
        assert status == 200 and json.loads(body)["status"] == "ok"

        sequential = [request(server.url, "POST", "/api/predict", *upload) for upload in uploads]
        results: list = [None] * 9
        barrier = threading.Barrier(len(results))

        def client(index):
            barrier.wait()
            results[index] = request(server.url, "POST", "/api/predict", *uploads[index % 3])

        with ThreadPoolExecutor(len(results)) as pool:
            list(pool.map(client, range(len(results))))
    for index, (status, body) in enumerate(results):
        assert status == 200
        expected = json.loads(sequential[index % 3][1])["mask_png"]
        assert json.loads(body)["mask_png"] == expected


def chunks(size: int, chunk: int = 2**20):
    for start in range(0, size, chunk):
        yield b"\0" * min(chunk, size - start)


def test_over_limit_bodies_of_any_size_get_the_413_message(app):
    """Bodies declared by Content-Length and chunked ones, just over and far over the limit."""
    with BackgroundServer(app, threads=2) as server:
        host, port = server.url.removeprefix("http://").split(":")
        for size in (MAX_UPLOAD + 2**20 + 1, 64 * 2**20):
            body, headers = multipart(b"\0" * size)
            status, answer = request(server.url, "POST", "/api/predict", body, headers)
            assert status == 413 and "larger than the limit" in json.loads(answer)["error"]
            connection = http.client.HTTPConnection(host, int(port), timeout=120)
            try:
                connection.request("POST", "/api/predict", body=chunks(size), headers=headers,
                                   encode_chunked=True)
                response = connection.getresponse()
                assert response.status == 413, size
                assert "larger than the limit" in json.loads(response.read())["error"]
            finally:
                connection.close()
        status, _ = request(server.url)  # the server carries on
        assert status == 200


def test_command_line_serves_with_waitress(smoke_checkpoint, campus_photo):
    import os
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "helpers.webapp", "--checkpoint", str(smoke_checkpoint),
         "--port", str(port), "--max-upload-mb", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                status, body = request(url)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, server.stdout.read()
                time.sleep(0.5)
        assert status == 200 and json.loads(body)["max_upload_bytes"] == 2 * 2**20
        status, body = request(url, "POST", "/api/predict", *multipart(campus_photo[0]))
        assert status == 200 and json.loads(body)["width"] == campus_photo[1][0]
        status, body = request(url, "POST", "/api/predict", *multipart(b"\0" * int(2.5 * 2**20)))
        assert status == 413 and "limit of 2 MB" in json.loads(body)["error"]
        # Far over the limit the server still reads the body to its end, so a plain HTTP
        # client gets the 413 and its message rather than a reset connection.
        for path in ("/api/predict", "/"):
            status, body = request(url, "POST", path, *multipart(b"\0" * 64 * 2**20))
            assert status == 413 and "limit of 2 MB" in body.decode(), (path, body[:200])
        status, _ = request(url)
        assert status == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
