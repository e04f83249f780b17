"""What the API says about who answered and about the card, with image, series and dual models loaded:
the batch's top-level models, a refused PNG/CSV pair of two different cards, predictions and unknown and
review answers per model in /metrics, the pictures and samples of ?include_input=1, and /model's accuracy figures (real cards first)."""

from __future__ import annotations

import base64
import io
import json
import re

import cv2
import numpy as np
import pytest

from serving.accuracy import accuracy_figures
from tests.conftest import card_csv, card_png
from tests.notcards import notcard_images
from tests.test_dual_serving import _client, _post, client_all, dual_model, extras, series_model  # noqa: F401


def _batch(client, files):
    data = {f"f{i}": (io.BytesIO(b), n) for i, (b, n) in enumerate(files)}
    return client.post("/classify/batch", data=data, content_type="multipart/form-data")


def _decode(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return cv2.imdecode(np.frombuffer(base64.b64decode(data_url.split(",", 1)[1]), np.uint8), cv2.IMREAD_UNCHANGED)


# ------------------------------------------------------------------------------ /classify/batch top level


def test_batch_top_level_names_every_model_that_answered(client_all):
    r = _batch(client_all, [(card_png("normal"), "a.png"), (card_csv("normal"), "a.csv"), (card_csv("dome"), "b.csv"),
                            (card_png("pound"), "c.png"), (card_png("dome", 1), "d.png")])
    assert r.status_code == 200, r.json
    body = r.json
    kinds = [x["model"]["kind"] for x in body["results"]]
    assert kinds == ["dual", "series", "image", "image"]
    assert body["model"] is None  # several models answered: no single one to name
    assert [(m["kind"], m["cards"]) for m in body["models"]] == [("dual", 1), ("series", 1), ("image", 2)]
    for m in body["models"]:
        assert {k: m[k] for k in ("name", "version", "kind")} in [x["model"] for x in body["results"]]


def test_batch_of_pairs_only_says_dual(client_all):
    r = _batch(client_all, [(card_png("normal"), "a.png"), (card_csv("normal"), "a.csv"),
                            (card_png("pound", 2), "b.png"), (card_csv("pound", 2), "b.csv")])
    body = r.json
    assert [x["model"]["kind"] for x in body["results"]] == ["dual", "dual"]
    assert body["model"]["kind"] == "dual" and body["models"] == [{**body["model"], "cards": 2}]


def test_batch_where_no_card_was_read_names_no_model(client_all):
    body = _batch(client_all, [(b"\x89PNG\r\n\x1a\nbroken", "x.png")]).json
    assert body["ok"] == 0 and body["model"] is None and body["models"] == []


# ------------------------------------------------------------------------------ PNG + CSV of two cards


def test_png_and_csv_of_two_different_cards_are_refused(client_all):
    r = _post(client_all, file=(card_png("pound"), "well-1.png"), series=(card_csv("dome", 3), "well-2.csv"))
    assert r.status_code == 422
    assert r.json["error"]["code"] == "mismatched_pair"
    assert "not the same card" in r.json["error"]["message"]
    # the same card's files are one card
    r = _post(client_all, file=(card_png("dome", 3), "well-2.png"), series=(card_csv("dome", 3), "well-2.csv"))
    assert r.status_code == 200 and r.json["model"]["kind"] == "dual"


def test_a_mismatched_pair_in_a_batch_is_that_cards_error(client_all):
    body = _batch(client_all, [(card_png("pound"), "w.png"), (card_csv("sliver", 4), "w.csv"),
                               (card_png("normal"), "ok.png"), (card_csv("normal"), "ok.csv")]).json
    by_id = {x["id"]: x for x in body["results"]}
    assert by_id["w"]["error"]["code"] == "mismatched_pair" and by_id["w"]["kind"] == "pair"
    assert by_id["ok"]["model"]["kind"] == "dual"
    assert body["errors"] == 1 and body["ok"] == 1


# ------------------------------------------------------------------------------ /metrics


def test_metrics_count_predictions_per_model(client_all):
    _post(client_all, file=(card_png("normal"), "a.png"))
    _post(client_all, file=(card_csv("normal"), "a.csv"))
    _post(client_all, file=(card_csv("dome"), "b.csv"))
    _post(client_all, file=(card_png("normal"), "a.png"), series=(card_csv("normal"), "a.csv"))
    text = client_all.get("/metrics").get_data(as_text=True)
    per_model = {}
    for model, value in re.findall(r'cardsense_predictions_total\{label="A\d\d",model="(\w+)"\} ([\d.]+)', text):
        per_model[model] = per_model.get(model, 0) + float(value)
    assert per_model == {"image": 1.0, "series": 2.0, "dual": 1.0}


def _per_model(text: str, metric: str) -> dict[str, float]:
    return {m: float(v) for m, v in re.findall(metric + r'\{model="(\w+)"\} ([\d.]+)', text)}


def test_metrics_count_unknown_and_review_answers_per_model(client_all):
    text = client_all.get("/metrics").get_data(as_text=True)
    # Every loaded model's counters are there from the start, at 0 (a rate over predictions needs both).
    assert _per_model(text, "cardsense_unknown_total") == {"image": 0.0, "series": 0.0, "dual": 0.0}
    assert _per_model(text, "cardsense_review_total") == {"image": 0.0, "series": 0.0, "dual": 0.0}
    smiley = next(n for n in notcard_images() if n.kind == "smiley")
    answers = [_post(client_all, file=(smiley.png, "s.png")).json,
               _post(client_all, file=(card_png("normal"), "a.png")).json,
               _post(client_all, file=(card_csv("normal"), "a.csv")).json,
               _post(client_all, file=(card_csv("dome"), "b.csv")).json,
               _post(client_all, file=(card_png("normal"), "a.png"), series=(card_csv("normal"), "a.csv")).json]
    batch = client_all.post("/classify/batch", data={"x": (io.BytesIO(smiley.png), "x.png"),
                                                     "y": (io.BytesIO(card_csv("pound")), "y.csv")},
                            content_type="multipart/form-data").json["results"]
    answers += batch
    want_unknown = {"image": 0.0, "series": 0.0, "dual": 0.0}
    want_review = dict(want_unknown)
    for a in answers:
        want_unknown[a["model"]["kind"]] += a["unknown"]
        want_review[a["model"]["kind"]] += a["review"]
    assert want_unknown["image"] == 2  # the smiley, alone and in the batch
    text = client_all.get("/metrics").get_data(as_text=True)
    assert _per_model(text, "cardsense_unknown_total") == want_unknown
    assert _per_model(text, "cardsense_review_total") == want_review
    assert sum(want_review.values()) >= 1  # (the tiny models are unsure of most cards)


# ------------------------------------------------------------------------------ ?include_input=1


def test_include_input_of_a_csv_to_the_series_model_has_samples_not_a_filled_card(client_all):
    r = client_all.post("/classify?include_input=1", data={"file": (io.BytesIO(card_csv("pound")), "c.csv")},
                        content_type="multipart/form-data")
    body = r.json
    assert body["model"]["kind"] == "series"
    assert "input_png" not in body  # the series model reads no picture: nothing to show a broken image for
    assert _decode(body["card_png"]).shape == (190, 400)  # the CSV, drawn
    samples = body["card_samples"]
    assert len(samples["position_m"]) == len(samples["load_kN"]) == 200
    assert max(samples["position_m"]) == pytest.approx(3.0, abs=0.05)  # metres, as in the file
    assert 65 < max(samples["load_kN"]) < 75  # kN
    series = body["input_series"]
    assert len(series["position"]) == len(series["load"]) == 256
    assert min(series["load"]) == pytest.approx(0, abs=0.02) and max(series["load"]) == pytest.approx(1, abs=0.02)


def test_include_input_of_a_pair_shows_both_inputs(client_all):
    r = _post(client_all, file=(card_png("normal"), "a.png"), series=(card_csv("normal"), "a.csv"))
    assert r.status_code == 200
    data = {"file": (io.BytesIO(card_png("normal")), "a.png"), "series": (io.BytesIO(card_csv("normal")), "a.csv")}
    body = client_all.post("/classify?include_input=1", data=data, content_type="multipart/form-data").json
    assert body["input"]["kind"] == "pair"
    assert _decode(body["input_png"]).shape == (190, 400)
    assert len(body["input_series"]["position"]) == 256 and "card_samples" in body


def test_include_input_of_a_png_has_no_samples(client_all):
    body = client_all.post("/classify?include_input=1", data=card_png("dome"), content_type="image/png").json
    assert body["model"]["kind"] == "image" and "input_png" in body
    assert "card_samples" not in body and "input_series" not in body


# ------------------------------------------------------------------------------ /model accuracy figures


SHIPPED_LIKE = {
    "data": {"source": "sim"},
    "metrics": {"holdout_acc": 0.9948, "holdout_cards": 960, "sim_fresh": {"accuracy": 0.9933, "cards": 600},
                "field_cards": {"accuracy": 0.3357, "cards": 709, "classes": ["A01", "A02", "A03", "A05", "A06",
                                                                              "A09", "A10"], "note": "real cards"}},
}


def test_accuracy_figures_put_real_cards_first():
    figures = accuracy_figures(SHIPPED_LIKE)
    assert [f["key"] for f in figures] == ["field_cards", "holdout_acc", "sim_fresh"]
    assert figures[0]["real_cards"] and figures[0]["accuracy"] == 0.3357
    assert figures[0]["measured_on"] == "709 real field cards, 7 of the 12 conditions, model trained on simulated " \
                                        "cards only"
    assert figures[1]["measured_on"].startswith("960 simulated holdout cards") and not figures[1]["real_cards"]


def test_a_cross_validated_field_figure_comes_before_the_others():
    meta = json.loads(json.dumps(SHIPPED_LIKE))
    meta["metrics"]["field_cv"] = {"accuracy": 0.81, "accuracy_std": 0.02, "folds": 5, "cards": 1200}
    figures = accuracy_figures(meta)
    assert figures[0]["key"] == "field_cv" and "5-fold cross-validated, ± 0.020" in figures[0]["measured_on"]


def test_a_model_trained_on_own_cards_shows_its_holdout_as_real():
    figures = accuracy_figures({"data": {"source": "mycards.zip"},
                                "metrics": {"holdout_acc": 0.9, "holdout_cards": 40}})
    assert figures == [{"key": "holdout_acc", "accuracy": 0.9, "cards": 40, "real_cards": True,
                        "measured_on": "40 held-out cards of mycards.zip, never trained on"}]
    assert accuracy_figures({}) == []


def test_a_model_with_real_cards_in_its_mix_shows_the_cross_validated_figure_and_a_simulated_holdout():
    """``--data sim field:0.3 --folds 5 --export``: the field figure is the K-fold one; the holdout left is the
    simulator's, which must not read as real cards."""
    meta = {"data": {"source": "sim + field + field-other"},
            "metrics": {"holdout_acc": 0.92, "holdout_cards": 480,
                        "holdout_by_source": {"sim": {"holdout_acc": 0.92, "holdout_cards": 480},
                                              "field": {"holdout_acc": None, "holdout_cards": 0}},
                        "cross_validation": {"mean": 0.711, "std": 0.03, "folds": 5,
                                             "measured_on": {"source": "field", "cards": 709,
                                                             "classes": ["A01", "A02", "A03", "A05", "A06", "A09",
                                                                         "A10"]}},
                        "sim_fresh": {"accuracy": 0.92, "cards": 600}}}
    figures = accuracy_figures(meta)
    assert [(f["key"], f["real_cards"]) for f in figures] == [
        ("cross_validation", True), ("holdout_acc/sim", False), ("sim_fresh", False)]
    assert figures[0]["accuracy"] == 0.711
    assert figures[0]["measured_on"] == "709 real field cards, 7 of the 12 conditions, 5-fold cross-validated, ± 0.030"
    assert figures[1]["measured_on"] == "480 simulated holdout cards (not real wells)"


def test_model_endpoint_lists_accuracy_per_model(client_all):
    info = client_all.get("/model").json
    assert info["accuracy"][0]["key"] == "holdout_acc"  # the tiny model records no field figure
    assert set(info["models"]) == {"image", "series", "dual"}
    assert all(isinstance(m["accuracy"], list) for m in info["models"].values())
