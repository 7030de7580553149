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
    app = create_app(Predictor(smoke_checkpoint, runtime="torch"))
    with BackgroundServer(app) as running:
        yield running


def test_upload_a_campus_photo_and_see_the_result(server, campus_dir):
    shot = ARTIFACTS / "webapp.png"
    shot.unlink(missing_ok=True)
    found = upload_in_browser(server.url, campus_dir / "UNH_DL_110.jpg", screenshot=shot)
    assert found["error"] is None
    assert found["console_errors"] == []  # the Content-Security-Policy blocked nothing
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
    assert "notes.jpg: a text file, not an image in an accepted format" in found["error"]
    assert all("Content Security Policy" not in e for e in found["console_errors"])


@pytest.fixture()
def page(server):
    from playwright.sync_api import sync_playwright

    from helpers.webapp.browser import CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(120_000)
            page.goto(server.url)
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="module")
def huge_photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    path.write_bytes(b"\0" * 64 * 2**20)  # 64 MiB, over the default 25 MB limit
    return path


def test_an_over_limit_photo_is_refused_in_the_page_before_sending(page, huge_photo):
    posts = []
    page.on("request", lambda request: posts.append(request) if request.method == "POST" else None)
    page.set_input_files("input[name=image]", str(huge_photo))
    page.click("#submit")
    message = page.wait_for_selector("#error").inner_text()
    assert "huge.jpg is 64.0 MB, larger than the limit of 25 MB" in message
    assert posts == [], "the page sent the over-limit photo"


def test_an_over_limit_upload_that_skips_the_page_check_gets_the_413_page(page, huge_photo):
    page.set_input_files("input[name=image]", str(huge_photo))
    # HTMLFormElement.submit() sends the form without a submit event: the page's check never runs.
    with page.expect_navigation() as navigation:
        page.evaluate("HTMLFormElement.prototype.submit.call(document.getElementById('upload'))")
    assert navigation.value.status == 413
    assert "larger than the limit of 25 MB" in page.inner_text("#error")


def test_the_policy_blocks_what_it_should_and_the_page_needs_nothing_else(server, page):
    """The page runs under its Content-Security-Policy with no violation, and an inline script
    injected into it is refused (the policy is really enforced)."""
    from helpers.webapp.browser import RECORD_CSP_VIOLATIONS

    page.add_init_script(RECORD_CSP_VIOLATIONS)
    page.goto(server.url)
    assert page.evaluate("window.__cspViolations") == []
    page.evaluate("""() => {
        const script = document.createElement('script');
        script.textContent = 'window.__injected = true';
        document.body.appendChild(script);
    }""")
    page.wait_for_function("() => window.__cspViolations.length > 0")
    assert page.evaluate("window.__injected") is None
    assert page.evaluate("window.__cspViolations")[0].startswith("script-src")
    # The page's own script (a file) still runs under the policy: the tests below see it
    # refuse an over-limit photo before anything is sent.
