"""Processes killed half-way (SIGKILL) lose nothing and leave nothing half-written where it would be used.

- batch scoring killed, then rerun: no truncated CSV that looks finished; the rerun equals an uninterrupted run;
- an export killed half-way (and between the two renames of the folder swap): the model folder is the old
  complete model or absent, never half of one, and serving loads what is there;
- training killed mid-epoch, resumed from its last checkpoint: the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CARD_KINDS, card_csv, card_png, simulated_train_set

REPO = Path(__file__).resolve().parent.parent
FULL = os.environ.get("CARDSENSE_FULL", "") not in ("", "0")


def report(name: str, figures: dict) -> None:
    print(f"\nRELIABILITY {json.dumps({'test': name, **figures})}")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDSENSE_")}
    env.update(PYTHONPATH=str(REPO), **extra)
    return env


# ------------------------------------------------------------------------------------------ batch


def test_batch_scoring_killed_then_rerun(tmp_path, tiny_model):
    folder = tmp_path / "cards"
    folder.mkdir()
    n = 1200 if FULL else 400
    pngs = [card_png(k, s) for k in CARD_KINDS for s in range(4)]
    for i in range(n):
        (folder / f"{i:05d}.png").write_bytes(pngs[i % len(pngs)])
    (folder / "99999.csv").write_bytes(card_csv("dome"))
    out = tmp_path / "predictions.csv"
    cmd = [sys.executable, "-m", "serving.batch", str(folder), "--out", str(out), "--model", str(tiny_model),
           "--batch-size", "4", "--workers", "1", "--no-progress"]
    # A finished file from an earlier night is there: a killed run must leave it as it was.
    out.write_text("id,label\nold,A01\n")
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    partial = []
    while time.monotonic() < deadline and proc.poll() is None:
        partial = [p for p in tmp_path.glob(".predictions.csv.*.tmp") if p.stat().st_size > 2000]
        if partial:
            break
        time.sleep(0.02)
    assert partial and proc.poll() is None, "the scorer finished before it could be killed; give it more cards"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert out.read_text() == "id,label\nold,A01\n", "the killed run touched the finished file"
    rows_when_killed = partial[0].read_text().count("\n") - 1
    # Rerun: complete and identical to an uninterrupted run.
    assert subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True).returncode == 0
    rerun = out.read_text()
    out2 = tmp_path / "uninterrupted.csv"
    assert subprocess.run([*cmd[:5], str(out2), *cmd[6:]], cwd=REPO, env=_env(), capture_output=True).returncode == 0
    assert rerun == out2.read_text()
    assert rerun.count("\n") == n + 2  # header + every card
    leftovers = sorted(p.name for p in tmp_path.glob(".predictions.csv.*.tmp"))
    report("batch_kill", {"cards": n + 1, "rows_written_when_killed": rows_when_killed,
                          "final_rows": rerun.count("\n") - 1, "identical_to_uninterrupted": True,
                          "stale_temp_files": len(leftovers)})


# ------------------------------------------------------------------------------------------ export

EXPORT_CHILD = r"""
import os, signal, sys
sys.path.insert(0, {repo!r})
import numpy as np, paddle
import shared.meta, shared.atomic
from tests.conftest import export_tiny_model
from training.export import export_model

class GridNet(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.pool = paddle.nn.AdaptiveAvgPool2D((3, 4))
        self.head = paddle.nn.Linear(12, 12)
    def forward(self, x):
        return paddle.nn.functional.softmax(self.head(paddle.flatten(self.pool(x), 1)), axis=-1)

where = sys.argv[2]
if where == "after-weights":  # the weights are written, meta.json is not yet
    real = shared.meta.write_meta
    def write_meta(folder, meta):
        os.kill(os.getpid(), signal.SIGKILL)
    import training.export as ex
    ex.write_meta = write_meta
elif where == "between-renames":  # the old folder moved aside, the new one not yet in place
    real_replace = os.replace
    def replace(a, b):
        if os.fspath(b) == sys.argv[1]:  # the new folder about to take the target's name
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(a, b)
    shared.atomic.os.replace = replace
paddle.seed(1)
export_model(GridNet(), sys.argv[1], {{"name": "new", "version": "9.9.9"}}, softmax=False)
"""


@pytest.mark.parametrize("where", ["after-weights", "between-renames"])
@pytest.mark.parametrize("previous", [True, False], ids=["over-old-model", "fresh"])
def test_export_killed_half_way_never_leaves_half_a_model(tmp_path, tiny_model, where, previous):
    import shutil

    from serving.predictor import Predictor, StartupError

    target = tmp_path / "models" / "default"
    if previous:
        shutil.copytree(tiny_model, target)
    script = tmp_path / "child.py"
    script.write_text(EXPORT_CHILD.format(repo=str(REPO)))
    proc = subprocess.run([sys.executable, str(script), str(target), where], cwd=REPO, env=_env(),
                          capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    if target.exists():
        # Whatever is at the target is a complete model that serving loads: the old one.
        predictor = Predictor(target, device="cpu", batch_sizes=(1,))
        assert predictor.model_id["version"] == "0.0.1"
        assert sorted(p.name for p in target.iterdir()) == ["inference.json", "inference.pdiparams", "meta.json"]
        state = "old model intact"
    else:
        # Nothing there: serving refuses to start with a clear message (and a running service keeps its snapshot).
        with pytest.raises(StartupError, match="does not exist|missing"):
            Predictor(target, device="cpu", batch_sizes=(1,))
        state = "no model at the target"
        assert where == "between-renames" or not previous
    hidden = sorted(p.name for p in target.parent.iterdir() if p.name.startswith("."))
    report("export_kill", {"where": where, "previous_model": previous, "result": state, "hidden_leftovers": hidden})


# ------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def sim_train(tmp_path_factory) -> Path:
    return simulated_train_set(tmp_path_factory, 4, seed=5)


def test_training_killed_mid_epoch_resumes_to_identical_weights(sim_train, tmp_path):
    import paddle

    epochs = 4 if FULL else 3
    cache = tmp_path / "cache"
    runs = tmp_path / "runs"
    common = [sys.executable, str(REPO / "training" / "run.py"), "--data", str(sim_train), "--epochs", str(epochs),
              "--batch-size", "4", "--no-vdl", "--no-export", "--no-progress", "--patience", "0", "--seed", "3",
              "--runs-dir", str(runs), "--cache-dir", str(cache)]
    env = _env(CARDSENSE_CACHE=str(cache))
    env.pop("FLAGS_enable_pir_api", None)
    full = subprocess.run([*common, "--name", "full"], env=env, capture_output=True, text=True, timeout=900)
    assert full.returncode == 0, full.stderr[-3000:]
    # Killed in the middle of epoch 2: after the epoch-1 checkpoint, before the epoch-2 one.
    proc = subprocess.Popen([*common, "--name", "k"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = runs / "k" / "checkpoint" / "state.json"
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if json.loads(state.read_text())["epoch"] >= 1:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    epoch_seconds = json.loads((runs / "full" / "history.json").read_text())
    time.sleep(0.3)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    saved = json.loads(state.read_text())["epoch"]
    assert 1 <= saved < epochs
    resumed = subprocess.run([*common, "--name", "k", "--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = paddle.load(str(runs / "full" / "checkpoint" / "model.pdparams"))
    b = paddle.load(str(runs / "k" / "checkpoint" / "model.pdparams"))
    worst = max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a)
    ha = json.loads((runs / "full" / "history.json").read_text())
    hb = json.loads((runs / "k" / "history.json").read_text())
    report("training_kill", {"epochs": epochs, "killed_after_checkpoint_of_epoch": saved,
                             "max_weight_difference": worst, "history_epochs": [h["epoch"] for h in hb]})
    assert [h["epoch"] for h in hb] == list(range(1, epochs + 1))
    for key in a:
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=1e-5, atol=1e-6, err_msg=key)
    for x, y in zip(ha, hb):
        for k in ("holdout_acc", "holdout_loss", "train_loss"):
            if k in x:
                assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-6), (k, x, y)
    del epoch_seconds
