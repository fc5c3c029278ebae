"""Headless Chromium for the dashboard's tests and the README's screenshots: the system's own Chromium
(Debian's `chromium`, or TUNELOOP_CHROMIUM), driven by Playwright; nothing is downloaded."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("TUNELOOP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH, HEIGHT = 1280, 860


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if CHROMIUM is None:
        return "no Chromium here (apt-get install chromium, or set TUNELOOP_CHROMIUM)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


@contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, base_url: str):
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT}, base_url=base_url)
    context.set_default_timeout(30_000)
    return context.new_page()


def sign_in(page, key: str) -> None:
    page.goto("/ui/login")
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui")


def screenshot(page, path: Path, full_page: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=full_page)
    return path
