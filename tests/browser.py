"""A real headless Chromium for the tests that look at a page as a person does (Debian chromium + chromedriver,
driven by Selenium; ``scripts/setup-test-tools.sh`` installs them).

Used by ``tests/test_web_page.py`` (CardSense's page) and ``tests/test_visualdl_board.py`` (VisualDL's board).
Set ``CARDSENSE_UPDATE_SCREENSHOT=1`` to copy the screenshots those tests take into ``docs/``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DOCS = Path(__file__).resolve().parent.parent / "docs"
# No network, no first-run chores: the machine has none to give (and CI must not need it).
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--no-first-run",
                  "--disable-extensions", "--lang=en-US")


def browser_or_skip() -> None:
    """Skip (fail under CI) when Chromium, chromedriver or Selenium is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("python package selenium")
    if missing:
        message = f"browser test needs {', '.join(missing)} (run scripts/setup-test-tools.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def start_browser(width: int = 1100, height: int = 1300):
    """A headless Chromium driven by Selenium (the caller quits it)."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*CHROMIUM_FLAGS, f"--window-size={width},{height}"):
        options.add_argument(arg)
    # Selenium drives the Debian chromedriver directly: it never tries to download one.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    return driver


def keep_screenshot(shot: Path, name: str) -> None:
    """Copy a test's screenshot to ``docs/<name>`` when ``CARDSENSE_UPDATE_SCREENSHOT=1``."""
    assert shot.stat().st_size > 10_000, f"{shot} looks empty"
    if os.environ.get("CARDSENSE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, DOCS / name)
