"""Drive the web app in a real browser: a background server and a headless-Chromium session.

Used by the end-to-end test and by ``benchmarks/screenshot_webapp.py``, which writes the
README's picture of the app. Chromium is Debian's (``apt-get install chromium``) driven by
Playwright's Python API; no browser is downloaded.
"""

from __future__ import annotations

import threading
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
# Run in every page before its own scripts: records what the Content-Security-Policy blocked.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (event) {
    window.__cspViolations.push(event.violatedDirective + " blocked " + (event.blockedURI || "inline"));
});
"""


class BackgroundServer:
    """A waitress server for a WSGI app in a daemon thread, on a free port of 127.0.0.1.

    Use as a context manager; ``url`` is its address (``http://127.0.0.1:PORT``).
    """

    def __init__(self, app, threads: int = 4):
        from .server import make_server

        self.server = make_server(app, host="127.0.0.1", port=0, threads=threads)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self._stopping = False

    def _serve(self) -> None:
        try:
            self.server.run()
        except OSError:  # the sockets were closed under the event loop by __exit__
            if not self._stopping:
                raise

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping = True
        self.server.task_dispatcher.shutdown()
        for channel in list(self.server._map.values()):  # open client connections, then the listener
            if channel is not self.server:
                channel.close()
        self.server.close()
        self.thread.join(timeout=10)


def upload_in_browser(url: str, photo: str | Path, screenshot: str | Path | None = None,
                      options: tuple[str, ...] = (), width: int = 1280, height: int = 900,
                      timeout_s: float = 120) -> dict:
    """Upload a photo through the page at ``url`` in headless Chromium; return what rendered.

    Ticks the form's checkboxes named in ``options`` (``"tile"``, ``"crf"``), waits for the
    result, and returns the overlay's natural size, the legend entries' text, the error
    message shown (if any) and ``console_errors``: the errors the browser logged on the form
    and the result page, Content-Security-Policy violations included (they should be none).
    ``screenshot`` saves a full-page PNG.
    """
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        raise FileNotFoundError(f"{CHROMIUM} not found: install Debian's chromium "
                                "(apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_s * 1000)
            errors: list[str] = []
            page.on("console", lambda message: errors.append(message.text)
                    if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.add_init_script(RECORD_CSP_VIOLATIONS)
            page.goto(url)
            page.wait_for_load_state("load")
            errors += page.evaluate("window.__cspViolations")
            page.set_input_files("input[name=image]", str(photo))
            for option in options:
                page.check(f"input[name={option}]")
            with page.expect_navigation():
                page.click("#submit")
            page.wait_for_selector("#result, #error")
            page.wait_for_function(
                "() => Array.from(document.images).every(img => img.complete)")
            found = page.evaluate("""() => {
                const overlay = document.getElementById('overlay');
                const error = document.getElementById('error');
                return {
                    overlay_width: overlay ? overlay.naturalWidth : 0,
                    overlay_height: overlay ? overlay.naturalHeight : 0,
                    mask_width: document.getElementById('mask')?.naturalWidth || 0,
                    legend: Array.from(document.querySelectorAll('#legend .legend-entry'))
                        .map(li => li.innerText.replace(/\\s+/g, ' ').trim()),
                    timing: document.getElementById('timing')?.innerText || '',
                    error: error ? error.innerText : null,
                };
            }""")
            errors += page.evaluate("window.__cspViolations")
            found["console_errors"] = errors
            if screenshot:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return found
