"""Dynamic batching inside a real gunicorn on loopback: under concurrent load the answers equal the one-at-a-time
answers, calls carry several requests (``/metrics``), a bad card fails alone, nothing is lost across a SIGHUP
reload, and a lone request is never held back for company.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.client import HTTPConnection, HTTPException

import pytest

from tests.conftest import CARD_KINDS, GunicornServer, card_png, http
from tests.test_reliability_reload import flip, hup_and_wait

GOOD = [card_png(kind, seed) for seed in range(3) for kind in CARD_KINDS]
BAD = card_png("normal")[:300]  # a truncated PNG: refused while it is prepared, before anything is queued


def classify(conn: HTTPConnection, png: bytes) -> tuple[int, dict]:
    conn.request("POST", "/classify", body=png, headers={"Content-Type": "image/png"})
    r = conn.getresponse()
    return r.status, json.loads(r.read())


def one_at_a_time(port: int) -> list[dict]:
    """Each good card alone, one request after the other: the reference answers."""
    conn = HTTPConnection("127.0.0.1", port, timeout=60)
    answers = []
    for png in GOOD:
        status, body = classify(conn, png)
        assert status == 200, body
        answers.append(body)
    conn.close()
    return answers


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            return float(m.group(2))
    return 0.0


def metrics_text(server) -> str:
    return http("GET", server.url + "/metrics")[2].decode()


def hammer(port: int, clients: int, requests: int, bad_every: int = 0,
           until: threading.Event | None = None) -> tuple[list, list]:
    """``clients`` keep-alive clients send ``requests`` cards each (or, with ``until``, until it is set);
    every ``bad_every``-th is the bad card."""
    results: list[tuple[int, int, dict]] = []  # (card index or -1 for the bad card, status, body)
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(k: int) -> None:
        conn = HTTPConnection("127.0.0.1", port, timeout=60)
        start.wait()
        step = 0
        while (step < requests) if until is None else not until.is_set():
            step += 1
            bad = bad_every and (k + step) % bad_every == 0
            index = -1 if bad else (k * 5 + step) % len(GOOD)
            try:
                status, body = classify(conn, BAD if bad else GOOD[index])
            except (OSError, HTTPException, ValueError) as exc:
                with lock:
                    failures.append(repr(exc))
                conn = HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            with lock:
                results.append((index, status, body))
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, failures


def test_concurrent_load_is_batched_and_answers_as_one_at_a_time(tiny_model, tmp_path):
    with GunicornServer(tiny_model, tmp_path / "gunicorn.log", CARDSENSE_WORKERS="1", CARDSENSE_THREADS="8",
                        CARDSENSE_BATCH_SIZES="", CARDSENSE_MAX_BATCH="8", CARDSENSE_ACCESS_LOG="") as server:
        expected = one_at_a_time(server.port)
        results, failures = hammer(server.port, clients=16, requests=20, bad_every=7)
        assert failures == []
        bad = [(s, b) for i, s, b in results if i < 0]
        good = [(i, s, b) for i, s, b in results if i >= 0]
        assert bad and all(s == 422 and b["error"]["code"] == "invalid_card" for s, b in bad)
        for i, status, body in good:
            assert status == 200, body
            assert body["label"] == expected[i]["label"]
            assert body["probabilities"] == expected[i]["probabilities"], f"card {i} answered differently"
        text = metrics_text(server)
        calls = metric(text, "cardsense_batch_size_count", kind="image")
        alone = metric(text, "cardsense_batch_size_bucket", kind="image", le="1.0")
        assert calls >= 1 and calls - alone > 0, f"no call carried more than one card:\n{text}"
        assert metric(text, "cardsense_batch_size_bucket", kind="image", le="8.0") == calls  # max batch 8
        assert metric(text, "cardsense_batch_failures_total", kind="image") == 0
        assert metric(text, "cardsense_batch_requests_sum", kind="image") == len(expected) + len(good)


def test_a_lone_request_is_never_held_back(tiny_model, tmp_path):
    """CARDSENSE_MAX_WAIT_MS=1000, one client: no call is held, no request waits anywhere near that."""
    with GunicornServer(tiny_model, tmp_path / "gunicorn.log", CARDSENSE_WORKERS="1", CARDSENSE_THREADS="4",
                        CARDSENSE_MAX_WAIT_MS="1000", CARDSENSE_ACCESS_LOG="") as server:
        for _ in range(3):
            one_at_a_time(server.port)
        text = metrics_text(server)
        requests = metric(text, "cardsense_batch_queue_wait_seconds_count", kind="image")
        assert requests == 3 * len(GOOD)
        assert metric(text, "cardsense_batch_held_total", kind="image") == 0
        # Every wait is in the buckets far below the 1 s a held call would wait.
        assert metric(text, "cardsense_batch_queue_wait_seconds_bucket", kind="image", le="0.25") == requests
        assert metric(text, "cardsense_batch_size_bucket", kind="image", le="1.0") == requests


def test_sighup_reload_under_batched_load_loses_no_request(tiny_model, tmp_path):
    link = tmp_path / "current"
    flip(link, tiny_model)
    with GunicornServer(link, tmp_path / "gunicorn.log", CARDSENSE_WORKERS="2", CARDSENSE_THREADS="6",
                        CARDSENSE_ACCESS_LOG="") as server:
        expected = one_at_a_time(server.port)
        outcome: dict = {}
        stop = threading.Event()
        load = threading.Thread(target=lambda: outcome.update(zip(
            ("results", "failures"), hammer(server.port, clients=12, requests=0, until=stop))))
        load.start()
        time.sleep(0.5)
        before = metric(metrics_text(server), "cardsense_batch_size_count", kind="image")
        hup_and_wait(server, 1)  # until the new workers answer and the old ones have left
        time.sleep(0.5)
        stop.set()
        load.join(timeout=120)
        assert not load.is_alive()
        assert outcome["failures"] == []
        assert before > 0 and len(outcome["results"]) > before  # the load ran before, during and after
        for i, status, body in outcome["results"]:
            assert status == 200, body
            assert body["probabilities"] == expected[i]["probabilities"]
        text = metrics_text(server)
        assert metric(text, "cardsense_batch_failures_total", kind="image") == 0


@pytest.mark.parametrize("kind", ["image"])
def test_metrics_name_the_batching_series(gunicorn_server, kind):
    status, _, _ = http("POST", gunicorn_server.url + "/classify", GOOD[0], {"Content-Type": "image/png"})
    assert status == 200
    text = metrics_text(gunicorn_server)
    for name in ("cardsense_batch_size_bucket", "cardsense_batch_requests_bucket",
                 "cardsense_batch_queue_wait_seconds_bucket", "cardsense_batch_run_seconds_bucket"):
        assert metric(text, name.replace("_bucket", "_count"), kind=kind) >= 1, name
