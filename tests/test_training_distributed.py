"""Data-parallel training: ``python -m paddle.distributed.launch --nproc_per_node 2 training/run.py`` on CPU (gloo)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import simulated_train_set

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_sim(tmp_path_factory) -> Path:
    return simulated_train_set(tmp_path_factory, 4, seed=5)


def test_two_process_data_parallel_on_cpu(tiny_sim, tmp_path):
    # `--procs 2` relaunches run.py under `python -m paddle.distributed.launch --nproc_per_node 2`
    # (the command multi-GPU / multi-node users run directly) with each batch of 16 split 8 + 8.
    env = dict(os.environ, CARDSENSE_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(REPO / "training" / "run.py"), "--procs", "2", "--data", str(tiny_sim), "--epochs", "2",
           "--batch-size", "16", "--name", "dp", "--device", "cpu", "--logdir", str(tmp_path / "log"),
           "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "models" / "dp"), "--no-progress", "--no-graph"]
    proc = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=900)
    (launch_logs,) = (tmp_path / "runs" / "launch").iterdir()
    logs = {p.name: p.read_text(errors="replace") for p in launch_logs.glob("workerlog.*")}
    assert proc.returncode == 0, proc.stdout[-2000:] + "\n".join(v[-2000:] for v in logs.values())
    assert set(logs) == {"workerlog.0", "workerlog.1"}
    digests = {name: re.findall(r"rank (\d) of 2: parameters sha1 ([0-9a-f]{40})", text) for name, text in logs.items()}
    assert digests["workerlog.0"][0][0] == "0" and digests["workerlog.1"][0][0] == "1"
    assert digests["workerlog.0"][0][1] == digests["workerlog.1"][0][1], "ranks ended with different weights"
    # only rank 0 logs, checkpoints and exports
    assert "holdout accuracy" in logs["workerlog.0"] and "holdout accuracy" not in logs["workerlog.1"]
    assert [p.name for p in (tmp_path / "log").iterdir()] == ["dp"]
    assert (tmp_path / "runs" / "dp" / "checkpoint" / "state.json").is_file()
    assert (tmp_path / "models" / "dp" / "inference.json").is_file()
    import json

    config = json.loads((tmp_path / "runs" / "dp" / "config.json").read_text())
    assert config["world_size"] == 2
    assert config["recipe"]["batch_size"] == 8  # per process: the batch of 16 split over 2


def test_procs_relaunch_command_splits_the_batch():
    from training.run import launch_command, parse_args

    argv = ["--procs", "2", "--epochs", "3", "--batch-size", "64"]
    cmd = launch_command(parse_args(argv), argv)
    assert cmd[1:5] == ["-m", "paddle.distributed.launch", "--nproc_per_node", "2"]
    assert cmd[cmd.index("--log_dir") + 2].endswith("run.py")
    child = cmd[cmd.index("--log_dir") + 3:]
    assert "--procs" not in child and child[:2] == ["--epochs", "3"]
    assert child[-2:] == ["--batch-size", "32"]  # argparse: the last --batch-size wins
    argv = ["compare-models", "cnn01", "cardnet", "--procs=4", "--preset", "seed"]  # seed recipe: batch 128
    assert launch_command(parse_args(argv), argv)[-2:] == ["--batch-size", "32"]
    assert launch_command(parse_args(["--epochs", "1"]), ["--epochs", "1"]) is None
    with pytest.raises(SystemExit, match="must divide the batch size 64"):
        launch_command(parse_args(["--procs", "3"]), ["--procs", "3"])
    for argv in (["eval", "--data", "x"], ["field-set"]):
        assert launch_command(parse_args(argv), argv) is None
