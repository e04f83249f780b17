"""HTTP API through the Flask test client: responses, the error matrix, batch, metrics, auth."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import cv2
import numpy as np
import pytest

from shared.preprocess import preprocess_png
from tests.conftest import card_csv, card_png

CODES = [f"A{i:02d}" for i in range(1, 13)]


def post_file(client, data: bytes, filename: str, content_type: str | None = None, url: str = "/classify"):
    file = (io.BytesIO(data), filename, content_type) if content_type else (io.BytesIO(data), filename)
    return client.post(url, data={"file": file}, content_type="multipart/form-data")


def assert_error(response, status: int, code: str | None = None):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body["error"]


# ------------------------------------------------------------------------------ /classify


def test_classify_png_multipart(client):
    r = post_file(client, card_png("pound"), "well-7.png")
    assert r.status_code == 200
    body = r.get_json()
    assert body["label"] in CODES
    assert list(body["probabilities"]) == CODES
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["confidence"] == pytest.approx(max(body["probabilities"].values()))
    assert body["probabilities"][body["label"]] == body["confidence"]
    assert body["model"] == {"name": "tiny-test", "version": "0.0.1", "kind": "image"}
    assert body["elapsed_ms"] > 0
    assert body["name"] and body["name_en"]
    assert "top_k" not in body


def test_names_come_from_meta_and_json_is_utf8(client, tiny_model):
    meta = json.loads((tiny_model / "meta.json").read_text(encoding="utf-8"))
    by_code = {x["code"]: x for x in meta["labels"]}
    r = post_file(client, card_png("normal"), "a.png")
    body = r.get_json()
    assert body["name"] == by_code[body["label"]]["name"]
    assert body["name_en"] == by_code[body["label"]]["name_en"]
    assert body["name"].encode("utf-8") in r.data  # not \\u escapes


@pytest.mark.parametrize("ctype", ["image/png", "application/octet-stream"])
def test_classify_raw_png_body(client, ctype):
    png = card_png("dome")
    r = client.post("/classify", data=png, content_type=ctype)
    assert r.status_code == 200
    assert r.get_json()["probabilities"] == post_file(client, png, "x.png").get_json()["probabilities"]


@pytest.mark.parametrize("ctype", ["text/csv", "text/csv; charset=gbk", "text/plain"])
def test_classify_raw_csv_body(client, ctype):
    r = client.post("/classify", data=card_csv("pound"), content_type=ctype)
    assert r.status_code == 200
    assert r.get_json()["input"]["kind"] == "csv"


def test_csv_goes_through_the_png_path(client, predictor):
    """A CSV is rendered to a card and preprocessed like a PNG: same input as rendering it ourselves."""
    from shared.cards import read_card_csv, render_card_png

    csv = card_csv("inertia")
    card = read_card_csv(csv)
    png = render_card_png(card.position, card.load)
    a = post_file(client, csv, "c.csv").get_json()
    b = post_file(client, png, "c.png").get_json()
    assert a["label"] == b["label"]
    for code in CODES:
        assert a["probabilities"][code] == pytest.approx(b["probabilities"][code], abs=1e-6)


def test_top_k(client):
    body = client.post("/classify?top_k=3", data=card_png("normal"), content_type="image/png").get_json()
    ranked = body["top_k"]
    assert len(ranked) == 3 and ranked[0]["label"] == body["label"]
    assert [x["probability"] for x in ranked] == sorted((x["probability"] for x in ranked), reverse=True)
    assert ranked[0]["name"] == body["name"]


def test_top_k_larger_than_the_label_count_lists_all(client):
    body = client.post("/classify?top_k=50", data=card_png("normal"), content_type="image/png").get_json()
    assert len(body["top_k"]) == 12


def test_zip_to_single_route_points_to_batch(client, test_zip):
    err = assert_error(post_file(client, test_zip.read_bytes(), "test.zip", "application/zip"), 415)
    assert "/classify/batch" in err["message"]


@pytest.mark.parametrize("bad", ["0.5", "x", "-1", "99999"])
def test_bad_top_k(client, bad):
    assert_error(client.post(f"/classify?top_k={bad}", data=card_png("normal"), content_type="image/png"),
                 400, "invalid_parameter")


def test_include_input_returns_card_and_model_input_images(client, predictor):
    png = card_png("pound")
    body = client.post("/classify?include_input=1", data=png, content_type="image/png").get_json()
    for key in ("card_png", "input_png"):
        assert body[key].startswith("data:image/png;base64,")
    raw = base64.b64decode(body["input_png"].split(",", 1)[1])
    seen = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    expected = np.rint(preprocess_png(png, predictor.preprocess)[0] * 255).astype(np.uint8)
    assert seen.shape == (190, 400)
    np.testing.assert_array_equal(seen, expected)


# ------------------------------------------------------------------------------ error matrix


def test_no_file_field(client):
    assert_error(client.post("/classify", data={"other": "x"}, content_type="multipart/form-data"), 400, "missing_file")


def test_wrong_field_name(client):
    err = assert_error(client.post("/classify", data={"image": (io.BytesIO(card_png("normal")), "a.png")}), 400)
    assert "image" in err["message"]


def test_empty_body(client):
    assert_error(client.post("/classify", data=b"", content_type="image/png"), 400, "missing_file")


def test_empty_file(client):
    assert_error(post_file(client, b"", "a.png"), 400, "empty_file")


def test_curl_data_binary_without_content_type(client):
    """curl --data-binary @card.png sends application/x-www-form-urlencoded: the body is sniffed."""
    png = card_png("normal")
    r = client.post("/classify", data=png, content_type="application/x-www-form-urlencoded")
    assert r.status_code == 200 and r.get_json()["input"]["kind"] == "png"
    r = client.post("/classify", data=card_csv("normal"), content_type="application/x-www-form-urlencoded")
    assert r.status_code == 200 and r.get_json()["input"]["kind"] == "csv"


def test_too_many_parts(make_app):
    client = make_app(max_batch_cards=5).test_client()
    files = [(io.BytesIO(b"x"), f"{i}.png") for i in range(30)]
    err = assert_error(client.post("/classify/batch", data={"files": files}), 413)
    assert "too many parts" in err["message"]


def test_two_files_to_single_route(client):
    data = {"file": [(io.BytesIO(card_png("normal")), "a.png"), (io.BytesIO(card_png("pound")), "b.png")]}
    assert_error(client.post("/classify", data=data), 400, "too_many_files")


def test_too_large(make_app):
    client = make_app(max_upload_mb=0.01).test_client()
    err = assert_error(client.post("/classify", data=b"1,2\n" * 5000, content_type="text/csv"), 413)
    assert "10,485" in err["message"]


def test_too_large_multipart(make_app):
    client = make_app(max_upload_mb=0.01).test_client()
    assert_error(post_file(client, b"0" * 20000, "big.csv"), 413)


@pytest.mark.parametrize(
    "data,filename,ctype",
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 50, "photo.jpg", "image/jpeg"),
        (b"%PDF-1.4 whatever", "report.pdf", "application/pdf"),
        (b"PK\x03\x04zipzip", "cards.zip", "application/zip"),
        (b"GIF89a....", "anim.gif", None),
        (b"\x00\x01\x02binary", "blob.bin", "application/octet-stream"),
    ],
)
def test_unsupported_types(client, data, filename, ctype):
    assert_error(post_file(client, data, filename, ctype), 415, "unsupported_media_type")


@pytest.mark.parametrize("ctype", ["application/json", "image/jpeg", "application/xml"])
def test_unsupported_raw_types(client, ctype):
    assert_error(client.post("/classify", data=b'{"a": 1}', content_type=ctype), 415)


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def _bomb_png() -> bytes:
    """A valid tiny PNG stream whose header claims 60000 x 60000 pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "name,data",
    [
        ("blank", _png(np.zeros((190, 400, 4), np.uint8))),
        ("white-opaque", _png(np.full((190, 400, 4), 255, np.uint8))),
        ("truncated", card_png("normal")[:60]),
        ("fake-png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 20),
        ("bomb", _bomb_png()),
        ("dot", _png(cv2.circle(np.zeros((190, 400), np.uint8), (200, 95), 1, 255, -1))),
        ("text-as-png", b"this is text, not a png"),
    ],
)
def test_png_that_is_no_card(client, name, data):
    assert_error(post_file(client, data, f"{name}.png"), 422, "invalid_card")


@pytest.mark.parametrize(
    "data",
    [
        b"hello world\n",
        "位移(m),载荷(kN)\n".encode("gbk"),
        "位移(m),载荷(kN)\n".encode("gbk") + b"1,2\n" * 50,  # no extent
        b"a,b\nx,y\n" * 30,
        "位移(m),载荷(kN)\n".encode("gbk") + b"nan,inf\n" * 40,
    ],
)
def test_csv_that_is_no_card(client, data):
    assert_error(post_file(client, data, "bad.csv"), 422, "invalid_card")


def test_unknown_route_and_method_are_json(client):
    assert_error(client.get("/nope"), 404, "not_found")
    err = client.get("/classify")
    assert_error(err, 405, "method_not_allowed")


def test_unexpected_exception_is_json_500(make_app):
    app = make_app()

    def boom():
        raise RuntimeError("kaboom")

    app.add_url_rule("/boom", "boom", boom)
    r = app.test_client().get("/boom")
    err = assert_error(r, 500, "internal_error")
    assert "kaboom" not in err["message"]


# ------------------------------------------------------------------------------ auth


def test_token_required_when_configured(make_app):
    client = make_app(api_token="s3cret").test_client()
    png = card_png("normal")
    assert_error(client.post("/classify", data=png, content_type="image/png"), 401, "unauthorized")
    assert_error(client.post("/classify", data=png, content_type="image/png",
                             headers={"Authorization": "Bearer wrong"}), 401)
    assert client.post("/classify", data=png, content_type="image/png",
                       headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.post("/classify", data=png, content_type="image/png",
                       headers={"X-API-Token": "s3cret"}).status_code == 200
    assert_error(client.post("/classify/batch", data=png, content_type="image/png"), 401)
    assert_error(client.get("/model"), 401)
    # Probes, metrics and the page stay open for health checks and scrapers.
    for url in ("/healthz", "/readyz", "/metrics", "/"):
        assert client.get(url).status_code == 200


# ------------------------------------------------------------------------------ batch


def test_batch_multipart_mixed_good_and_bad(client):
    files = [
        (io.BytesIO(card_png("pound")), "a.png"),
        (io.BytesIO(b"\xff\xd8\xff junk"), "b.jpg"),
        (io.BytesIO(card_csv("dome")), "c.csv"),
        (io.BytesIO(b""), "d.png"),
        (io.BytesIO(b"nonsense"), "e.png"),
    ]
    r = client.post("/classify/batch?top_k=2", data={"files": files})
    assert r.status_code == 200
    body = r.get_json()
    assert body["count"] == 5 and body["ok"] == 2 and body["errors"] == 3
    by_id = {x["id"]: x for x in body["results"]}
    assert by_id["a"]["label"] in CODES and len(by_id["a"]["top_k"]) == 2
    assert by_id["b"]["error"]["code"] == "unsupported_media_type"
    assert by_id["c"]["kind"] == "csv" and "label" in by_id["c"]
    assert by_id["d"]["error"]["code"] == "empty_file"
    assert by_id["e"]["error"]["code"] == "invalid_card"
    single = post_file(client, card_png("pound"), "a.png").get_json()
    for code in CODES:
        assert by_id["a"]["probabilities"][code] == pytest.approx(single["probabilities"][code], abs=1e-5)


def test_batch_zip(client, test_zip):
    data = test_zip.read_bytes()
    r = client.post("/classify/batch", data={"file": (io.BytesIO(data), "test.zip")})
    assert r.status_code == 200
    results = {x["id"]: x for x in r.get_json()["results"]}
    assert set(results) == {"0000", "0001", "0002", "0003", "0004", "0099"}
    assert results["0002"]["kind"] == "csv"  # no PNG for this card: its CSV is used
    assert results["0000"]["kind"] == "png"  # both: the PNG is preferred
    assert results["0099"]["error"]["code"] == "invalid_card"
    raw = client.post("/classify/batch", data=data, content_type="application/zip").get_json()
    assert [x.get("label") for x in raw["results"]] == [x.get("label") for x in r.get_json()["results"]]


def test_batch_zip_with_unsafe_members(client):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("test/0001.png", card_png("normal"))
        zf.writestr("../../etc/evil.png", card_png("pound"))
        zf.writestr("/abs/evil2.csv", card_csv("pound"))
        zf.writestr("test/readme.txt", b"hello")
    body = client.post("/classify/batch", data=buf.getvalue(), content_type="application/zip").get_json()
    by_id = {x["id"]: x for x in body["results"]}
    assert "label" in by_id["0001"]
    assert by_id["evil"]["error"]["code"] == "skipped_member"
    assert by_id["evil2"]["error"]["code"] == "skipped_member"
    assert body["count"] == 3


def test_batch_broken_zip(client):
    assert_error(client.post("/classify/batch", data=b"PK\x03\x04broken", content_type="application/zip"),
                 422, "invalid_zip")


def test_batch_card_limit(make_app):
    client = make_app(max_batch_cards=3).test_client()
    files = [(io.BytesIO(card_png("normal", i)), f"{i}.png") for i in range(4)]
    assert_error(client.post("/classify/batch", data={"files": files}), 413, "too_many_cards")


def test_batch_without_files(client):
    assert_error(client.post("/classify/batch", data={"x": "1"}, content_type="multipart/form-data"), 400)
    assert_error(client.post("/classify/batch", data=b"", content_type="application/zip"), 400)


def test_batch_larger_than_max_batch_is_chunked(client):
    files = [(io.BytesIO(card_png(k, i)), f"{k}-{i}.png") for i in range(3) for k in ("normal", "pound", "dome")]
    body = client.post("/classify/batch", data={"files": files}).get_json()
    assert body["ok"] == 9


# ------------------------------------------------------------------------------ probes, model, metrics


def test_probes(client):
    assert client.get("/healthz").get_json()["status"] == "ok"
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and ready["model"]["name"] == "tiny-test"


def test_model_endpoint(client):
    info = client.get("/model").get_json()
    assert info["model"]["name"] == "tiny-test"
    assert info["device"]["selected"] == "cpu" and info["device"]["requested"] == "cpu"
    assert info["preprocess"]["version"] == "fill-v1"
    assert info["metrics"]["note"] == "untrained test model"
    assert len(info["labels"]) == 12
    assert info["service"]["max_upload_bytes"] > 0


def test_metrics_count_requests_predictions_and_errors(client):
    post_file(client, card_png("normal"), "a.png")
    post_file(client, b"junk", "a.png")
    client.get("/nope")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'cardsense_http_requests_total{method="POST",route="/classify",status="200"} 1.0' in text
    assert 'cardsense_http_requests_total{method="POST",route="/classify",status="422"} 1.0' in text
    assert 'route="<unmatched>",status="404"' in text
    assert 'cardsense_errors_total{kind="invalid_card"} 1.0' in text
    assert "cardsense_predictions_total{label=" in text
    assert "cardsense_http_request_duration_seconds_bucket" in text


def test_index_page(client):
    r = client.get("/")
    assert r.status_code == 200 and b"CardSense" in r.data
    assert client.get("/static/app.js").status_code == 200
