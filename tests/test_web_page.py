"""The web page in a real headless browser (Debian chromium + chromedriver, driven by Selenium).

``scripts/setup-test-tools.sh`` installs the browser. Set ``CARDSENSE_UPDATE_SCREENSHOT=1`` to refresh
``docs/web-page.png`` from this test (the page over the shipped models).
"""

from __future__ import annotations

import json

import pytest

from serving.accuracy import accuracy_figures
from tests.browser import browser_or_skip, keep_screenshot, start_browser
from tests.conftest import REPO, GunicornServer, card_csv, card_png, encode_multipart, http
from tests.notcards import notcard_images


@pytest.fixture(scope="module")
def browser():
    browser_or_skip()
    driver = start_browser(1100, 1300)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory):
    """gunicorn over the shipped image, series and dual models, as a fresh install serves them."""
    with GunicornServer(None, tmp_path_factory.mktemp("shipped") / "gunicorn.log", CARDSENSE_WORKERS="1") as server:
        yield server


def _wait_results(driver, count: int, timeout: float = 60):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def done(d):
        items = d.find_elements(By.CSS_SELECTOR, "#results .result")
        states = [e.get_attribute("data-state") for e in items]
        return items if len(items) >= count and all(s in ("done", "error") for s in states) else False

    return WebDriverWait(driver, timeout).until(done)


def _open(driver, url: str, model_text: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    WebDriverWait(driver, 30).until(lambda d: model_text in d.find_element(By.ID, "model-info").text)


def _axis_titles(figure) -> list[str]:
    from selenium.webdriver.common.by import By

    return [t.text for t in figure.find_elements(By.CSS_SELECTOR, ".axis-title")]


def _pictures_load(driver, figure) -> list[int]:
    """The natural width of every picture drawn in a figure (0 = a broken image)."""
    from selenium.webdriver.common.by import By

    widths = []
    for image in figure.find_elements(By.CSS_SELECTOR, "image"):
        widths.append(driver.execute_async_script(
            "const done = arguments[1]; const i = new Image();"
            "i.onload = () => done(i.naturalWidth); i.onerror = () => done(0); i.src = arguments[0];",
            image.get_attribute("href")))
    return widths


def test_upload_cards_and_see_the_diagnosis(browser, gunicorn_server, tmp_path):
    from selenium.webdriver.common.by import By

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

    _open(browser, gunicorn_server.url, "tiny-test")
    header = browser.find_element(By.ID, "model-info").text
    assert "CPU" in header
    # a model without a field figure shows what it has, with where it comes from
    assert "0.0 % on held-out cards (source not recorded)" in header
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in (png, csv_file, bad)))
    items = _wait_results(browser, 3)
    # oldest first, numbered: the list reads in the order the files were given
    assert [e.get_attribute("data-file") for e in items] == [png.name, csv_file.name, bad.name]
    assert [e.find_element(By.CSS_SELECTOR, ".number").text for e in items] == ["#1", "#2", "#3"]
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
        for figure in item.find_elements(By.CSS_SELECTOR, "figure"):
            assert all(w == 400 for w in _pictures_load(browser, figure)), name
        # the input the image model read: the filled card, in relative axes
        seen = item.find_element(By.CSS_SELECTOR, ".input-figure")
        assert seen.get_attribute("data-shows") == "image"
        assert _axis_titles(seen)[0].startswith("position (relative")

        # the runner-up, the measures with their units and the condition's advice
        assert item.get_attribute("data-unknown") == "false"
        assert not item.find_element(By.CSS_SELECTOR, ".unknown").is_displayed()
        second = answer["top2"][1]
        assert item.find_element(By.CSS_SELECTOR, ".facts .second").text.startswith(second["label"])
        advice = item.find_element(By.CSS_SELECTOR, ".facts .advice")
        assert answer["advice"]["cause_en"] in advice.text and answer["advice"]["remedy"] in advice.text

    png_measures = by_file[png.name].find_element(By.CSS_SELECTOR, ".facts .measures").text
    assert "fractions of the image" in png_measures and "fillage" in png_measures
    csv_measures = by_file[csv_file.name].find_element(By.CSS_SELECTOR, ".facts .measures")
    peak = csv_measures.find_element(By.CSS_SELECTOR, "[data-measure=peak_load] .measure-value").text
    assert peak.endswith(" kN") and 60 < float(peak.split()[0]) < 75
    assert csv_measures.find_element(By.CSS_SELECTOR, "[data-measure=stroke] .measure-value").text == "3.00 m"

    png_card = by_file[png.name].find_element(By.CSS_SELECTOR, ".card-figure")
    assert _axis_titles(png_card) == ["position (relative, 0–1 of the card)", "load (relative)"]
    csv_card = by_file[csv_file.name].find_element(By.CSS_SELECTOR, ".card-figure")
    assert _axis_titles(csv_card) == ["position (m)", "load (kN)"]
    ticks = [float(t.text) for t in csv_card.find_elements(By.CSS_SELECTOR, ".tick-label")]
    assert max(ticks) >= 3.0 and max(ticks) > 60  # metres up to 3, kilonewtons up to about 70

    failed = by_file["photo.png"]
    assert failed.get_attribute("data-state") == "error"
    assert "422" in failed.find_element(By.CSS_SELECTOR, ".error").text

    # the API description is linked from the page and is there
    link = browser.find_element(By.ID, "openapi-link").get_attribute("href")
    status, _, raw = http("GET", link)
    assert status == 200 and json.loads(raw)["openapi"].startswith("3.1")


def test_a_picture_that_is_no_card_reads_as_none_of_the_twelve(browser, gunicorn_server, tmp_path):
    from selenium.webdriver.common.by import By

    smiley = tmp_path / "smiley.png"
    smiley.write_bytes(next(n for n in notcard_images() if n.kind == "smiley").png)
    card = tmp_path / "card.png"
    card.write_bytes(card_png("normal", 2))
    _open(browser, gunicorn_server.url, "tiny-test")
    browser.find_element(By.ID, "files").send_keys(f"{smiley}\n{card}")
    picture, real = _wait_results(browser, 2)
    assert picture.get_attribute("data-unknown") == "true"
    banner = picture.find_element(By.CSS_SELECTOR, ".unknown")
    assert banner.is_displayed()
    assert "Not a dynamometer card, or none of the twelve conditions" in banner.text
    assert "不是示功图" in banner.text
    assert len(banner.find_elements(By.CSS_SELECTOR, ".unknown-reasons li")) >= 1
    # the label is still there, but only as the nearest of the twelve, and its advice is folded away
    assert picture.find_element(By.CSS_SELECTOR, ".nearest").is_displayed()
    assert picture.find_element(By.CSS_SELECTOR, ".verdict").text.startswith("nearest of the twelve:")
    assert picture.find_element(By.CSS_SELECTOR, ".advice details").get_attribute("open") is None
    # ... while a real card reads as its condition
    assert real.get_attribute("data-unknown") == "false" and not real.find_element(By.CSS_SELECTOR, ".nearest").is_displayed()
    assert real.find_element(By.CSS_SELECTOR, ".advice details").get_attribute("open") is not None


def test_the_explain_toggle_overlays_the_heat_map(browser, gunicorn_server, tmp_path):
    from selenium.webdriver.common.by import By

    png = tmp_path / "explain-me.png"
    png.write_bytes(card_png("dome", 3))
    _open(browser, gunicorn_server.url, "tiny-test")
    toggle = browser.find_element(By.ID, "explain")
    assert not toggle.is_selected()
    toggle.click()
    browser.find_element(By.ID, "files").send_keys(str(png))
    (item,) = _wait_results(browser, 1)
    assert item.get_attribute("data-explained") == "image"
    seen = item.find_element(By.CSS_SELECTOR, ".input-figure")
    heat = seen.find_element(By.CSS_SELECTOR, "image.heatmap")
    picture = seen.find_element(By.CSS_SELECTOR, "image.picture")
    assert heat.is_displayed()
    # the heat map covers the filled card the model read exactly, and is a real 400 x 190 picture
    for attr in ("x", "y", "width", "height"):
        assert heat.get_attribute(attr) == picture.get_attribute(attr)
    assert _pictures_load(browser, seen) == [400, 400]
    assert "the regions the answer rested on" in seen.text
    toggle.click()  # off: the overlay goes, the answer stays
    assert not heat.is_displayed() and item.get_attribute("data-state") == "done"
    toggle.click()
    assert heat.is_displayed()


def test_the_explain_toggle_is_off_where_the_service_turned_explanations_off(browser, tiny_model, tmp_path):
    """``CARDSENSE_EXPLAIN=off`` refuses ``?explain=1``: the page must not offer a toggle that only fails."""
    from selenium.webdriver.common.by import By

    with GunicornServer(tiny_model, tmp_path / "gunicorn.log", CARDSENSE_EXPLAIN="off") as server:
        _open(browser, server.url, "tiny-test")
        toggle = browser.find_element(By.ID, "explain")
        assert not toggle.is_enabled() and not toggle.is_selected()
        png = tmp_path / "plain.png"
        png.write_bytes(card_png("dome", 3))
        browser.find_element(By.ID, "files").send_keys(str(png))
        (item,) = _wait_results(browser, 1)
        assert item.get_attribute("data-explained") == ""
        assert "turned off" not in item.text


def test_shipped_models_pairs_series_plots_and_real_card_accuracy(browser, shipped_server, tmp_path):
    from selenium.webdriver.common.by import By

    files = {
        "w1.png": card_png("pound", 1), "w1.csv": card_csv("pound", 1),  # one card: PNG + CSV -> dual
        "scribble.png": next(n for n in notcard_images() if n.kind == "scribble").png,  # no card at all
        "w2.csv": card_csv("dome", 2),  # a CSV alone -> series
        "w3.png": card_png("normal", 3),  # a PNG alone -> image
        "w4.png": card_png("pound", 4), "w4.csv": card_csv("sliver", 5),  # two different cards under one name
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    _open(browser, shipped_server.url, "dual model")
    # the header leads with the real-card figure and says what it was measured on
    meta = json.loads((REPO / "models" / "default" / "meta.json").read_text(encoding="utf-8"))
    figures = accuracy_figures(meta)
    real = next(f for f in figures if f["real_cards"])
    simulated = next(f for f in figures if not f["real_cards"])
    line = browser.find_element(By.CSS_SELECTOR, ".model-line[data-kind=image]")
    first = line.find_element(By.CSS_SELECTOR, ".figure.first")
    assert first.text == f"{100 * real['accuracy']:.1f} % on {real['measured_on']}"
    assert "real field cards" in first.text
    assert line.text.index(first.text) < line.text.index(f"{100 * simulated['accuracy']:.1f} % on")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".model-line")) == 3

    browser.find_element(By.ID, "explain").click()  # where the models looked, drawn over the cards
    browser.find_element(By.ID, "files").send_keys("\n".join(str(tmp_path / n) for n in files))
    items = _wait_results(browser, 5)
    assert [e.get_attribute("data-file") for e in items] == ["w1.png + w1.csv", "scribble.png", "w2.csv", "w3.png",
                                                             "w4.png + w4.csv"]
    pair, scribble, series, image, mismatched = items
    assert pair.get_attribute("data-model") == "dual"
    # the dual model's explanation: over the filled card it read and over the card's plot from the CSV
    assert pair.get_attribute("data-explained") == "image+series"
    assert all(h.is_displayed() for h in pair.find_elements(By.CSS_SELECTOR, "image.heatmap"))
    assert len(pair.find_elements(By.CSS_SELECTOR, "image.heatmap")) == 2
    assert series.get_attribute("data-explained") == "series"
    # a scribble is no card, whatever the shipped model's nearest label
    assert scribble.get_attribute("data-state") in ("done", "error")
    if scribble.get_attribute("data-state") == "done":
        assert scribble.find_element(By.CSS_SELECTOR, ".unknown").is_displayed()
    assert pair.find_element(By.CSS_SELECTOR, ".input-figure").get_attribute("data-shows") == "image+series"
    assert _axis_titles(pair.find_element(By.CSS_SELECTOR, ".card-figure")) == ["position (m)", "load (kN)"]

    assert series.get_attribute("data-model") == "series"
    seen = series.find_element(By.CSS_SELECTOR, ".input-figure")
    assert seen.get_attribute("data-shows") == "series"
    assert not seen.find_elements(By.CSS_SELECTOR, "image, img")  # no "filled input" picture to break
    assert len(seen.find_elements(By.CSS_SELECTOR, "polyline.line")) == 2  # position and load
    assert "the series the series model read" in seen.text

    assert image.get_attribute("data-model") == "image"
    assert image.find_element(By.CSS_SELECTOR, ".card-figure").get_attribute("data-units") == "relative"
    for item in (pair, series, image):
        for figure in item.find_elements(By.CSS_SELECTOR, "figure"):
            assert all(w > 0 for w in _pictures_load(browser, figure))
        review = item.find_element(By.CSS_SELECTOR, ".review")
        confidence = float(item.find_element(By.CSS_SELECTOR, ".confidence").text.split()[1]) / 100
        # the shipped models have no fitted review rule: the fallback, and the page says so
        assert review.is_displayed() == (confidence < 0.5)
        if review.is_displayed():
            assert "confidence below 50.0 %" in review.text
        measures = item.find_element(By.CSS_SELECTOR, ".facts .measures").text
        assert ("kN" in measures) == (item is not image)  # a CSV's units; a PNG's fractions of the image

    assert mismatched.get_attribute("data-state") == "error"
    assert mismatched.get_attribute("data-error") == "mismatched_pair"
    assert "not the same card" in mismatched.find_element(By.CSS_SELECTOR, ".error").text

    shot = tmp_path / "web-page.png"
    browser.set_window_size(1100, 2300)  # the pair with its explanation and facts, and the scribble below it
    try:
        browser.save_screenshot(str(shot))
    finally:
        browser.set_window_size(1100, 1300)
    keep_screenshot(shot, "web-page.png")
