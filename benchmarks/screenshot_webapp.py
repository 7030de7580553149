"""Write figures/webapp.png: the web app in headless Chromium showing a campus photo's result.

    python benchmarks/screenshot_webapp.py [--checkpoint runs/quick/unet-effnet-lite0/best.pt]
        [--photo ../shared/data/campus/UNH_DL_110.jpg] [--out figures/webapp.png]

Needs Debian's chromium (``apt-get install chromium``) and the trained checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helpers.config import project_path
from helpers.data import find_campus
from helpers.predict import Predictor
from helpers.webapp import create_app
from helpers.webapp.browser import BackgroundServer, upload_in_browser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(project_path("runs", "quick", "unet-effnet-lite0", "best.pt")))
    parser.add_argument("--photo", default=None, help="default: UNH_DL_110.jpg of the campus photos")
    parser.add_argument("--out", default=str(project_path("figures", "webapp.png")))
    args = parser.parse_args(argv)
    try:
        predictor = Predictor(args.checkpoint)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    predictor.warmup()
    photo = args.photo or find_campus() / "UNH_DL_110.jpg"
    with BackgroundServer(create_app(predictor)) as server:
        found = upload_in_browser(server.url, photo, screenshot=args.out)
    if found["error"]:
        print(f"error: the app answered: {found['error']}", file=sys.stderr)
        return 1
    print(f"wrote {Path(args.out)} ({found['timing']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
