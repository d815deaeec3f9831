"""Screenshot a clipcli HTML page in headless Chromium, for the docs.

    .venv/bin/python scripts/screenshot_html.py search.html docs/search.png --width 1280

It takes the screenshot exactly as the browser tests do (tests/views/headless_browser.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# One way to call Chromium, shared with the browser tests, which live outside the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "views"))

from headless_browser import ScreenshotError, screenshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="the page to draw")
    parser.add_argument("png", type=Path, help="where to save the screenshot")
    parser.add_argument("--width", type=int, default=1280, help="window width, px")
    parser.add_argument("--height", type=int, default=900, help="window height, px")
    args = parser.parse_args(argv)
    if not args.html.is_file():
        parser.error(f"{args.html}: no such file")
    try:
        png = screenshot(args.html, args.png, width=args.width, height=args.height)
    except ScreenshotError as exc:
        print(f"screenshot_html: {exc}", file=sys.stderr)
        return 1
    print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
