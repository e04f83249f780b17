"""``scripts/open_set_study.py``: the shipped models' dygraph twins are exact, folds are stratified, and a tiny
run prints every table (series only, a few simulated cards, one epoch — minutes of the real study in seconds)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.cards import Card, decode_card_png, render_card_png
from shared.preprocess import preprocess_ink
from shared.series import preprocess_series
from training.simulator import card_rng, make_spec, run_specs, sample_params

REPO = Path(__file__).resolve().parents[1]
FIELD = REPO / "data" / "field" / "field-cards.csv"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("open_set_study", REPO / "scripts" / "open_set_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def probe():
    specs = []
    for code in ("A01", "A02", "A05", "A09", "A12"):
        rng = card_rng(4, code, 0)
        params, severity = sample_params(code, rng)
        specs.append(make_spec(code, rng, params, severity))
    cards = run_specs(specs)
    images = np.stack([np.rint(preprocess_ink(decode_card_png(render_card_png(c.position_m, c.load_kN)))[0] * 255)
                       .astype(np.uint8) for c in cards])
    series = np.stack([preprocess_series(Card(c.position_m, c.load_kN)) for c in cards])
    return {"image": images, "series": series}


@pytest.mark.parametrize("kind", ["image", "series"])
def test_shipped_twins_match_paddle_inference(study, probe, kind):
    net, gap = study.shipped_twin(kind, probe[kind])
    assert gap < 1e-4
    logits, feats = study.forward(net, kind, probe[kind])
    outputs = 13 if json.loads((study.shipped_folder(kind) / "meta.json").read_text()).get("other_class") else 12
    assert logits.shape == (5, outputs) and feats.shape == (5, 128)


def test_folds_are_stratified_and_leave_unknown_cards_out(study):
    labels = np.array([0] * 10 + [1] * 7 + [-1] * 5)
    fold = study.folds_of(labels, 2)
    assert (fold[labels < 0] == -1).all()
    for c in (0, 1):
        counts = np.bincount(fold[labels == c], minlength=2)
        assert abs(counts[0] - counts[1]) <= 1


def test_a_tiny_run_prints_every_table(study, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = study.main(["--sim-per-class", "4", "--epochs", "1", "--folds", "2", "--oe-folds", "1", "--kinds", "series",
                       "--cache-dir", str(tmp_path / "cache"), "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "SHIPPED models/series" in printed and "RETRAINED series" in printed and "outlier_exposure" in printed
    # a shipped model trained with the field cards is not scored on them (in-sample)
    assert ("in-sample" in printed) == study.saw_field_cards(study.shipped_folder("series"))
    report = json.loads(out.read_text())
    rows = {r[0]: r for r in report["retrained_series"]["rows"]}
    assert {"max_softmax", "max_logit", "energy", "mahalanobis", "knn", "outlier_exposure", "oe+knn"} <= set(rows)
    assert "oe-net energy+knn" in rows  # the OE networks' own pairs are kept apart from the plain networks'
    assert all(0.0 <= v <= 1.0 for r in rows.values() for v in r[1:])
    assert report["counts"] == {"field_in": 709, "field_unknown": 491, "sim": 48}
