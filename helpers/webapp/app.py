"""The Flask app: an upload form, a JSON API and a health check around one :class:`Predictor`.

Routes:

* ``GET /``: the upload form (file field ``image``, optional CRF and sliding windows).
* ``POST /``: the same page with the result: the photo, the overlay, the mask, a legend with
  each class's colour and share of the picture, and the inference time. Pictures are inline
  ``data:`` URIs: nothing is written anywhere.
* ``POST /api/predict`` (multipart field ``image``; optional fields ``crf`` and ``tile`` set
  to ``1``): JSON with ``width`` and ``height`` (after EXIF orientation), ``classes`` (a list
  of ``{name, color, share}``), ``mask_png`` (base64 of the full-size single-channel PNG of
  class ids) and ``inference_ms`` (the network alone; ``total_ms`` adds decoding and
  upsampling).
* ``GET /healthz``: the model, runtime and classes loaded.

Bad input gets a 4xx answer with a one-line message, JSON from the API and HTML from the form,
and the server carries on (docs/bad-input.md lists them): no file or a wrongly named field
(400), an empty, truncated or damaged photo (400), a file that is not a photo in an accepted
format (415, naming the formats: :func:`helpers.imageio.photo_formats`), a body over
``max_upload_bytes`` (413, however large: the server of :mod:`helpers.webapp.server` reads and
discards it so that the client gets the answer), a form with too many parts or an oversized
text field (413, saying so), an image over ``max_pixels`` such as a decompression bomb, or one
whose decoding would take more than ``max_decode_bytes`` of memory (413, both refused from the
header before decoding), a method a route does not take (405 with ``Allow``). Photos are
decoded one at a time, shrunk while decoding to what the page and the network need
(:func:`helpers.imageio.decode_photo`), so memory per request stays bounded. Uploads stay in
memory (the multipart parser is told not to spool them to temporary files) and are dropped
after the answer. The uploaded file name is never used as a path: it is only shown, after
``werkzeug.utils.secure_filename`` (``../../etc/passwd.png`` becomes ``etc_passwd.png``).

Every answer carries ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
``Referrer-Policy: no-referrer`` and a ``Content-Security-Policy`` (:data:`CONTENT_SECURITY_POLICY`)
that the page satisfies: its script and stylesheet are static files, its pictures ``data:``
URIs, and no inline script or style.
"""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

import numpy as np
from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.utils import secure_filename

from ..errors import ImageTooLarge, PhotoError, UnsupportedPhotoFormat
from ..imageio import (
    DEFAULT_MAX_DECODE_BYTES,
    accepted_formats_text,
    encode_jpeg,
    encode_png,
    photo_formats,
    resize_image,
    working_size,
)
from ..inference import resize_labels_nearest
from ..labels import colorize
from ..predict import DEFAULT_MAX_PIXELS, Prediction, Predictor

DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # a 12 MP JPEG is 3-8 MB, a 12 MP PNG up to ~25 MB
DISPLAY_MAX_SIDE = 1024  # pictures in the page; the API's mask is always full size
DEFAULT_TILE = 384
FIELD = "image"
# The form holds the photo and two options: a browser sends 3 parts, a client a few more.
MAX_FORM_PARTS = 16
# The text fields are a few bytes; Werkzeug applies this limit to each 64 KB read too.
MAX_FORM_FIELD_BYTES = 512 * 1024
# Scripts and styles only from this server's own files, pictures also from data: URIs (the
# results are inline), nothing framing the page, forms posting only here.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data:; form-action 'self'; base-uri 'none'; "
                           "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
ACCEPT = "image/jpeg,image/png,image/webp,image/tiff,image/bmp,image/gif,.mpo"

log = logging.getLogger(__name__)


class UploadError(Exception):
    """A request the app refuses, with the HTTP status and a message for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class FormLimitExceeded(RequestEntityTooLarge):
    """A form over the parts or text-field limit (not over the upload size): said as such."""


class _DelimiterCounter:
    """A stream that counts the multipart delimiters read through it (parts + 1)."""

    def __init__(self, stream, boundary: bytes):
        self.stream, self.delimiter = stream, b"--" + boundary
        self.count, self._tail = 0, b""

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        window = self._tail + data  # a delimiter split between two reads is counted once
        self.count += window.count(self.delimiter)
        self._tail = window[-(len(self.delimiter) - 1):]
        return data


class LimitedFormParser(FormDataParser):
    """Werkzeug's form parser, saying which form limit a refused form went over."""

    def _parse_multipart(self, stream, mimetype, content_length, options):
        counter = _DelimiterCounter(stream, options.get("boundary", "").encode("ascii"))
        try:
            return super()._parse_multipart(counter, mimetype, content_length, options)
        except RequestEntityTooLarge:
            if self.max_form_parts is not None and counter.count > self.max_form_parts:
                raise FormLimitExceeded(
                    f"the form has more than {self.max_form_parts} parts: send the photo in the "
                    f"field '{FIELD}' (and at most the options 'crf' and 'tile')") from None
            raise FormLimitExceeded(
                f"a text field of the form is over {self.max_form_memory_size // 1024} KB: "
                f"the photo goes in the file field '{FIELD}', the options 'crf' and 'tile' "
                "are 0 or 1") from None


class InMemoryRequest(Flask.request_class):
    """A request whose uploaded files are parsed into memory, never into temporary files, and
    whose form limits are reported as what they are."""

    form_data_parser_class = LimitedFormParser

    def _get_file_stream(self, total_content_length, content_type, filename=None,
                         content_length=None):
        return io.BytesIO()


def create_app(checkpoint_or_predictor: str | Path | Predictor,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS, runtime: str = "auto",
               max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> Flask:
    """Return the Flask app serving one model.

    ``checkpoint_or_predictor`` is a checkpoint path (loaded once here, with ``runtime``) or a
    ready :class:`Predictor` (shared, e.g. between tests). ``runtime="auto"`` runs the
    fastest runtime measured on this machine (:mod:`helpers.runtime`). Bodies over ``max_upload_bytes``
    get 413; images over ``max_pixels``, or whose decoding would take more than
    ``max_decode_bytes`` of memory, too, before they are decoded.
    """
    predictor = (checkpoint_or_predictor if isinstance(checkpoint_or_predictor, Predictor)
                 else Predictor(checkpoint_or_predictor, runtime=runtime))
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.config.update(MAX_CONTENT_LENGTH=max_upload_bytes, MAX_PIXELS=max_pixels,
                      MAX_DECODE_BYTES=max_decode_bytes, MAX_FORM_PARTS=MAX_FORM_PARTS,
                      MAX_FORM_MEMORY_SIZE=MAX_FORM_FIELD_BYTES, PREDICTOR=predictor)
    model_info = predictor.describe()
    page = {"info": model_info, "limit_mb": max_upload_bytes / 2**20, "accept": ACCEPT,
            "formats": accepted_formats_text()}

    def is_api() -> bool:
        return request.path.startswith("/api/") or request.path == "/healthz"

    def refuse(status: int, message: str):
        if is_api():
            return jsonify(error=message, status=status), status
        return render_template("index.html", error=message, **page), status

    @app.after_request
    def security_headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.method == "POST":  # results hold the user's photo: never cached
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.before_request
    def refuse_large_bodies():
        # Werkzeug trusts a body marked complete by the server (waitress's chunked uploads)
        # and would parse a discarded one as empty: refuse by the length the server counted.
        if request.content_length is not None and request.content_length > max_upload_bytes:
            raise RequestEntityTooLarge()

    @app.errorhandler(UploadError)
    def upload_error(error: UploadError):
        return refuse(error.status, error.message)

    @app.errorhandler(413)
    def too_large(error):
        if isinstance(error, FormLimitExceeded):
            return refuse(413, error.description)
        return refuse(413, f"the upload is larger than the limit of {max_upload_bytes / 2**20:.0f} MB")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        response, status = refuse(error.code or 500, error.description or error.name)
        response = app.make_response((response, status))
        for name, value in error.get_headers():  # Allow on a 405, ...
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("prediction failed")
        return refuse(500, f"the server could not process this image ({type(error).__name__})")

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", max_upload_bytes=max_upload_bytes, max_pixels=max_pixels,
                       max_decode_bytes=max_decode_bytes, formats=list(photo_formats()),
                       num_classes=predictor.classes.num_classes, **model_info)

    @app.get("/")
    def index():
        return render_template("index.html", **page)

    @app.post("/")
    def predict_form():
        filename, prediction = run_prediction()
        return render_template("index.html", result=result_page(filename, prediction), **page)

    @app.post("/api/predict")
    def predict_api():
        filename, prediction = run_prediction()
        return jsonify(
            filename=filename, width=prediction.width, height=prediction.height,
            classes=[{"name": name, "color": list(color), "share": round(float(share), 6)}
                     for name, color, share in zip(predictor.classes.names,
                                                   predictor.classes.colors, prediction.shares,
                                                   strict=True)],
            mask_png=base64.b64encode(encode_png(prediction.mask)).decode("ascii"),
            inference_ms=round(prediction.inference_ms, 1),
            total_ms=round(prediction.total_ms, 1), mode=prediction.mode, crf=prediction.crf,
            model=predictor.model_name)

    def run_prediction() -> tuple[str, Prediction]:
        if FIELD not in request.files:
            sent = ", ".join(sorted(request.files)) or "none"
            raise UploadError(400, f"no file in the form field '{FIELD}' (file fields sent: "
                                   f"{sent}); upload the photo as multipart/form-data field '{FIELD}'")
        upload = request.files[FIELD]
        data = upload.read()
        filename = secure_filename(upload.filename or "") or "upload"
        if not data:
            raise UploadError(400, f"{filename}: the file is empty (0 bytes)")
        crf = _flag(request.form.get("crf"))
        tile = DEFAULT_TILE if _flag(request.form.get("tile")) else 0
        try:
            prediction = predictor.predict_file(data, max_pixels=max_pixels,
                                                overlay_max_side=DISPLAY_MAX_SIDE, crf=crf,
                                                tile=tile, max_decode_bytes=max_decode_bytes)
        except ImageTooLarge as error:
            raise UploadError(413, f"{filename}: {error}; upload a smaller photo") from error
        except UnsupportedPhotoFormat as error:
            raise UploadError(415, f"{filename}: {error}") from error
        except PhotoError as error:
            raise UploadError(400, f"{filename}: {error}; upload the photo again, or another "
                                   f"one ({accepted_formats_text()})") from error
        except ValueError as error:
            raise UploadError(400, f"{filename}: {error}") from error
        except RuntimeError as error:  # CRF asked for but not installed
            raise UploadError(503, str(error)) from error
        return filename, prediction

    return app


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "on", "yes")


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def result_page(filename: str, prediction: Prediction) -> dict:
    """Return what the result page shows: inline pictures, the legend, timings."""
    size = working_size(prediction.height, prediction.width, DISPLAY_MAX_SIDE)
    photo = resize_image(prediction.image, size)
    mask = resize_labels_nearest(prediction.mask, size)
    classes = prediction.classes
    legend = sorted(
        ({"name": name, "color": "#{:02x}{:02x}{:02x}".format(*color), "share": float(share)}
         for name, color, share in zip(classes.names, classes.colors, prediction.shares,
                                       strict=True)),
        key=lambda entry: -entry["share"])
    return {
        "filename": filename, "width": prediction.width, "height": prediction.height,
        "photo": _data_uri(encode_jpeg(photo), "image/jpeg"),
        "overlay": _data_uri(encode_jpeg(prediction.overlay(DISPLAY_MAX_SIDE, legend=False)),
                             "image/jpeg"),
        "mask": _data_uri(encode_png(np.ascontiguousarray(colorize(mask, classes))), "image/png"),
        "mask_download": _data_uri(encode_png(prediction.mask), "image/png"),
        "mask_name": f"{Path(filename).stem}_mask.png",
        "legend": legend, "inference_ms": prediction.inference_ms,
        "total_ms": prediction.total_ms, "mode": prediction.mode, "crf": prediction.crf,
        "working_size": prediction.working_size,
    }
