"""Launch Debian's chromium through Playwright (never a Playwright browser download)."""

from __future__ import annotations

import shutil
from contextlib import contextmanager

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def require_chromium() -> None:
    if not shutil.which("chromium") and not __import__("os").path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (make test installs it: apt-get install chromium)")


@contextmanager
def browser_page():
    """Yield a fresh Playwright page in headless Debian chromium."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()
