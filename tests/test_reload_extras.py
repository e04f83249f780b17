"""SIGHUP reload re-reads and re-checks every model folder, the extra (series/dual) ones too (issue #8).

A real gunicorn on loopback serves the tiny image model plus a series model folder. The series folder's
contents are replaced by a different valid model and SIGHUP makes the CSV answers come from it; then
the folder is broken (and removed) and SIGHUP is refused: the previous series model keeps answering,
the reason names the folder, and readiness and requests never fail meanwhile.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, GunicornServer, card_csv, card_png, encode_multipart, export_tiny_series_model, http


def _replace_contents(folder: Path, new: Path) -> None:
    """Overwrite the model files in place (what a careless deployment does)."""
    for name in ("inference.json", "inference.pdiparams", "meta.json"):
        shutil.copyfile(new / name, folder / name)


class Watch:
    """Poll /readyz and classify a CSV in a loop; record every failure and each answering series model."""

    def __init__(self, server) -> None:
        self.server, self.stop = server, threading.Event()
        self.failures: list[str] = []
        self.models: dict[str, int] = {}
        self.csv = card_csv("pound")
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._ready, self._classify)]
        for t in self.threads:
            t.start()

    def _ready(self) -> None:
        while not self.stop.is_set():
            try:
                status, _, body = http("GET", self.server.url + "/readyz", timeout=30)
            except OSError as exc:
                self.failures.append(f"readyz: {exc!r}")
                continue
            if status != 200:
                self.failures.append(f"readyz {status} {body[:200]!r}")
            time.sleep(0.1)

    def _classify(self) -> None:
        while not self.stop.is_set():
            try:
                status, _, body = http("POST", self.server.url + "/classify", self.csv, {"Content-Type": "text/csv"},
                                       timeout=60)
            except OSError as exc:
                self.failures.append(f"classify: {exc!r}")
                continue
            if status != 200:
                self.failures.append(f"classify {status} {body[:200]!r}")
                continue
            model = json.loads(body)["model"]
            key = f"{model['kind']}:{model['name']}:{model['version']}"
            self.models[key] = self.models.get(key, 0) + 1
            time.sleep(0.05)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=90)


def _csv_model(server) -> dict:
    status, _, body = http("POST", server.url + "/classify", card_csv("normal"), {"Content-Type": "text/csv"})
    assert status == 200, body
    return json.loads(body)["model"]


def _png_model(server) -> dict:
    body, ctype = encode_multipart([("file", "c.png", card_png("normal"), "image/png")])
    status, _, raw = http("POST", server.url + "/classify", body, {"Content-Type": ctype})
    assert status == 200, raw
    return json.loads(raw)["model"]


def _hup_and_wait(server, reloads: int, settled, timeout: float = 150.0) -> dict:
    """SIGHUP, then wait until /model reports that reload and ``settled(info)`` holds on several answers in a row
    (the old worker has retired)."""
    os.kill(server.proc.pid, signal.SIGHUP)
    deadline, streak, info = time.monotonic() + timeout, 0, {}
    while time.monotonic() < deadline:
        info = json.loads(http("GET", server.url + "/model")[2])
        ok = info["service"].get("reload", {}).get("reloads") == reloads and settled(info)
        streak = streak + 1 if ok else 0
        if streak >= 8:
            return info
        time.sleep(0.25)
    raise AssertionError(f"reload {reloads} did not settle; last /model service: {info.get('service')}\n{server.log()}")


@pytest.fixture(scope="module")
def other_series(tmp_path_factory) -> Path:
    return export_tiny_series_model("series", tmp_path_factory.mktemp("other-series") / "series", seed=7, version="9.9.9")


def test_sighup_reloads_the_extra_model_folders(tiny_model, other_series, tmp_path):
    series = tmp_path / "series"
    shutil.copytree(REPO / "models" / "series", series)
    shipped = json.loads((series / "meta.json").read_text())
    log_path = tmp_path / "gunicorn.log"
    server = GunicornServer(tiny_model, log_path, CARDSENSE_EXTRA_MODEL_DIRS=str(series), CARDSENSE_WORKERS="1",
                            CARDSENSE_ACCESS_LOG="/dev/null")
    try:
        server.wait_ready()
        before = _csv_model(server)
        assert (before["kind"], before["name"]) == ("series", shipped["name"])
        assert _png_model(server)["kind"] == "image"
        watch = Watch(server)
        try:
            # 1. A different valid series model in the same folder: SIGHUP switches the CSV answers to it.
            _replace_contents(series, other_series)
            info = _hup_and_wait(server, 1, lambda i: i["models"]["series"]["name"] == "tiny-series")
            status = info["service"]["reload"]
            assert status["ok"] is True, status
            assert str(series) in status["sources"]
            assert {"kind": "series", "name": "tiny-series", "version": "9.9.9", "source": str(series)} in status["models"]
            assert info["models"]["series"]["folder"] != str(series)  # workers serve a checked snapshot
            after = _csv_model(server)
            assert (after["name"], after["version"]) == ("tiny-series", "9.9.9")
            assert _png_model(server)["name"] == "tiny-test"

            # 2. The series folder broken in place: refused, the previous series model keeps answering.
            (series / "inference.pdiparams").write_bytes(b"")
            info = _hup_and_wait(server, 2, lambda i: True)
            status = info["service"]["reload"]
            assert status["ok"] is False and str(series) in status["reason"], status
            assert info["models"]["series"]["name"] == "tiny-series"
            assert _csv_model(server)["version"] == "9.9.9"

            # 3. The series folder gone altogether: refused too (not silently served without a series model).
            shutil.rmtree(series)
            info = _hup_and_wait(server, 3, lambda i: True)
            status = info["service"]["reload"]
            assert status["ok"] is False and str(series) in status["reason"], status
            assert _csv_model(server)["kind"] == "series"
        finally:
            watch.finish()
        log = log_path.read_text(errors="replace")
        assert log.count("model reload refused") == 2, log[-3000:]
        assert not watch.failures, watch.failures[:5]
        assert watch.models.get("series:tiny-series:9.9.9"), watch.models
        assert server.proc.poll() is None
    finally:
        server.stop()
