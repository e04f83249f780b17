"""The web page in a real headless browser (Debian chromium + chromedriver, driven by Selenium).

``scripts/setup-test-tools.sh`` installs the browser. Set ``CARDSENSE_UPDATE_SCREENSHOT=1`` to
refresh ``docs/web-page.png`` from this test.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.conftest import REPO, card_csv, card_png, encode_multipart, http

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser_or_skip():
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


@pytest.fixture(scope="module")
def browser():
    _browser_or_skip()
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--no-first-run",
                "--disable-extensions", "--window-size=1100,1300", "--lang=en-US"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_results(driver, count: int, timeout: float = 30):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def done(d):
        items = d.find_elements(By.CSS_SELECTOR, "#results .result")
        states = [e.get_attribute("data-state") for e in items]
        return items if len(items) >= count and all(s in ("done", "error") for s in states) else False

    return WebDriverWait(driver, timeout).until(done)


def test_upload_cards_and_see_the_diagnosis(browser, gunicorn_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    png = tmp_path / "well-12_card.png"
    png.write_bytes(card_png("pound"))
    csv_file = tmp_path / "well-40_card.csv"
    csv_file.write_bytes(card_csv("dome"))
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot a card at all")

    # What the service answers for these cards, to compare with what the page shows.
    expected = {}
    for path, ctype in ((png, "image/png"), (csv_file, "text/csv")):
        body, content_type = encode_multipart([("file", path.name, path.read_bytes(), ctype)])
        status, _, raw = http("POST", gunicorn_server.url + "/classify", body, {"Content-Type": content_type})
        assert status == 200
        expected[path.name] = json.loads(raw)

    browser.get(gunicorn_server.url + "/")
    WebDriverWait(browser, 20).until(
        lambda d: "tiny-test" in d.find_element(By.ID, "model-info").text
    )
    assert "CPU" in browser.find_element(By.ID, "model-info").text
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in (png, csv_file, bad)))
    items = _wait_results(browser, 3)
    by_file = {e.get_attribute("data-file"): e for e in items}

    for name, answer in expected.items():
        item = by_file[name]
        assert item.get_attribute("data-state") == "done"
        assert item.find_element(By.CSS_SELECTOR, ".label").text == answer["label"]
        assert item.find_element(By.CSS_SELECTOR, ".name-zh").text == answer["name"]
        assert item.find_element(By.CSS_SELECTOR, ".name-en").text == answer["name_en"]
        bars = item.find_elements(By.CSS_SELECTOR, ".bars .row")
        assert len(bars) == 12
        best = item.find_element(By.CSS_SELECTOR, ".bars .best .code").text
        assert best.startswith(answer["label"])
        for img in item.find_elements(By.CSS_SELECTOR, ".images img"):
            assert img.get_attribute("src").startswith("data:image/png;base64,")
            assert browser.execute_script("return arguments[0].naturalWidth", img) == 400

    failed = by_file["photo.png"]
    assert failed.get_attribute("data-state") == "error"
    assert "422" in failed.find_element(By.CSS_SELECTOR, ".error").text

    shot = tmp_path / "web-page.png"
    browser.find_element(By.TAG_NAME, "body")
    # Show the PNG card first in the screenshot.
    browser.execute_script(
        "const r=document.getElementById('results');"
        "const f=[...r.children].find(e=>e.dataset.file===arguments[0]); if(f) r.prepend(f);", png.name
    )
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("CARDSENSE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, REPO / "docs" / "web-page.png")
