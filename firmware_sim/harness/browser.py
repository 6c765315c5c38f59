"""A real headless Chromium for the pages a person uses, driven by Playwright.

The browser is Debian's ``chromium`` (``.ci/system-packages`` installs it), never
one that Playwright downloads: this machine's network is closed, and the suite
must test the browser an operator's distribution ships. The flags keep Chromium
from reaching for Google's services at start, which a closed network refuses.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, async_playwright

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class BrowserUnavailable(RuntimeError):
    """No system Chromium on this machine (run .ci/system-packages)."""


def chromium_path() -> Path:
    """The system Chromium, or BrowserUnavailable."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise BrowserUnavailable("chromium is not installed; run .ci/system-packages")
    return Path(found)


@asynccontextmanager
async def headless_chromium() -> AsyncIterator[Browser]:
    """A fresh headless Chromium (its own empty profile), closed on exit."""
    executable = chromium_path()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(executable), args=list(CHROMIUM_FLAGS), headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()
