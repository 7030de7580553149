"""End to end in a real browser: headless Chromium uploads a campus photo to the running app."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.predict import Predictor
from helpers.webapp import create_app
from helpers.webapp.browser import CHROMIUM, BackgroundServer, upload_in_browser

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(),
                                reason=f"{CHROMIUM} not found (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(smoke_checkpoint):
    pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    app = create_app(Predictor(smoke_checkpoint, runtime="torch"))
    with BackgroundServer(app) as running:
        yield running


def test_upload_a_campus_photo_and_see_the_result(server, campus_dir):
    shot = ARTIFACTS / "webapp.png"
    shot.unlink(missing_ok=True)
    found = upload_in_browser(server.url, campus_dir / "UNH_DL_110.jpg", screenshot=shot)
    assert found["error"] is None
    assert found["overlay_width"] > 0 and found["overlay_height"] > found["overlay_width"]
    assert found["mask_width"] == found["overlay_width"]
    names = [entry.split()[0] for entry in found["legend"]]
    assert sorted(names) == sorted(["sky", "building", "pole", "road", "pavement", "tree",
                                    "sign_symbol", "fence", "car", "pedestrian", "bicyclist"])
    assert all(entry.endswith("%") for entry in found["legend"])
    assert "Network" in found["timing"]
    assert shot.is_file() and shot.stat().st_size > 50_000


def test_a_bad_file_shows_an_error_in_the_page(server, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a photo")
    found = upload_in_browser(server.url, bad)
    assert found["overlay_width"] == 0
    assert "not an image" in found["error"]
