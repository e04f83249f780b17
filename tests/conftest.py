"""Shared fixtures. Serving: a tiny real exported model, a few generated cards, the Flask app and a
real gunicorn on 127.0.0.1.

The tiny model is a real Paddle network exported with ``paddle.jit.save`` and described by
``shared.meta.write_meta``, so the serving code runs exactly as with a trained model. Its output is
deterministic and depends on the card's shape: it pools the filled card into a 3 x 4 grid (12
cells) and scores each class by one cell's share of ink, so different cards get different labels.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# Cards
# --------------------------------------------------------------------------------------------


def synthetic_card(kind: str, n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Position (m) and load (kN) of one stroke shaped like a few conditions."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    position = 1.5 * (1.0 - np.cos(t))  # 0 .. 3 m
    up = t < np.pi
    phase = position / 3.0
    if kind == "normal":
        load = np.where(up, 40.0 + 30.0 * np.clip(phase * 8, 0, 1), 70.0 - 30.0 * np.clip((1 - phase) * 8, 0, 1))
    elif kind == "pound":  # fluid pound: load stays high into the downstroke, then drops
        load = np.where(up, 40.0 + 30.0 * np.clip(phase * 8, 0, 1), np.where(phase > 0.45, 70.0, 40.0))
    elif kind == "sliver":  # gas lock: almost no area
        load = 45.0 + 10.0 * phase + np.where(up, 1.5, -1.5)
    elif kind == "dome":  # traveling valve leak
        load = np.where(up, 40.0 + 30.0 * np.sin(np.pi * phase), 40.0)
    elif kind == "inertia":
        load = np.where(up, 40.0 + 30.0 * np.clip(phase * 8, 0, 1), 70.0 - 30.0 * np.clip((1 - phase) * 8, 0, 1))
        load = load + 12.0 * (0.5 - phase)
    else:
        raise ValueError(kind)
    load = load + rng.normal(0.0, 0.3, n)
    return position, load


CARD_KINDS = ("normal", "pound", "sliver", "dome", "inertia")


def card_png(kind: str, seed: int = 0) -> bytes:
    """A competition-format card PNG (RGBA, outline in alpha)."""
    from shared.cards import render_card_png

    return render_card_png(*synthetic_card(kind, seed=seed))


def card_csv(kind: str, seed: int = 0) -> bytes:
    """A raw-data CSV as field systems export it (GBK, competition header)."""
    from shared.cards import card_csv_text

    return card_csv_text(*synthetic_card(kind, seed=seed)).encode("gbk")


@pytest.fixture(scope="session")
def cards() -> dict[str, dict[str, bytes]]:
    """``{kind: {"png": bytes, "csv": bytes}}`` for each synthetic card kind."""
    return {k: {"png": card_png(k, i), "csv": card_csv(k, i)} for i, k in enumerate(CARD_KINDS)}


@pytest.fixture(scope="session")
def test_zip(tmp_path_factory, cards) -> Path:
    """A flat ``test.zip`` like the competition's: pairs, a CSV-only card, a PNG-only card, a bad card."""
    path = tmp_path_factory.mktemp("zips") / "test.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i, (kind, files) in enumerate(cards.items()):
            if kind != "sliver":
                zf.writestr(f"test/{i:04d}.png", files["png"])
            if kind != "dome":
                zf.writestr(f"test/{i:04d}.csv", files["csv"])
        zf.writestr("test/0099.png", b"\x89PNG\r\n\x1a\nthis is not a real png")
    return path


# --------------------------------------------------------------------------------------------
# Tiny model
# --------------------------------------------------------------------------------------------


def export_tiny_series_model(kind: str, folder: Path, seed: int = 1, version: str = "0.0.1") -> Path:
    """Export an untrained (seeded, deterministic) ``series`` or ``dual`` network with its ``meta.json``."""
    import paddle

    from training.dual_models import DualNet
    from training.export import export_model
    from training.series_models import SeriesNet

    paddle.seed(seed)
    net = SeriesNet() if kind == "series" else DualNet()
    export_model(net, folder, {"name": f"tiny-{kind}", "version": version}, kind=kind)
    return folder


def _grid_net(other_class: bool = False, logits: bool = False):
    """The tiny deterministic image network: the filled card pooled into a 3 x 4 grid (12 cells), each class
    scored by one cell's share of fill. With ``other_class`` a 13th output scores "none of the twelve", high
    for a card with little fill (20 - 50 x the mean fill: a gas-lock sliver, not a full card); ``logits``
    returns the scores, else their softmax."""
    import paddle

    class GridNet(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.pool = paddle.nn.AdaptiveAvgPool2D((3, 4))
            self.head = paddle.nn.Linear(12, 13 if other_class else 12)

        def forward(self, x):
            scores = self.head(paddle.flatten(self.pool(x), 1))
            return scores if logits else paddle.nn.functional.softmax(scores, axis=-1)

    paddle.seed(0)
    net = GridNet()
    rng = np.random.default_rng(0)
    weight = 12.0 * np.eye(12) + rng.normal(0.0, 0.5, (12, 12))
    bias = np.zeros(12)
    if other_class:
        weight = np.concatenate([weight, np.full((12, 1), -50.0 / 12)], axis=1)
        bias = np.append(bias, 20.0)
    net.head.weight.set_value(weight.astype("float32"))
    net.head.bias.set_value(bias.astype("float32"))
    net.eval()
    return net


def export_tiny_model(out_dir: Path, **meta_overrides) -> Path:
    """Export a tiny deterministic image model with its ``meta.json`` into ``out_dir``.

    ``meta_overrides`` replace ``meta.json`` entries; ``output="logits"`` exports the network's scores
    instead of its softmax and ``other_class=True`` a 13th "none of the twelve" output (the model contract of
    ``shared.model_outputs``).
    """
    import paddle

    from shared.meta import write_meta
    from shared.preprocess import PreprocessConfig

    net = _grid_net(other_class=bool(meta_overrides.get("other_class")),
                    logits=meta_overrides.get("output") == "logits")
    config = PreprocessConfig()
    out_dir.mkdir(parents=True, exist_ok=True)
    paddle.jit.save(
        net,
        str(out_dir / "inference"),
        input_spec=[paddle.static.InputSpec([None, *config.input_shape], "float32", name="x")],
    )
    meta = {
        "name": "tiny-test",
        "version": "0.0.1",
        "kind": "image",
        "created": "2026-11-26T00:00:00Z",
        "input": {"shape": [None, *config.input_shape], "dtype": "float32"},
        "output": "probabilities",
        "preprocess": config.to_dict(),
        "architecture": "gridnet-test",
        "metrics": {"accuracy": 0.0, "note": "untrained test model"},
        "framework": {"paddle": paddle.__version__, "python": sys.version.split()[0]},
    }
    meta.update(meta_overrides)
    write_meta(out_dir, meta)
    return out_dir


# The model contract of a new (issue #14) model folder: logits with a 13th output, a temperature, a fitted
# review rule and an outlier-exposure threshold (shared.model_outputs).
NEW_FORMAT_META = {
    "name": "tiny-logits",
    "output": "logits",
    "other_class": True,
    "confidence": {"temperature": 1.2, "ece_before": 0.12, "ece_after": 0.04, "fitted_on": "test cards",
                   "review": {"min_top": 0.5, "min_margin": 0.1, "target_precision": 0.9, "fitted_on": "test cards"}},
    "open_set": {"method": "outlier_exposure", "threshold": 0.15, "accept_rate": 0.95, "fitted_on": "test cards"},
}


@pytest.fixture(scope="session")
def tiny_logits_model(tmp_path_factory) -> Path:
    """Folder of the tiny model in the new format (:data:`NEW_FORMAT_META`)."""
    return export_tiny_model(tmp_path_factory.mktemp("models") / "tiny-logits", **NEW_FORMAT_META)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Folder of the tiny exported model (built once per session, in a subprocess-free way)."""
    return export_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def predictor(tiny_model):
    """A warmed-up CPU predictor for the tiny model, shared by the Flask-client tests."""
    from serving.predictor import Predictor

    return Predictor(tiny_model, device="cpu", pool_size=2, batch_sizes=(1, 4, 8))


@pytest.fixture()
def make_app(tiny_model, predictor):
    """``make_app(**serving_overrides)`` -> Flask app in testing mode sharing the session predictor."""
    from serving.app import create_app
    from serving.config import ServingConfig

    def build(**overrides):
        serving = ServingConfig(model_dir=tiny_model, device="cpu", batch_sizes=(1, 4, 8), **overrides)
        return create_app({"TESTING": True, "SERVING": serving, "PREDICTOR": predictor})

    return build


@pytest.fixture()
def app(make_app):
    return make_app()


@pytest.fixture()
def client(app):
    return app.test_client()


def simulated_train_set(tmp_path_factory, per_class: int, seed: int) -> Path:
    """A tiny simulated set in the competition layout; returns its ``train/`` folder (A01 … A12/)."""
    from training.simulate import generate_dataset

    out = tmp_path_factory.mktemp("sim") / "set"
    generate_dataset(out, per_class, seed=seed, workers=1, progress=False)
    return out / "train"


def small_field_csv(path: Path, per_class: int, others: int = 2) -> Path:
    """The first ``per_class`` vendored field cards of each of our codes (and ``others`` without one), as a
    field-format CSV at ``path``: real cards, few enough for a one-epoch test run."""
    import csv

    taken: dict[str, int] = {}
    with open(REPO / "data" / "field" / "field-cards.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = []
        for row in reader:
            code = row["code"]
            if taken.get(code, 0) < (per_class if code else others):
                taken[code] = taken.get(code, 0) + 1
                rows.append(row)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return path


FEW_FIELD_PER_CLASS = 6


@pytest.fixture(scope="session")
def few_field_csv(tmp_path_factory) -> Path:
    """``few.csv``: the first 6 vendored field cards of each of our seven codes (42) and 2 others."""
    return small_field_csv(tmp_path_factory.mktemp("field") / "few.csv", FEW_FIELD_PER_CLASS)


@pytest.fixture(scope="module")
def training_cache(tmp_path_factory) -> Path:
    """A training cache (``--cache-dir``) shared by the tests of one module."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_cardnet(tmp_path_factory) -> Path:
    """An untrained (seeded) ``cardnet`` exported by the toolkit, ``model.pdparams`` included: a base for ``--init``."""
    import paddle

    from training.export import export_model
    from training.image_models import CardNet

    paddle.seed(3)
    folder = tmp_path_factory.mktemp("models") / "tiny-cardnet"
    return export_model(CardNet(), folder, {"name": "tiny-cardnet", "architecture": "cardnet"})


# --------------------------------------------------------------------------------------------
# A real gunicorn on loopback
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GunicornServer:
    """A gunicorn master started with the project's config; ``url`` is its base address.

    As a context manager it waits until the service is ready and stops it on the way out.
    """

    def __init__(self, model_dir: Path | None, log_path: Path, **env_overrides: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDSENSE_", "PROMETHEUS_"))}
        if model_dir is not None:  # None: the shipped models, as a fresh install serves them
            env["CARDSENSE_MODEL_DIR"] = str(model_dir)
        env.update(
            CARDSENSE_BIND=f"127.0.0.1:{self.port}",
            CARDSENSE_DEVICE="cpu",
            CARDSENSE_WORKERS="2",
            CARDSENSE_THREADS="2",
            CARDSENSE_BATCH_SIZES="1,4,8",
            CARDSENSE_TIMEOUT="60",
            PYTHONPATH=str(REPO),
        )
        env.update(env_overrides)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "serving/gunicorn.conf.py", "serving.app:create_app()"],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def __enter__(self) -> "GunicornServer":
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: master stops its workers
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def gunicorn_server(tiny_model, tmp_path_factory):
    """A real gunicorn (2 workers x 2 threads) serving the tiny model on 127.0.0.1."""
    with GunicornServer(tiny_model, tmp_path_factory.mktemp("gunicorn") / "gunicorn.log") as server:
        yield server


# --------------------------------------------------------------------------------------------
# HTTP helpers for the real server (standard library only)
# --------------------------------------------------------------------------------------------


def encode_multipart(files: list[tuple[str, str, bytes, str]]) -> tuple[bytes, str]:
    """``[(field, filename, data, content_type)]`` -> (body, Content-Type header)."""
    boundary = "----cardsense-test-boundary-7f3a"
    buf = io.BytesIO()
    for field, filename, data, ctype in files:
        buf.write(f"--{boundary}\r\n".encode())
        buf.write(f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'.encode())
        buf.write(f"Content-Type: {ctype}\r\n\r\n".encode())
        buf.write(data)
        buf.write(b"\r\n")
    buf.write(f"--{boundary}--\r\n".encode())
    return buf.getvalue(), f"multipart/form-data; boundary={boundary}"


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 30):
    """Send a request; return ``(status, headers, body bytes)`` for any status."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
