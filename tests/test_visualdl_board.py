"""The VisualDL board of a training run, as a person sees it: VisualDL's own server and a real browser.

A tiny run is trained with the README's command (``python training/run.py --data …``), then
``visualdl --logdir log --host 127.0.0.1 --port … --disable-telemetry`` serves the folder. The test asks the
server what its tabs show (``/app/api/component_tabs`` and the data behind the Scalars, Samples, PR-curve,
ROC-curve, Histogram, Hyper-parameter and Graph tabs) and opens each tab in Chromium. VisualDL 2.5.3 shows
one records file per run folder (the newest), so reading each file with ``LogReader`` is not enough: a second,
nearly empty file hides the run from the board although every file reads back.

The screenshots in docs/ come from a real run through the same code: ``python -m tests.browser visualdl URL docs/``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import cv2
import numpy as np
import pytest

from shared.labels import CODES
from tests.browser import BOARD_TABS, board_screenshots, browser_or_skip, start_browser
from tests.conftest import REPO, free_port, http

RUN = "board"
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder laid out like a user's: the README's commands run in it."""
    from tests.conftest import simulated_train_set

    root = tmp_path_factory.mktemp("board")
    train = simulated_train_set(tmp_path_factory, per_class=6, seed=5)
    env = dict(os.environ, PYTHONPATH=str(REPO), CARDSENSE_CACHE=str(root / "cache"))
    env.pop("FLAGS_enable_pir_api", None)
    cmd = [sys.executable, str(REPO / "training" / "run.py"), "--data", str(train), "--epochs", "2", "--name", RUN,
           "--logdir", "log", "--runs-dir", "runs", "--out", str(root / "models" / RUN), "--no-progress"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def board(workdir):
    """``visualdl --logdir log`` (the README's command) on loopback; yields its base URL."""
    port = free_port()
    log = open(workdir / "visualdl.log", "wb")
    proc = subprocess.Popen(
        ["visualdl", "--logdir", "log", "--host", "127.0.0.1", "--port", str(port), "--disable-telemetry"],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (workdir / "visualdl.log").read_text(errors="replace")[-3000:]
            try:
                if http("GET", url + "/app/api/component_tabs", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "VisualDL did not start"
            time.sleep(0.3)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def api(board: str, path: str, **params):
    """``GET /app/api/<path>?params``: the JSON ``data`` (or the raw bytes of a non-JSON answer)."""
    status, headers, body = http("GET", f"{board}/app/api/{path}?{urllib.parse.urlencode(params)}", timeout=30)
    assert status == 200, (path, status, body[:300])
    if headers.get("Content-Type", "").startswith("application/json"):
        answer = json.loads(body)
        assert answer["status"] == 0, (path, answer)
        return answer["data"]
    return body


def test_the_run_folder_holds_one_records_file_and_its_graph(workdir):
    from training.vdl import records_files

    run_dir = workdir / "log" / RUN
    assert len(records_files(run_dir)) == 1, sorted(p.name for p in run_dir.iterdir())
    assert len(list(run_dir.glob("vdlgraph.*.log"))) == 1


def test_every_tab_has_the_runs_data(board):
    tabs = set(api(board, "component_tabs"))
    assert {"scalar", "image", "pr_curve", "roc_curve", "histogram", "hyper_parameters", "dynamic_graph"} <= tabs

    runs = api(board, "runs")
    run = next(r for r in runs if Path(r).name == RUN)

    scalar_tags = api(board, "scalar/tags")
    tags = dict(zip(scalar_tags["runs"], scalar_tags["tags"]))[run]
    assert {"train/loss", "train/acc", "holdout/loss", "holdout/acc", "train/lr"} <= set(tags)
    loss = api(board, "scalar/list", run=run, tag="train/loss")
    assert [step for _, step, _ in loss] == [1, 2] and all(np.isfinite(v) for _, _, v in loss)

    steps = api(board, "image/list", run=run, tag="cards_input/A01")
    assert steps
    png = api(board, "image/image", run=run, tag="cards_input/A01", index=0)
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.shape[:2] == (190, 400)
    assert api(board, "image/list", run=run, tag="holdout/confusion_matrix")

    for kind, prefix in (("pr-curve", "holdout_pr"), ("roc-curve", "holdout_roc")):
        curve_tags = api(board, f"{kind}/tags")
        assert {f"{prefix}/{c}" for c in CODES} <= set(dict(zip(curve_tags["runs"], curve_tags["tags"]))[run])
        curve = api(board, f"{kind}/list", run=run, tag=f"{prefix}/A01")
        assert len(curve) == 2  # one curve per epoch

    histogram_tags = api(board, "histogram/tags")
    weight = next(t for t in dict(zip(histogram_tags["runs"], histogram_tags["tags"]))[run] if t.endswith("weight"))
    assert len(api(board, "histogram/list", run=run, tag=weight)) == 2

    hparams = {h["name"]: h for h in api(board, "hparams/list")}[run]
    assert hparams["hparams"]["model"] == "cardnet"
    assert 0 <= hparams["metrics"]["final/holdout_acc"] <= 1

    graph_run = next(r for r in api(board, "graph_runs") if Path(r).name == RUN)  # the graph tab names it by real path
    graph = api(board, "graph/graph", run=graph_run, expand_all="false", refresh="true")
    assert "ImageLogits" in json.dumps(graph)  # the exported network: its logits


def test_each_tab_shows_the_run_in_a_browser(board, tmp_path):
    """Each tab in Chromium: the run's charts are there, the "No visualized data" page is not."""
    browser_or_skip()
    driver = start_browser(1400, 1000)
    try:
        shots = board_screenshots(driver, board, tmp_path)
    finally:
        driver.quit()
    assert [p.name for p in shots] == [tab[-1] for tab in BOARD_TABS]


def test_a_resumed_writer_continues_the_runs_records_file(tmp_path):
    """``open_writer(append=True)`` (a resumed run) keeps one records file: both halves stay on the board."""
    from visualdl import LogReader

    from training.vdl import log_scalars, open_writer, records_files

    first = open_writer(tmp_path, "r")
    log_scalars(first, 1, {"train/loss": 2.0})
    first.close()
    time.sleep(1.1)  # a new file would get a newer time stamp in its name
    second = open_writer(tmp_path, "r", append=True)
    log_scalars(second, 2, {"train/loss": 1.0})
    second.close()
    files = records_files(tmp_path / "r")
    assert len(files) == 1
    values = LogReader(file_path=str(files[0])).get_data("scalar", "train/loss")
    assert [(v.id, v.value) for v in values] == [(1, 2.0), (2, 1.0)]
