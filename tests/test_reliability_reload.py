"""Model reload without downtime (SIGHUP to the gunicorn master), and reloads to models that must be refused.

``CARDSENSE_MODEL_DIR`` is a symlink, as in a deployment (``models/current -> models/v7``). A reload
flips it and sends SIGHUP while clients keep sending cards: no request may fail, the new model must
answer afterwards. A reload to a broken, incompatible or missing model must leave the old model
answering and say why (log and ``GET /model``). CI runs three reloads; ``CARDSENSE_FULL=1`` all of them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from http.client import HTTPConnection, HTTPException
from pathlib import Path

import pytest

from tests.conftest import GunicornServer, card_png, export_tiny_model, http

FULL = os.environ.get("CARDSENSE_FULL", "") not in ("", "0")


def report(name: str, figures: dict) -> None:
    print(f"\nRELIABILITY {json.dumps({'test': name, **figures})}")


class Traffic:
    """Clients classifying a good card in a loop (half keep-alive, half a new connection each time)."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port, self.stop, self.lock = port, threading.Event(), threading.Lock()
        self.versions: dict[str, int] = {}
        self.failures: list[str] = []
        self.max_latency = 0.0
        self.png = card_png("pound")
        self.threads = [threading.Thread(target=self._client, args=(k % 2 == 0,), daemon=True) for k in range(clients)]
        for t in self.threads:
            t.start()

    def _client(self, keepalive: bool) -> None:
        conn = None
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                if conn is None:
                    conn = HTTPConnection("127.0.0.1", self.port, timeout=60)
                conn.request("POST", "/classify", body=self.png, headers={"Content-Type": "image/png"})
                r = conn.getresponse()
                body = r.read()
                outcome = json.loads(body)["model"]["version"] if r.status == 200 else f"status {r.status}"
            except (OSError, HTTPException) as exc:
                outcome, conn = f"connection: {exc!r}", None
            if conn is not None and not keepalive:
                conn.close()
                conn = None
            with self.lock:
                self.max_latency = max(self.max_latency, time.monotonic() - started)
                if outcome.startswith(("status", "connection")):
                    self.failures.append(outcome)
                else:
                    self.versions[outcome] = self.versions.get(outcome, 0) + 1

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=90)


def model_info(server) -> dict:
    return json.loads(http("GET", server.url + "/model")[2])


def wait_for(server, pred, timeout: float = 120.0) -> dict:
    """Poll ``GET /model`` until ``pred(info)`` holds on both workers (several answers in a row)."""
    deadline, streak = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        info = model_info(server)
        streak = streak + 1 if pred(info) else 0
        if streak >= 8:
            return info
        time.sleep(0.25)
    raise AssertionError(f"condition not reached; last /model: {info['model']} {info['service']}\n{server.log()}")


def flip(link: Path, target: Path) -> None:
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def hup_and_wait(server, reloads: int) -> dict:
    os.kill(server.proc.pid, signal.SIGHUP)
    # The reload is over when every worker answering comes from it and the old ones have left.
    info = wait_for(server, lambda i: i["service"].get("reload", {}).get("reloads") == reloads)
    return info


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("reload-models")
    good_a = export_tiny_model(base / "v1", version="1.0.0")
    good_b = export_tiny_model(base / "v2", version="2.0.0")
    out = {"v1": good_a, "v2": good_b}

    def variant(name: str, change) -> None:
        d = base / name
        shutil.copytree(good_b, d)
        change(d)
        out[name] = d

    meta = json.loads((good_b / "meta.json").read_text())
    variant("empty-weights", lambda d: (d / "inference.pdiparams").write_bytes(b""))
    variant("garbled-graph", lambda d: (d / "inference.json").write_bytes((good_b / "inference.json").read_bytes()[:400]))
    variant("unknown-preprocess", lambda d: (d / "meta.json").write_text(json.dumps(
        {**meta, "version": "3.0.0", "preprocess": {**meta["preprocess"], "version": "fill-v99"}})))
    variant("eleven-labels", lambda d: (d / "meta.json").write_text(json.dumps({**meta, "labels": meta["labels"][:11]})))
    variant("no-meta", lambda d: (d / "meta.json").unlink())
    out["missing"] = base / "does-not-exist"
    return out


CI_BROKEN = ["empty-weights", "unknown-preprocess"]
ALL_BROKEN = CI_BROKEN + ["missing", "garbled-graph", "eleven-labels", "no-meta"]


def test_reload_without_downtime_and_broken_models_are_kept_out(models, tmp_path):
    link = tmp_path / "current"
    flip(link, models["v1"])
    server = GunicornServer(link, tmp_path / "gunicorn.log", CARDSENSE_ACCESS_LOG="/dev/null")
    figures: dict = {"reloads": []}
    try:
        server.wait_ready()
        traffic = Traffic(server.port)
        try:
            time.sleep(1.0)
            # 1. A good new model: switched to without a failed request.
            flip(link, models["v2"])
            started = time.monotonic()
            info = hup_and_wait(server, 1)
            assert info["service"]["reload"]["ok"] is True and info["model"]["version"] == "2.0.0"
            figures["reloads"].append({"to": "v2", "ok": True, "seconds": round(time.monotonic() - started, 1)})
            # 2. Broken, incompatible, missing: refused, v2 keeps answering, the reason is given.
            reloads = 1
            for name in ALL_BROKEN if FULL else CI_BROKEN:
                flip(link, models[name])
                reloads += 1
                info = hup_and_wait(server, reloads)
                status = info["service"]["reload"]
                assert status["ok"] is False and status["reason"], status
                assert info["model"]["version"] == "2.0.0", (name, info["model"])
                figures["reloads"].append({"to": name, "ok": False, "reason": status["reason"][:160]})
            log = (tmp_path / "gunicorn.log").read_text(errors="replace")
            assert log.count("model reload refused") == len(figures["reloads"]) - 1, log[-3000:]
        finally:
            traffic.finish()
        # 3. After all that, a good card still gets v2's answer.
        status, _, raw = http("POST", server.url + "/classify", card_png("pound"), {"Content-Type": "image/png"})
        assert status == 200 and json.loads(raw)["model"]["version"] == "2.0.0"
        log = (tmp_path / "gunicorn.log").read_text(errors="replace")
        figures.update(requests=sum(traffic.versions.values()) + len(traffic.failures), failed=len(traffic.failures),
                       by_version=traffic.versions, max_latency_s=round(traffic.max_latency, 2))
        report("model_reload", figures)
        assert not traffic.failures, traffic.failures[:5]
        assert traffic.versions.get("1.0.0") and traffic.versions.get("2.0.0")
        # Old workers stop gracefully (gunicorn's handler, not Paddle's, which would drop requests).
        assert "was sent SIGTERM" not in log and "Termination signal" not in log
        assert server.proc.poll() is None
    finally:
        server.stop()


def test_a_model_overwritten_in_place_never_reaches_a_worker(models, tmp_path):
    """Workers load a checked snapshot: a folder broken in place is refused at reload and also
    not picked up by a worker gunicorn starts after a crash."""
    folder = tmp_path / "model"
    shutil.copytree(models["v1"], folder)
    server = GunicornServer(folder, tmp_path / "gunicorn.log", CARDSENSE_ACCESS_LOG="/dev/null", CARDSENSE_WORKERS="1")
    try:
        server.wait_ready()
        (folder / "inference.pdiparams").write_bytes(b"")  # broken in place while serving
        from tests.test_reliability_load import worker_pids

        (pid,) = worker_pids(server.proc.pid)
        os.kill(pid, signal.SIGKILL)  # the replacement worker must still load the good snapshot
        server.wait_ready()
        wait_for(server, lambda i: i["runtime"]["pid"] != pid)
        status, _, raw = http("POST", server.url + "/classify", card_png("pound"), {"Content-Type": "image/png"})
        assert status == 200 and json.loads(raw)["model"]["version"] == "1.0.0"
        if FULL:
            info = hup_and_wait(server, 1)
            assert info["service"]["reload"]["ok"] is False and info["model"]["version"] == "1.0.0"
    finally:
        server.stop()
