"""The shared hostile-input corpus (tests/hostile.py) against the live gunicorn service and the batch scorer.

Every usable card is classified; everything else gets a 4xx JSON error (never a 500, an HTML page or
a dead worker); every hostile archive still yields its one good card.
"""

from __future__ import annotations

import csv
import json

import pytest

from serving import batch
from tests.conftest import encode_multipart, http
from tests.hostile import archive_corpus, card_corpus, csv_corpus

CARDS = card_corpus() + csv_corpus()
ARCHIVES = archive_corpus()


def _post(server, name: str, data: bytes, route: str = "/classify"):
    ctype = "text/csv" if name.endswith(".csv") else "application/zip" if name.endswith(".zip") else "image/png"
    body, content_type = encode_multipart([("file", name, data, ctype)])
    return http("POST", server.url + route, body, {"Content-Type": content_type}, timeout=60)


@pytest.mark.parametrize("entry", CARDS, ids=[c.name for c in CARDS])
def test_card_corpus_against_the_live_service(gunicorn_server, entry):
    status, headers, raw = _post(gunicorn_server, entry.name, entry.data)
    assert headers["Content-Type"].startswith("application/json"), raw[:200]
    body = json.loads(raw)
    if entry.ok:
        assert status == 200, body
        assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    else:
        assert 400 <= status < 500, (status, body)
        assert body["error"]["message"]


def test_service_still_healthy_after_the_corpus(gunicorn_server):
    for entry in CARDS:
        _post(gunicorn_server, entry.name, entry.data)
    status, _, raw = _post(gunicorn_server, "good.png", CARDS[0].data)
    assert status == 200
    assert http("GET", gunicorn_server.url + "/readyz")[0] == 200
    assert gunicorn_server.proc.poll() is None
    assert "Traceback" not in gunicorn_server.log()


@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_archive_corpus_via_batch_route(gunicorn_server, name):
    status, _, raw = _post(gunicorn_server, name, ARCHIVES[name], route="/classify/batch")
    body = json.loads(raw)
    assert status == 200, body
    good = [r for r in body["results"] if r["id"] == "good" and "label" in r]
    assert good, body["results"]


def test_card_corpus_through_the_batch_scorer(tmp_path, tiny_model):
    folder = tmp_path / "cards"
    folder.mkdir()
    for entry in CARDS:
        prefix = "png-" if entry.name.endswith(".png") else "csv-"
        (folder / (prefix + entry.name)).write_bytes(entry.data)
    out = tmp_path / "p.csv"
    assert batch.main([str(folder), "--out", str(out), "--model", str(tiny_model), "--no-progress"]) == 0
    with open(out, encoding="utf-8-sig") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    for entry in CARDS:
        prefix = "png-" if entry.name.endswith(".png") else "csv-"
        stem = (prefix + entry.name).rsplit(".", 1)[0]
        row = rows[stem]
        if entry.ok:
            assert row["label"] and not row["error"], (entry.name, row["error"])
        else:
            assert row["error"] and not row["label"], entry.name


@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_archive_corpus_through_the_batch_scorer(tmp_path, tiny_model, name):
    path = tmp_path / name
    path.write_bytes(ARCHIVES[name])
    out = tmp_path / "p.csv"
    assert batch.main([str(path), "--out", str(out), "--model", str(tiny_model), "--no-progress"]) == 0
    with open(out, encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    assert any(r["id"] == "good" and r["label"] for r in rows)
