"""The web app's limits and headers: formats, memory, form limits, methods, security headers."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from helpers.predict import Predictor
from helpers.webapp import create_app
from helpers.webapp.app import CONTENT_SECURITY_POLICY, DISPLAY_MAX_SIDE, MAX_FORM_PARTS


@pytest.fixture(scope="module")
def predictor(smoke_checkpoint):
    return Predictor(smoke_checkpoint, runtime="torch")


@pytest.fixture(scope="module")
def client(predictor):
    return create_app(predictor, max_upload_bytes=4 * 2**20).test_client()


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def post(client, data, filename="photo.jpg", path="/api/predict", **fields):
    return client.post(path, data={"image": (io.BytesIO(data), filename), **fields},
                       content_type="multipart/form-data")


def refusal(response) -> str:
    if response.is_json:
        return response.get_json()["error"]
    return html.unescape(re.search(r'id="error">([^<]*)</p>', response.get_data(as_text=True))[1])


@pytest.mark.parametrize("fmt", ["EPS", "ICO", "PCX", "TGA", "PPM", "SGI", "DDS"])
@pytest.mark.parametrize("path", ["/api/predict", "/"])
def test_other_image_formats_get_415_naming_the_accepted_ones(client, fmt, path):
    data = encoded(Image.new("RGB", (40, 30), (200, 30, 30)), fmt)
    response = post(client, data, f"picture.{fmt.lower()}", path)
    assert response.status_code == 415
    message = refusal(response)
    assert message.startswith(f"picture.{fmt.lower()}: ")
    assert "not an image in an accepted format: use a JPEG, PNG, WebP, TIFF, BMP, GIF or MPO" \
        in message


def test_the_page_names_and_accepts_the_formats(client):
    page = client.get("/").get_data(as_text=True)
    assert "JPEG, PNG, WebP, TIFF, BMP, GIF or MPO, up to 4 MB" in page
    assert 'accept="image/jpeg,image/png,image/webp,image/tiff,image/bmp,image/gif,.mpo"' in page
    assert client.get("/healthz").get_json()["formats"] == ["JPEG", "PNG", "WEBP", "TIFF", "BMP",
                                                            "GIF", "MPO"]


@pytest.mark.parametrize("path", ["/api/predict", "/"])
def test_an_image_whose_decoding_would_take_too_much_memory_gets_413(predictor, path):
    client = create_app(predictor, max_decode_bytes=32 * 2**20).test_client()
    webp = encoded(Image.new("RGB", (2000, 1500), (9, 9, 9)), "WEBP", lossless=True)  # 1 KB
    response = post(client, webp, "small.webp", path)
    assert response.status_code == 413
    assert refusal(response) == ("small.webp: decoding this 2000x1500 WEBP image would take 46 MB "
                                 "of memory, more than the limit of 32 MB; upload a smaller photo")


def test_a_sixteen_bit_png_of_large_size_is_shrunk_while_decoding(client):
    values = (np.arange(3000 * 2000, dtype=np.uint32) % 65536).astype(np.uint16).reshape(2000, 3000)
    response = post(client, encoded(Image.fromarray(values), "PNG"), "deep.png")
    assert response.status_code == 200
    payload = response.get_json()
    assert (payload["width"], payload["height"]) == (3000, 2000)


def test_an_ordinary_photo_gets_the_result_of_the_full_pipeline(client, predictor, campus_dir):
    """A phone JPEG decodes at reduced scale (PIL draft), turned upright, area-resized to the
    page's size, as it always did: the API's mask is the predictor's on that picture."""
    path = campus_dir / "UNH_DL_110.jpg"
    with Image.open(path) as photo:
        turned = photo.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        full = photo.size[::-1] if turned else photo.size
        scale = DISPLAY_MAX_SIDE / max(photo.size)
        photo.draft(None, (math.ceil(photo.width * scale), math.ceil(photo.height * scale)))
        upright = np.asarray(ImageOps.exif_transpose(photo).convert("RGB"))
    if max(upright.shape[:2]) > 2 * DISPLAY_MAX_SIDE:
        size = (DISPLAY_MAX_SIDE, round(upright.shape[1] * DISPLAY_MAX_SIDE / upright.shape[0]))
        upright = cv2.resize(upright, size[::-1], interpolation=cv2.INTER_AREA)
    expected = predictor.predict(upright, (full[1], full[0])).mask
    response = post(client, path.read_bytes(), path.name)
    assert response.status_code == 200, response.get_json()
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(response.get_json()["mask_png"]))))
    np.testing.assert_array_equal(mask, expected)


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    boundary = "limit-test-boundary"
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("path", ["/api/predict", "/"])
def test_form_limits_are_reported_as_what_they_are(client, path):
    parts = [("image", "a.png", encoded(Image.new("RGB", (8, 8)), "PNG"))]
    parts += [(f"note{i}", None, b"x") for i in range(MAX_FORM_PARTS)]
    body, content_type = multipart(parts)
    assert len(body) < 10_000
    response = client.post(path, data=body, content_type=content_type)
    assert response.status_code == 413
    assert refusal(response).startswith(f"the form has more than {MAX_FORM_PARTS} parts: send "
                                        "the photo in the field 'image'")
    assert "MB" not in refusal(response)
    body, content_type = multipart([("crf", None, b"1" * 600_000)])
    response = client.post(path, data=body, content_type=content_type)
    assert response.status_code == 413
    assert refusal(response).startswith("a text field of the form is over 512 KB")


@pytest.mark.parametrize("method, path, allowed", [
    ("GET", "/api/predict", {"POST", "OPTIONS"}), ("DELETE", "/", {"GET", "HEAD", "POST", "OPTIONS"}),
    ("POST", "/healthz", {"GET", "HEAD", "OPTIONS"}),
])
def test_a_method_a_route_does_not_take_gets_405_with_allow(client, method, path, allowed):
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == allowed


@pytest.mark.parametrize("method, path", [("GET", "/"), ("GET", "/healthz"), ("GET", "/missing"),
                                          ("GET", "/static/app.js"), ("GET", "/static/style.css"),
                                          ("GET", "/api/predict"), ("POST", "/api/predict"),
                                          ("POST", "/")])
def test_every_answer_carries_the_security_headers(client, method, path):
    response = client.open(path, method=method)
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert headers["Referrer-Policy"] == "no-referrer"
    if method == "POST":
        assert headers["Cache-Control"] == "no-store"


def test_the_page_has_no_inline_script_or_style(client, campus_dir):
    pages = [client.get("/").get_data(as_text=True),
             post(client, (campus_dir / "UNH_DL_55.jpg").read_bytes(), path="/").get_data(as_text=True),
             post(client, b"not a photo", path="/").get_data(as_text=True)]
    for page in pages:
        assert not re.search(r"<script(?![^>]*\bsrc=)", page)  # every script is a file
        assert "<style" not in page and "style=" not in page
        assert not re.search(r"<[^>]+\son\w+=", page)  # no inline event handlers
        for src in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
            assert client.get(src).status_code == 200, src
    assert "legend-entry" in pages[1] and 'id="error"' in pages[2]


def test_healthz_reports_the_decoding_limit(client):
    payload = client.get("/healthz").get_json()
    assert payload["max_decode_bytes"] == 256 * 2**20 and json.dumps(payload)
