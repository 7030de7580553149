"""The web app: upload a photo, see what the network makes of it.

``python -m helpers.webapp --checkpoint runs/quick/unet-effnet-lite0/best.pt`` serves it with
waitress on http://127.0.0.1:5000 (``make serve``). :func:`create_app` builds the Flask app
for tests and other servers. See :mod:`helpers.webapp.app` for the routes and the limits.
"""

from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str):
    # Imported on first use, so that ``python -m helpers.webapp`` can configure OpenMP
    # before torch loads (see helpers.webapp.__main__).
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
