"""The demo inside notebook 06: an upload widget, and the web app opened from a notebook.

* :func:`upload_widget` is an ipywidgets ``FileUpload`` with an output area: a photo in, its
  overlay, colour mask and each class's share of the picture out. Its handler,
  :func:`handle_upload`, is a plain function (the widget's value in, :class:`UploadResult`
  objects out) that tests and the notebook call directly; :func:`segment_photo` does one photo.
  Both widget value formats are read: ipywidgets 8's tuple of dicts and ipywidgets 7's dict by
  file name (Colab's preinstalled version).
* :func:`open_webapp` starts the Flask app of :mod:`helpers.webapp` on a free port of
  127.0.0.1 in a background thread and shows where to open it: on Colab through Colab's port
  proxy (``google.colab.output``: the app listens inside the Colab machine, which the browser
  cannot reach directly), elsewhere as a link to 127.0.0.1. :meth:`WebApp.stop` stops it;
  opening another stops the previous one.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .imageio import ImageTooLarge
from .labels import colorize
from .predict import DEFAULT_MAX_PIXELS, Prediction, Predictor

# Long side of the pictures the widget shows (the mask itself stays at the photo's full size).
DISPLAY_MAX_SIDE = 800
ACCEPTED = ".jpg,.jpeg,.png,.bmp,.tif,.tiff,.webp"


@dataclass
class UploadResult:
    """One uploaded photo and what the network made of it (``error`` set when it failed)."""

    name: str
    prediction: Prediction | None = None
    error: str | None = None

    @property
    def overlay(self) -> np.ndarray:
        """The photo with the class colours over it, RGB uint8, long side at most 800."""
        return self.prediction.overlay(DISPLAY_MAX_SIDE, legend=False)

    @property
    def colour_mask(self) -> np.ndarray:
        """The full-size mask in the class colours, RGB uint8 (the photo's size)."""
        return colorize(self.prediction.mask, self.prediction.classes)

    def shares(self, min_share: float = 0.001):
        """Return a DataFrame of the classes covering at least ``min_share`` of the picture,
        largest first: share in percent and the class colour."""
        import pandas as pd

        classes = self.prediction.classes
        rows = [{"class": name, "share (%)": round(100 * float(share), 2),
                 "colour": "#{:02x}{:02x}{:02x}".format(*color)}
                for name, color, share in zip(classes.names, classes.colors,
                                              self.prediction.shares, strict=True)
                if share >= min_share]
        return pd.DataFrame(rows).sort_values("share (%)", ascending=False).set_index("class")

    def figure(self):
        """Return a figure of the photo, the overlay and the colour mask, with a legend."""
        from matplotlib.figure import Figure

        from .imageio import resize_image, working_size
        from .inference import resize_labels_nearest
        from .plots import legend_handles

        prediction = self.prediction
        size = working_size(prediction.height, prediction.width, DISPLAY_MAX_SIDE)
        photo = resize_image(prediction.image, size)
        mask = colorize(resize_labels_nearest(prediction.mask, size), prediction.classes)
        # A Figure not registered with pyplot: shown where it is displayed, never twice.
        fig = Figure(figsize=(11, 4.6))
        axes = fig.subplots(1, 3)
        titles = (f"{self.name} ({prediction.width}x{prediction.height})",
                  f"overlay ({prediction.total_ms:.0f} ms)", "mask")
        for ax, picture, title in zip(axes, (photo, self.overlay, mask), titles, strict=True):
            ax.imshow(picture)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        present = prediction.shares >= 0.001
        handles = [h for h, keep in zip(legend_handles(prediction.classes, prediction.shares),
                                        present, strict=True) if keep]
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=8,
                   frameon=False)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        return fig


def segment_photo(predictor: Predictor, data: bytes, name: str = "upload",
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> UploadResult:
    """Return the :class:`UploadResult` of one photo's bytes (any size; EXIF orientation applied).

    A file that is not a readable image, or larger than ``max_pixels``, gives a result with
    ``error`` set to a one-line message naming the file, instead of raising.
    """
    if not data:
        return UploadResult(name, error=f"{name}: the file is empty (0 bytes)")
    try:
        prediction = predictor.predict_file(bytes(data), max_pixels=max_pixels,
                                            overlay_max_side=DISPLAY_MAX_SIDE)
    except ImageTooLarge as error:
        return UploadResult(name, error=f"{name}: {error}")
    except ValueError as error:
        return UploadResult(name, error=f"{name}: {error}. Upload a JPEG, PNG, BMP, TIFF or "
                                        "WebP photo.")
    return UploadResult(name, prediction)


def uploaded_files(value) -> list[tuple[str, bytes]]:
    """Return ``(name, bytes)`` of each file in a ``FileUpload`` value.

    ipywidgets 8 gives a tuple of dicts with ``name`` and ``content`` (a memoryview);
    ipywidgets 7 a dict from file name to ``{"metadata": ..., "content": bytes}``.
    """
    if isinstance(value, dict):
        return [(name, bytes(entry["content"])) for name, entry in value.items()]
    return [(entry["name"], bytes(entry["content"])) for entry in value or ()]


def handle_upload(predictor: Predictor, value) -> list[UploadResult]:
    """The upload widget's handler: segment every photo of a ``FileUpload`` value."""
    return [segment_photo(predictor, data, name) for name, data in uploaded_files(value)]


def show(result: UploadResult) -> None:
    """Display one result in the notebook: the figure and the class shares, or the error."""
    from IPython.display import display

    if result.error:
        print(result.error)
        return
    display(result.figure(), result.shares())


def upload_widget(predictor: Predictor):
    """Return the widget of notebook 06: a ``FileUpload`` and an output area showing
    :func:`show` of each photo uploaded (JupyterLab, Jupyter Notebook, VS Code and Colab).

    Without ipywidgets installed, prints how to install it and returns None.
    """
    try:
        import ipywidgets
    except ImportError:
        print("The upload widget needs ipywidgets (a dependency of the project): "
              "pip install 'ipywidgets>=7.6', then restart the kernel.")
        return None

    upload = ipywidgets.FileUpload(accept=ACCEPTED, multiple=False, description="Photo")
    output = ipywidgets.Output()

    def on_upload(change) -> None:
        with output:
            output.clear_output(wait=True)
            for result in handle_upload(predictor, change["new"]):
                show(result)

    upload.observe(on_upload, names="value")
    return ipywidgets.VBox([ipywidgets.HTML("Choose a photo (JPEG, PNG, ...): the network labels "
                                            "every pixel."), upload, output])


# --------------------------------------------------------------------------- the web app


def in_colab() -> bool:
    """Return whether this kernel runs on Google Colab."""
    return "google.colab" in sys.modules


class WebApp:
    """The web app serving in a background thread of this process, on 127.0.0.1."""

    def __init__(self, app):
        from .webapp.browser import BackgroundServer

        self._server = BackgroundServer(app).__enter__()
        self.port = int(self._server.server.effective_port)
        self.url = self._server.url  # as seen from this machine
        self.running = True

    def get(self, path: str = "/", timeout: float = 30) -> tuple[int, bytes]:
        """Return ``(status, body)`` of a GET request to the app, past any HTTP proxy."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.url + path, timeout=timeout) as answer:
            return answer.status, answer.read()

    def health(self) -> dict:
        """Return the app's ``/healthz`` answer (model, runtime, classes)."""
        status, body = self.get("/healthz")
        if status != 200:
            raise RuntimeError(f"{self.url}/healthz answered {status}")
        return json.loads(body)

    def stop(self) -> None:
        """Stop the server (its port is free again)."""
        if self.running:
            self._server.__exit__(None, None, None)
            self.running = False
            if _running.get("app") is self:
                _running.pop("app")

    def __repr__(self) -> str:
        return f"WebApp({self.url}, {'running' if self.running else 'stopped'})"


_running: dict[str, WebApp] = {}


def open_webapp(checkpoint_or_predictor: str | Path | Predictor, show_link: bool = True,
                iframe_height: int = 0) -> WebApp:
    """Start the web app on a free port of 127.0.0.1 and show where to open it; return it.

    On Colab the page opens through Colab's port proxy
    (``google.colab.output.serve_kernel_port_as_window``, or ``serve_kernel_port_as_iframe``
    inside the notebook when ``iframe_height`` is set); elsewhere through a link to 127.0.0.1
    (or an iframe). A web app this function started before is stopped first.
    """
    from .webapp import create_app

    if previous := _running.get("app"):
        previous.stop()
    webapp = WebApp(create_app(checkpoint_or_predictor))
    _running["app"] = webapp
    if not show_link:
        return webapp
    if in_colab():
        from google.colab import output

        if iframe_height:
            output.serve_kernel_port_as_iframe(webapp.port, path="/", height=str(iframe_height))
        else:
            output.serve_kernel_port_as_window(webapp.port, path="/",
                                               anchor_text="Open the web app in a new tab")
    else:
        from IPython.display import HTML, IFrame, display

        if iframe_height:
            display(IFrame(webapp.url, width="100%", height=iframe_height))
        else:
            display(HTML(f'<a href="{webapp.url}" target="_blank">Open the web app in a new tab '
                         f"({webapp.url})</a>"))
    return webapp
