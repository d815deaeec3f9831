"""A page as a browser draws it: a screenshot taken by headless Chromium.

Shared by the browser tests and scripts/screenshot_html.py, so the docs show pages drawn
exactly as the tests check them.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser")
SCREENSHOT_TIMEOUT_S = 60


class ScreenshotError(RuntimeError):
    """Chromium did not write the screenshot; the message holds the end of what it said."""


def find_chromium() -> str | None:
    """The Chromium on PATH (Debian's `chromium`, Ubuntu's `chromium-browser`), if any."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(
    html: Path,
    png: Path,
    *,
    width: int = 1280,
    height: int = 900,
    chromium: str | None = None,
    timeout_s: float = SCREENSHOT_TIMEOUT_S,
) -> Path:
    """Draw the page `html` in a `width` x `height` window and save what shows as `png`.

    A fresh profile each time, and Chromium's background requests (updates, safe browsing)
    turned off: the page is all it loads. --no-sandbox lets it run as root in containers.
    """
    browser = chromium or find_chromium()
    if browser is None:
        raise ScreenshotError("no Chromium found (install Debian's `chromium`)")
    png = png.absolute()
    png.unlink(missing_ok=True)  # so that an old screenshot cannot pass for a new one
    with tempfile.TemporaryDirectory(prefix="clipcli-chromium-") as profile:
        command = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={png}",
            html.absolute().as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ScreenshotError(f"Chromium took over {timeout_s:g} s") from None
    if not png.is_file():
        said = (done.stdout + done.stderr).strip()[-2000:]
        raise ScreenshotError(f"Chromium wrote no screenshot (exit {done.returncode}): {said}")
    return png
