"""What every answer carries since issue #14 -- unknown, review, top2, measures, advice, and explanation on
request -- for an old model folder (softmax probabilities: the tiny model) and a new one (logits with a 13th
"none of the twelve" output, temperature, fitted review and open-set rules: the tiny logits model), through
the real app, batcher and predictors."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil

import cv2
import numpy as np
import pytest

from serving import batch
from serving.predictor import Predictor, StartupError
from shared.confidence import softmax
from shared.labels import advice
from shared.preprocess import preprocess_png
from tests.conftest import NEW_FORMAT_META, card_csv, card_png
from tests.notcards import notcard_images
from tests.test_dual_serving import _post, client_all, dual_model, extras, series_model  # noqa: F401

PATCH_ROWS, PATCH_COLS = 7, 15  # serving.explain: a 48 x 50 patch in half steps over 190 x 400


def _decode(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return cv2.imdecode(np.frombuffer(base64.b64decode(data_url.split(",", 1)[1]), np.uint8), cv2.IMREAD_UNCHANGED)


def _batch_calls(client, kind: str) -> tuple[float, float]:
    """(predictor calls, cards in them) of one model kind so far, from /metrics."""
    text = client.get("/metrics").get_data(as_text=True)

    def value(name):
        m = re.search(rf'{name}\{{kind="{kind}"\}} ([\d.e+]+)', text)
        return float(m.group(1)) if m else 0.0

    return value("cardsense_batch_size_count"), value("cardsense_batch_size_sum")


@pytest.fixture(scope="module")
def logits_predictor(tiny_logits_model):
    return Predictor(tiny_logits_model, device="cpu", pool_size=1, batch_sizes=(1, 4, 8))


@pytest.fixture()
def logits_client(tiny_logits_model, logits_predictor):
    from serving.app import create_app
    from serving.config import ServingConfig

    serving = ServingConfig(model_dir=tiny_logits_model, device="cpu", batch_sizes=(1, 4, 8))
    return create_app({"TESTING": True, "SERVING": serving, "PREDICTOR": logits_predictor}).test_client()


# ------------------------------------------------------------------------------ an old model folder


def test_every_answer_carries_unknown_review_top2_measures_and_advice(client):
    body = client.post("/classify", data=card_png("pound"), content_type="image/png").json
    assert body["top2"][0] == {"label": body["label"], "name": body["name"], "name_en": body["name_en"],
                               "probability": body["confidence"]}
    second = body["top2"][1]
    assert second["label"] != body["label"] and second["probability"] == max(
        p for c, p in body["probabilities"].items() if c != body["label"])
    # a real card: the structural check of its outline passes, and an old model has no open-set output
    assert body["unknown"] is False and body["unknown_reasons"] == [] and body["unknown_basis"] == ["outline"]
    assert 0 <= body["unknown_score"] < 0.5 and "other_probability" not in body
    # no fitted review rule in the tiny model's meta.json: the low-confidence fallback, and it says so
    assert body["review_rule"]["rule"] == "low_confidence" and body["review_rule"]["min_top"] == 0.5
    assert body["review"] == (body["confidence"] < 0.5)
    # measures of a PNG: fractions of the image, each with its unit; the pound card drops its load at 45 %
    m = body["measures"]
    assert m["basis"] == "outline" and m["peak_load"]["unit"] == "fraction of image height"
    assert m["fillage"]["value"] == pytest.approx(0.45, abs=0.05) and m["fillage"]["unit"] == "fraction of stroke"
    assert body["advice"] == advice(body["label"]) and body["advice"]["sources"]
    assert "explanation" not in body


def test_a_csv_card_is_measured_in_its_units_and_checked_as_a_series(client):
    body = client.post("/classify", data=card_csv("pound"), content_type="text/csv").json
    assert body["input"]["kind"] == "csv" and body["unknown_basis"] == ["series"]
    m = body["measures"]
    assert m["basis"] == "series"
    assert m["peak_load"]["unit"] == "kN" and 65 < m["peak_load"]["value"] < 75
    assert m["stroke"] == {"value": pytest.approx(3.0, abs=0.01), "unit": "m"}
    assert m["area"]["unit"] == "kJ" and m["area"]["value"] > 0


def test_a_pair_is_checked_both_ways_and_measured_from_its_csv(client_all):
    body = _post(client_all, file=(card_png("pound"), "a.png"), series=(card_csv("pound"), "a.csv")).json
    assert body["model"]["kind"] == "dual"
    assert body["unknown_basis"] == ["outline", "series"] and body["measures"]["basis"] == "series"


def test_a_picture_that_is_no_card_is_unknown_and_keeps_its_label(client):
    smiley = next(n for n in notcard_images() if n.kind == "smiley")
    r = client.post("/classify", data=smiley.png, content_type="image/png")
    assert r.status_code == 200
    body = r.json
    assert body["unknown"] is True and body["unknown_score"] >= 0.5
    assert body["unknown_reasons"] and all(isinstance(x, str) and len(x) > 10 for x in body["unknown_reasons"])
    assert body["label"] in body["probabilities"] and len(body["probabilities"]) == 12


def test_batch_answers_carry_the_same_fields(client):
    smiley = next(n for n in notcard_images() if n.kind == "smiley")
    r = client.post("/classify/batch", data={"a": (io.BytesIO(card_png("normal")), "a.png"),
                                             "b": (io.BytesIO(smiley.png), "b.png")},
                    content_type="multipart/form-data")
    card, picture = r.json["results"]
    assert card["unknown"] is False and picture["unknown"] is True
    for result in (card, picture):
        assert {"top2", "review", "review_rule", "measures", "advice", "unknown_reasons"} <= set(result)


# ------------------------------------------------------------------------------ explanation


def test_explain_runs_the_copies_in_one_call_and_nothing_without_it(client):
    calls, cards = _batch_calls(client, "image")
    plain = client.post("/classify", data=card_png("dome"), content_type="image/png").json
    after = _batch_calls(client, "image")
    assert after == (calls + 1, cards + 1)  # one call of one card: no explanation work
    explained = client.post("/classify?explain=1", data=card_png("dome"), content_type="image/png").json
    copies = explained["explanation"]["copies"]
    assert copies == PATCH_ROWS * PATCH_COLS
    assert _batch_calls(client, "image") == (after[0] + 1, after[1] + 1 + copies)  # the card and its copies, once
    # the explanation does not change the answer
    assert explained["probabilities"] == plain["probabilities"] and explained["label"] == plain["label"]
    image = explained["explanation"]["image"]
    heat = _decode(image["heatmap_png"])
    assert heat.shape == (190, 400, 4) and image["frame"] == "input_png"
    assert np.array(image["grid"]).shape == (PATCH_ROWS, PATCH_COLS)
    assert image["max_drop"] == pytest.approx(np.max(image["grid"]), abs=1e-4) and image["max_drop"] > 0
    assert heat[..., 3].max() > 150  # the strongest patch is drawn (opaque); where nothing mattered, transparent
    assert heat[..., 3].min() == 0


def test_the_explanation_points_at_the_cell_the_answer_rests_on(client):
    """The tiny model scores class k by the fill of cell k of a 3 x 4 grid: hiding that cell must cost the
    answer most, and the map's hottest patch must lie on it."""
    for kind in ("normal", "dome", "pound"):
        body = client.post("/classify?explain=1", data=card_png(kind), content_type="image/png").json
        k = int(body["label"][1:]) - 1
        row, col = divmod(k, 4)
        cell = (row * 190 / 3, (row + 1) * 190 / 3, col * 100, (col + 1) * 100)
        grid = np.array(body["explanation"]["image"]["grid"])
        top, left = np.unravel_index(np.argmax(grid), grid.shape)
        tops = sorted({min(t, 142) for t in range(0, 143, 24)} | {142})
        y0, x0 = tops[top], min(left * 25, 350)
        overlap_y = min(y0 + 48, cell[1]) - max(y0, cell[0])
        overlap_x = min(x0 + 50, cell[3]) - max(x0, cell[2])
        assert overlap_y > 0 and overlap_x > 0, (kind, body["label"], (y0, x0), cell)


def test_explain_for_the_series_and_dual_models(client_all):
    series = client_all.post("/classify?explain=1", data=card_csv("pound"), content_type="text/csv").json
    e = series["explanation"]
    assert series["model"]["kind"] == "series" and "image" not in e
    assert len(e["series"]["weights"]) == 256 and max(e["series"]["weights"]) <= 1.0
    assert e["copies"] == 32 and e["series"]["frame"] == "card_box"
    assert _decode(e["series"]["heatmap_png"]).shape == (190, 400, 4)
    data = {"file": (io.BytesIO(card_png("pound")), "a.png"), "series": (io.BytesIO(card_csv("pound")), "a.csv")}
    dual = client_all.post("/classify?explain=1", data=data, content_type="multipart/form-data").json
    assert dual["model"]["kind"] == "dual"
    assert set(dual["explanation"]) >= {"image", "series"} and dual["explanation"]["copies"] == PATCH_ROWS * PATCH_COLS + 32


# ------------------------------------------------------------------------------ a new model folder


def test_new_format_probabilities_are_calibrated_logits_and_other_is_reported(logits_client, logits_predictor):
    png = card_png("normal")
    body = logits_client.post("/classify", data=png, content_type="image/png").json
    raw = logits_predictor.predict(preprocess_png(png, logits_predictor.preprocess))[0].astype(np.float64)
    assert raw.shape == (13,)
    want = softmax(raw[:12], NEW_FORMAT_META["confidence"]["temperature"])
    got = np.array([body["probabilities"][c] for c in logits_predictor.codes])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert body["other_probability"] == pytest.approx(float(softmax(raw)[12]), rel=1e-6)
    assert body["unknown"] is False and body["unknown_basis"] == ["outline", "outlier_exposure"]
    # the fitted review rule of meta.json, named with its numbers
    rule = body["review_rule"]
    assert rule["rule"] == "meta" and rule["min_top"] == 0.5 and rule["min_margin"] == 0.1
    top, second = sorted(want)[-1], sorted(want)[-2]
    assert body["review"] == bool(top < 0.5 or top - second < 0.1)


def test_new_format_a_card_outside_the_twelve_is_unknown_by_the_models_own_output(logits_client):
    # The tiny logits model's 13th output fires on a card with little fill (a gas-lock sliver): a real card by
    # its shape, so only the model's open-set rule can call it unknown.
    body = logits_client.post("/classify", data=card_png("sliver"), content_type="image/png").json
    assert body["other_probability"] >= NEW_FORMAT_META["open_set"]["threshold"]
    assert body["unknown"] is True and body["unknown_score"] == pytest.approx(body["other_probability"])
    assert len(body["unknown_reasons"]) == 1 and "none of the twelve" in body["unknown_reasons"][0]
    full = logits_client.post("/classify", data=card_png("normal"), content_type="image/png").json
    assert full["unknown"] is False


def test_new_format_rules_are_described_by_get_model(logits_client):
    answers = logits_client.get("/model").json["models"]["image"]["answers"]
    assert answers["output"] == "logits" and answers["other_class"] is True and answers["temperature"] == 1.2
    assert answers["review"]["rule"] == "meta" and answers["review"]["target_precision"] == 0.9
    assert answers["open_set"]["method"] == "outlier_exposure" and answers["open_set"]["threshold"] == 0.15


def test_new_format_explanation(logits_client):
    body = logits_client.post("/classify?explain=1", data=card_png("dome"), content_type="image/png").json
    assert body["explanation"]["probability"] == pytest.approx(body["confidence"])
    assert np.array(body["explanation"]["image"]["grid"]).shape == (PATCH_ROWS, PATCH_COLS)


def test_new_format_batch_csv(tiny_logits_model, tmp_path, capsys):
    folder = tmp_path / "cards"
    folder.mkdir()
    for kind in ("normal", "sliver", "dome"):
        (folder / f"{kind}.png").write_bytes(card_png(kind))
    out = tmp_path / "p.csv"
    assert batch.main([str(folder), "--out", str(out), "--model", str(tiny_logits_model), "--no-progress"]) == 0
    rows = {r["id"]: r for r in csv.DictReader(out.open(encoding="utf-8-sig"))}
    assert {k: r["unknown"] for k, r in rows.items()} == {"normal": "0", "sliver": "1", "dome": "0"}
    assert "none of the twelve" in rows["sliver"]["unknown_reasons"]
    printed = capsys.readouterr().out
    assert "unknown: 1 card(s)" in printed
    assert "top below 0.5 or margin below 0.1, fitted in meta.json" in printed


def test_a_broken_output_contract_stops_the_model_at_load(tiny_logits_model, tmp_path):
    def folder_with(**changes):
        folder = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
        shutil.copytree(tiny_logits_model, folder)
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        meta.update(changes)
        (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        return folder

    with pytest.raises(StartupError, match="other_class"):  # an open-set rule without the 13th output
        Predictor(folder_with(other_class=False), device="cpu", batch_sizes=(1,))
    with pytest.raises(StartupError, match="sum to"):  # 13 logits are no probabilities
        Predictor(folder_with(output="probabilities", open_set=None), device="cpu", batch_sizes=(1,))
    with pytest.raises(StartupError, match="temperature"):
        Predictor(folder_with(confidence={"temperature": -1}), device="cpu", batch_sizes=(1,))
