"""The web app: upload a photo, see what the network makes of it.

``python -m helpers.webapp --checkpoint runs/quick/unet-effnet-lite0/best.pt`` serves it with
waitress on http://127.0.0.1:5000 (``make serve``). :func:`create_app` builds the Flask app
for tests and other servers. See :mod:`helpers.webapp.app` for the routes and the limits.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
