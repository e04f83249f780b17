"""Serving several model kinds: routing PNG -> image, CSV -> series, PNG + CSV -> dual; batch pairs; meta checks."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import card_csv, card_png, export_tiny_series_model


@pytest.fixture(scope="module")
def series_model(tmp_path_factory) -> Path:
    return export_tiny_series_model("series", tmp_path_factory.mktemp("m") / "series")


@pytest.fixture(scope="module")
def dual_model(tmp_path_factory) -> Path:
    return export_tiny_series_model("dual", tmp_path_factory.mktemp("m") / "dual")


@pytest.fixture(scope="module")
def extras(series_model, dual_model):
    from serving.predictor import load_predictor

    return {k: load_predictor(f, device="cpu", pool_size=2, batch_sizes=(1, 4, 8))
            for k, f in (("series", series_model), ("dual", dual_model))}


def _client(tiny_model, predictor, extras_list):
    from serving.app import create_app
    from serving.config import ServingConfig

    serving = ServingConfig(model_dir=tiny_model, device="cpu", batch_sizes=(1, 4, 8))
    app = create_app({"TESTING": True, "SERVING": serving, "PREDICTOR": predictor, "EXTRA_PREDICTORS": extras_list})
    return app.test_client()


@pytest.fixture()
def client_all(tiny_model, predictor, extras):
    return _client(tiny_model, predictor, [extras["series"], extras["dual"]])


def _post(client, **files):
    data = {k: (io.BytesIO(v), n) for k, (v, n) in files.items()}
    return client.post("/classify", data=data, content_type="multipart/form-data")


def test_routing_png_csv_pair(client_all):
    png, csv_bytes = card_png("normal"), card_csv("normal")
    r = _post(client_all, file=(png, "c.png"))
    assert r.status_code == 200 and r.json["model"] == {"name": "tiny-test", "version": "0.0.1", "kind": "image"}
    r = _post(client_all, file=(csv_bytes, "c.csv"))
    assert r.status_code == 200 and r.json["model"]["kind"] == "series" and r.json["input"]["kind"] == "csv"
    assert abs(sum(r.json["probabilities"].values()) - 1) < 1e-4
    r = _post(client_all, file=(png, "c.png"), series=(csv_bytes, "c.csv"))
    assert r.status_code == 200, r.json
    assert r.json["model"]["kind"] == "dual" and r.json["input"]["kind"] == "pair"
    # raw CSV body -> series too
    r = client_all.post("/classify", data=csv_bytes, content_type="text/csv")
    assert r.json["model"]["kind"] == "series"


def test_csv_goes_to_image_without_series_model(tiny_model, predictor, extras):
    client = _client(tiny_model, predictor, [extras["dual"]])
    r = _post(client, file=(card_csv("pound"), "c.csv"))
    assert r.status_code == 200 and r.json["model"]["kind"] == "image" and r.json["input"]["kind"] == "csv"
    # a pair without a dual model: the image model reads the PNG
    client = _client(tiny_model, predictor, [extras["series"]])
    r = _post(client, file=(card_png("pound"), "c.png"), series=(card_csv("pound"), "c.csv"))
    assert r.status_code == 200 and r.json["model"]["kind"] == "image" and r.json["input"]["kind"] == "png"


def test_series_field_errors(client_all):
    r = _post(client_all, file=(card_csv("normal"), "c.csv"), series=(card_csv("normal"), "d.csv"))
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_parameter"
    r = _post(client_all, file=(card_png("normal"), "c.png"), series=(card_png("normal"), "d.png"))
    assert r.status_code == 415
    r = _post(client_all, file=(card_png("normal"), "c.png"), series=(b"a,b\n1,2\n", "d.csv"))
    assert r.status_code == 422 and r.json["error"]["code"] == "invalid_card"


def test_batch_zip_pairs_and_loose_files(client_all, cards):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("test/a.png", card_png("normal"))
        zf.writestr("test/a.csv", card_csv("normal"))
        zf.writestr("test/b.csv", card_csv("pound", seed=2))
        zf.writestr("test/c.png", card_png("dome", seed=3))
    r = client_all.post("/classify/batch", data=buf.getvalue(), content_type="application/zip")
    assert r.status_code == 200, r.json
    by_id = {x["id"]: x for x in r.json["results"]}
    assert by_id["a"]["model"]["kind"] == "dual" and by_id["a"]["kind"] == "pair"
    assert by_id["b"]["model"]["kind"] == "series" and by_id["c"]["model"]["kind"] == "image"
    data = {"f1": (io.BytesIO(card_png("normal")), "x.png"), "f2": (io.BytesIO(card_csv("normal")), "x.csv"),
            "f3": (io.BytesIO(card_csv("dome")), "y.csv")}
    r = client_all.post("/classify/batch", data=data, content_type="multipart/form-data")
    assert r.json["count"] == 2
    kinds = {x["id"]: x["model"]["kind"] for x in r.json["results"]}
    assert kinds == {"x": "dual", "y": "series"}


def test_batch_scorer_uses_pairs(tmp_path, tiny_model, series_model, dual_model):
    from serving import batch
    from serving.model_set import ModelSet
    from serving.routing import stack_inputs

    folder = tmp_path / "cards" / "A01"
    folder.mkdir(parents=True)
    (folder / "p.png").write_bytes(card_png("normal"))
    (folder / "p.csv").write_bytes(card_csv("normal"))
    (folder / "s.csv").write_bytes(card_csv("normal", seed=4))
    (folder / "i.png").write_bytes(card_png("normal", seed=5))
    out = tmp_path / "pred.csv"
    models = f"{tiny_model},{series_model},{dual_model}"
    assert batch.main([str(tmp_path / "cards"), "--out", str(out), "--model", models, "--no-progress",
                       "--workers", "1"]) == 0
    rows = {r["id"]: r for r in csv.DictReader(out.open(encoding="utf-8-sig"))}
    assert set(rows) == {"p", "s", "i"} and not any(r["error"] for r in rows.values())
    # each row equals what the routed model gives for that card
    ms = ModelSet.load([tiny_model, series_model, dual_model], device="cpu", batch_sizes=(1,))
    for cid, png, csv_b in (("p", card_png("normal"), card_csv("normal")), ("s", None, card_csv("normal", seed=4)),
                            ("i", card_png("normal", seed=5), None)):
        p, used, x, _ = ms.prepare(png, csv_b)
        want = p.output.interpret(p.predict(stack_inputs([x]))).probabilities[0]
        got = np.array([float(rows[cid][c]) for c in p.codes])
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert ms.route(card_png("normal"), card_csv("normal"))[0].kind == "dual"


def test_meta_validation(tmp_path, series_model):
    import shutil

    from serving.model_set import ModelSet
    from serving.predictor import MultiInputPredictor, Predictor, StartupError

    with pytest.raises(StartupError, match="serving.predictor.load_predictor"):
        Predictor(series_model, device="cpu")
    bad = tmp_path / "bad"
    shutil.copytree(series_model, bad)
    meta = json.loads((bad / "meta.json").read_text())
    meta["inputs"][0]["shape"] = [None, 5, 128]
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StartupError, match="do not match"):
        MultiInputPredictor(bad, device="cpu")
    meta["inputs"][0]["shape"] = [None, 5, 256]
    meta["series_preprocess"]["version"] = "series-v0"
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StartupError, match="preprocessing"):
        MultiInputPredictor(bad, device="cpu")
    with pytest.raises(StartupError, match="two series models"):
        ModelSet.load([series_model, series_model], device="cpu", batch_sizes=(1,))


def test_extra_model_dirs_env(tmp_path):
    from serving.config import ServingConfig, extra_model_dirs

    assert extra_model_dirs({"CARDSENSE_MODEL_DIR": "x"}) == ()
    assert extra_model_dirs({"CARDSENSE_EXTRA_MODEL_DIRS": "none"}) == ()
    assert extra_model_dirs({"CARDSENSE_EXTRA_MODEL_DIRS": "a, b"}) == (Path("a"), Path("b"))
    cfg = ServingConfig.from_env({"CARDSENSE_MODEL_DIR": "x", "CARDSENSE_EXTRA_MODEL_DIRS": str(tmp_path)})
    assert cfg.extra_model_dirs == (tmp_path,)
