"""A real headless Chromium for the tests that look at a page as a person does (Debian chromium + chromedriver,
driven by Selenium; ``scripts/setup-test-tools.sh`` installs them).

Used by ``tests/test_web_page.py`` (CardSense's page) and ``tests/test_visualdl_board.py`` (VisualDL's board).
Set ``CARDSENSE_UPDATE_SCREENSHOT=1`` to copy the web page's screenshot into ``docs/``. The board's screenshots
in the docs come from a real run:

    python -m tests.browser visualdl http://127.0.0.1:8040 docs/     # a running `visualdl --logdir log ...`
"""

from __future__ import annotations

import os
import shutil
import sys
import time
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


# VisualDL's tabs: (page under /app/, text the tab shows once a run's data is there, chart groups to open,
# screenshot name). BOARD_BLANK is what a tab says when the board reads nothing (VisualDL's locales/en).
BOARD_TABS = (
    ("scalar", "holdout", ("holdout", "train"), "visualdl-scalars.png"),
    ("sample/image", "cards_input/A01", (), "visualdl-samples.png"),
    ("pr-curve", "holdout_pr", (), "visualdl-pr-curves.png"),
    ("histogram", "params", (), "visualdl-histograms.png"),
    ("hyper-parameter", "final/holdout_acc", (), "visualdl-hparams.png"),
    ("graph/dynamic_graph", "Choose a model", (), "visualdl-graph.png"),
)
BOARD_BLANK = "No visualized data"


def board_screenshots(driver, board: str, out_dir: Path) -> list[Path]:
    """Open each VisualDL tab, check it shows a run's data (not the blank page), and save a screenshot of it.

    Raises:
        AssertionError: a tab stays blank or draws nothing.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shots = []
    for page, shown, groups, name in BOARD_TABS:
        driver.get(f"{board}/app/{page}")
        WebDriverWait(driver, 30).until(lambda d: shown in d.find_element(By.TAG_NAME, "body").text,
                                        message=f"{page}: {shown!r} never appeared")
        headers = [driver.find_element(By.XPATH, f"//*[normalize-space(text())='{g}']") for g in groups]
        for header in headers:  # the scalar tab opens only its first group of charts
            header.click()
        time.sleep(2)  # charts animate in
        if headers:  # the screenshot starts at the first group opened
            driver.execute_script("arguments[0].scrollIntoView(); window.scrollBy(0, -70);", headers[0])
            time.sleep(0.5)
        assert BOARD_BLANK not in driver.find_element(By.TAG_NAME, "body").text, page
        assert driver.find_elements(By.CSS_SELECTOR, "canvas, svg g"), f"{page}: nothing drawn"
        shot = Path(out_dir) / name
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000, f"{shot} looks empty"
        shots.append(shot)
    return shots


def main(argv: list[str]) -> int:
    """``python -m tests.browser visualdl URL OUT_DIR``: screenshots of a running board's tabs."""
    if len(argv) != 3 or argv[0] != "visualdl":
        print("usage: python -m tests.browser visualdl URL OUT_DIR", file=sys.stderr)
        return 2
    driver = start_browser(1400, 1000)
    try:
        for shot in board_screenshots(driver, argv[1].rstrip("/"), Path(argv[2])):
            print(shot)
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
