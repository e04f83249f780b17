"""The service as it runs in production: a real gunicorn (2 workers x 2 threads) on 127.0.0.1."""

from __future__ import annotations

import csv
from http.client import HTTPConnection
import json
import re
import socket
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving import batch
from tests.conftest import CARD_KINDS, GunicornServer, card_csv, card_png, encode_multipart, http

CODES = [f"A{i:02d}" for i in range(1, 13)]


def classify(server, data: bytes, filename: str, ctype: str, query: str = ""):
    body, content_type = encode_multipart([("file", filename, data, ctype)])
    status, headers, raw = http("POST", server.url + "/classify" + query, body, {"Content-Type": content_type})
    return status, headers, json.loads(raw) if raw else None


def test_probes_and_model(gunicorn_server):
    for path in ("/healthz", "/readyz"):
        status, _, raw = http("GET", gunicorn_server.url + path)
        assert status == 200
    status, _, raw = http("GET", gunicorn_server.url + "/model")
    info = json.loads(raw)
    assert info["device"]["selected"] == "cpu" and info["device"]["reason"]
    assert info["runtime"]["pool_size"] == 2


def test_classify_png_and_csv(gunicorn_server):
    status, _, body = classify(gunicorn_server, card_png("pound"), "a.png", "image/png", "?top_k=3")
    assert status == 200
    assert body["label"] in CODES and len(body["top_k"]) == 3
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    status, _, raw = http("POST", gunicorn_server.url + "/classify", card_csv("pound"), {"Content-Type": "text/csv"})
    assert status == 200 and json.loads(raw)["input"]["kind"] == "csv"


@pytest.mark.parametrize(
    "data,ctype,status",
    [
        (b"", "image/png", 400),
        (b"\xff\xd8\xff\xe0JFIF", "image/jpeg", 415),
        (b"\x89PNG\r\n\x1a\n" + b"x" * 100, "image/png", 422),
        (b"not,a\ncard,at all\n", "text/csv", 422),
        (b"1,2\n" * 3_000_000, "text/csv", 413),
    ],
)
def test_errors_are_json_from_the_real_server(gunicorn_server, data, ctype, status):
    got, headers, raw = http("POST", gunicorn_server.url + "/classify", data, {"Content-Type": ctype})
    assert got == status
    assert headers["Content-Type"].startswith("application/json")
    assert set(json.loads(raw)["error"]) == {"code", "message"}


def test_malformed_http_does_not_hurt_the_workers(gunicorn_server):
    """Garbage on the socket, a lying Content-Length and a cut-off upload; the service keeps answering."""
    host, port = "127.0.0.1", gunicorn_server.port
    for payload in (
        b"GARBAGE\r\n\r\n",
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n\x89PNG",
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=zz\r\n"
        b"Content-Length: 40\r\n\r\n--zz\r\nContent-Disposition: form-data; name=",
    ):
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            try:
                s.recv(4096)
            except OSError:
                pass
    # Bad multipart without a boundary parameter.
    status, _, raw = http("POST", gunicorn_server.url + "/classify", b"abc",
                          {"Content-Type": "multipart/form-data"})
    assert status == 400 and json.loads(raw)["error"]
    status, _, _ = classify(gunicorn_server, card_png("normal"), "a.png", "image/png")
    assert status == 200


def test_concurrent_requests_get_their_own_answers(gunicorn_server):
    cards = {(k, seed): card_png(k, seed) for k in CARD_KINDS for seed in range(3)}
    expected = {key: classify(gunicorn_server, png, "c.png", "image/png")[2]["probabilities"] for key, png in cards.items()}
    jobs = list(cards.items()) * 4

    def one(item):
        key, png = item
        status, _, body = classify(gunicorn_server, png, "c.png", "image/png")
        return key, status, body

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, jobs))
    assert all(status == 200 for _, status, _ in results)
    for key, _, body in results:
        for code in CODES:
            assert body["probabilities"][code] == pytest.approx(expected[key][code], abs=1e-5), key


def test_batch_zip_over_http(gunicorn_server, test_zip):
    body, ctype = encode_multipart([("file", "test.zip", test_zip.read_bytes(), "application/zip")])
    status, _, raw = http("POST", gunicorn_server.url + "/classify/batch", body, {"Content-Type": ctype})
    assert status == 200
    result = json.loads(raw)
    assert result["count"] == 6 and result["errors"] == 1


def test_batch_scorer_and_service_agree(gunicorn_server, test_zip, tmp_path, tiny_model):
    """Same card -> same label and probabilities (1e-5) from python -m serving.batch and POST /classify."""
    out = tmp_path / "predictions.csv"
    assert batch.main([str(test_zip), "--out", str(out), "--model", str(tiny_model), "--batch-size", "4",
                       "--no-progress"]) == 0
    rows = {r["id"]: r for r in csv.DictReader(out.open(encoding="utf-8-sig"))}
    with zipfile.ZipFile(test_zip) as zf:
        names = zf.namelist()
        compared = 0
        for card_id, row in rows.items():
            if row["error"]:
                continue
            png, csv_name = f"test/{card_id}.png", f"test/{card_id}.csv"
            name = png if png in names else csv_name
            data = zf.read(name)
            status, _, body = classify(gunicorn_server, data, name.split("/")[-1],
                                       "image/png" if name.endswith(".png") else "text/csv")
            assert status == 200
            assert body["label"] == row["label"]
            assert body["name"] == row["name"]
            for code in CODES:
                assert float(row[code]) == pytest.approx(body["probabilities"][code], abs=1e-5)
            compared += 1
    assert compared == 5


def test_metrics_add_up_over_workers(gunicorn_server):
    def total(text: str, pattern: str) -> float:
        return sum(float(m) for m in re.findall(pattern, text))

    _, _, before = http("GET", gunicorn_server.url + "/metrics")
    n = 12
    for _ in range(n):
        http("POST", gunicorn_server.url + "/classify", b"junk", {"Content-Type": "image/png"})
    _, headers, after = http("GET", gunicorn_server.url + "/metrics")
    assert headers["Content-Type"].startswith("text/plain")
    pattern = r'cardsense_http_requests_total\{method="POST",route="/classify",status="422"\} ([0-9.e+]+)'
    assert total(after.decode(), pattern) - total(before.decode(), pattern) == n
    assert "cardsense_errors_total" in after.decode()


def test_keepalive_connection_survives_errors(gunicorn_server):
    conn = HTTPConnection("127.0.0.1", gunicorn_server.port, timeout=10)
    try:
        for data, ctype, status in ((b"junk", "image/png", 422), (card_png("normal"), "image/png", 200),
                                    (b"{}", "application/json", 415), (card_csv("dome"), "text/csv", 200)):
            conn.request("POST", "/classify", body=data, headers={"Content-Type": ctype})
            r = conn.getresponse()
            assert r.status == status
            json.loads(r.read())
    finally:
        conn.close()


def test_bad_model_folder_stops_gunicorn_with_a_clear_message(tmp_path):
    server = GunicornServer(tmp_path / "no-such-model", tmp_path / "bad.log", CARDSENSE_WORKERS="1")
    try:
        code = server.proc.wait(timeout=60)
    finally:
        server.stop()
    log = (tmp_path / "bad.log").read_text(errors="replace")
    assert code != 0
    assert "does not exist" in log


def test_token_over_http(tiny_model, tmp_path):
    with GunicornServer(tiny_model, tmp_path / "token.log", CARDSENSE_API_TOKEN="t0ken",
                        CARDSENSE_WORKERS="1") as server:
        status, headers, _ = http("POST", server.url + "/classify", card_png("normal"), {"Content-Type": "image/png"})
        assert status == 401 and "Bearer" in headers.get("WWW-Authenticate", "")
        status, _, _ = http("POST", server.url + "/classify", card_png("normal"),
                            {"Content-Type": "image/png", "Authorization": "Bearer t0ken"})
        assert status == 200


def test_refused_uploads_still_get_their_answer(tiny_model, tmp_path):
    """A 7 MB body refused before it is read (401 here) is drained, so the client reads the 401."""
    with GunicornServer(tiny_model, tmp_path / "drain.log", CARDSENSE_API_TOKEN="t", CARDSENSE_WORKERS="1",
                        CARDSENSE_MAX_UPLOAD_MB="1") as server:
        status, _, raw = http("POST", server.url + "/classify", b"1,2\n" * 1_750_000, {"Content-Type": "text/csv"})
        assert status == 401 and json.loads(raw)["error"]["code"] == "unauthorized"
        status, _, raw = http("POST", server.url + "/classify", b"1,2\n" * 1_750_000,
                              {"Content-Type": "text/csv", "Authorization": "Bearer t"})
        assert status == 413 and json.loads(raw)["error"]["code"] == "payload_too_large"
        assert http("GET", server.url + "/readyz")[0] == 200


@pytest.mark.parametrize("multipart", [False, True])
def test_chunked_uploads_are_limited_too(gunicorn_server, multipart):
    """No Content-Length (chunked): a small card is classified, an oversized body is a 413."""

    def send(data: bytes, ctype: str):
        if multipart:
            data, ctype = encode_multipart([("file", "card" + (".png" if ctype == "image/png" else ".csv"), data, ctype)])
        conn = HTTPConnection("127.0.0.1", gunicorn_server.port, timeout=30)
        try:
            conn.request("POST", "/classify", body=(data[i:i + 65536] for i in range(0, len(data), 65536)),
                         headers={"Content-Type": ctype, "Transfer-Encoding": "chunked"}, encode_chunked=True)
            r = conn.getresponse()
            return r.status, json.loads(r.read())
        finally:
            conn.close()

    status, body = send(card_png("normal"), "image/png")
    assert status == 200 and body["label"] in CODES
    status, body = send(b"1,2\n" * 2_500_000, "text/csv")  # 10 MB > the 8 MB default
    assert status == 413 and body["error"]["code"] == "payload_too_large"


def test_load_generator(gunicorn_server, tmp_path, capsys):
    """python -m serving.loadtest against the live service: every request answered 200."""
    from serving import loadtest

    for kind in CARD_KINDS:
        (tmp_path / f"{kind}.png").write_bytes(card_png(kind))
        (tmp_path / f"{kind}-raw.csv").write_bytes(card_csv(kind))
    assert loadtest.main([gunicorn_server.url, str(tmp_path), "--concurrency", "3", "--seconds", "1"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["requests"] > 0 and stats["statuses"] == {"200": stats["requests"]}
    # explanations, a fixed number of requests: the latency of ?explain=1
    assert loadtest.main([gunicorn_server.url, str(tmp_path), "--concurrency", "1", "--seconds", "60",
                          "--query", "explain=1", "--requests", "4"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["requests"] == 4 and stats["statuses"] == {"200": 4} and stats["query"] == "explain=1"


def test_load_generator_sends_pairs_and_csvs(tmp_path):
    from serving import loadtest

    (tmp_path / "a.png").write_bytes(card_png("normal"))
    (tmp_path / "a.csv").write_bytes(card_csv("normal"))
    (tmp_path / "b.png").write_bytes(card_png("dome"))
    pairs = loadtest.load_cards(str(tmp_path), send="pair")
    assert len(pairs) == 1 and pairs[0][1].startswith("multipart/form-data; boundary=")
    assert b'name="file"; filename="card.png"' in pairs[0][0] and b'name="series"' in pairs[0][0]
    assert loadtest.load_cards(str(tmp_path), send="csv") == [(card_csv("normal"), "text/csv")]
    assert len(loadtest.load_cards(str(tmp_path), send="png")) == 2
