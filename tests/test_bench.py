"""Smoke test of the benchmark suite (``python -m bench --quick``): it runs end to end and writes the table.

Benchmarks are never timed in CI; this only checks that the one command works on tiny sizes.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_quick_batch_benchmark_writes_the_table(tiny_model, tmp_path):
    out, raw = tmp_path / "BENCHMARKS.md", tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "batch", "--model", str(tiny_model),
         "--out", str(out), "--json", str(raw)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert "## 1. Batch scoring" in text and "**ratio**" in text and "cores" in text
    result = json.loads(raw.read_text(encoding="utf-8"))["batch"]
    # The scorer and the notebook-style loop run the same fill and network: same labels.
    assert result["label_agreement"] >= 0.95
    assert result["cli"]["end_to_end_cards_s"] > 0 and result["notebook"]["end_to_end_cards_s"] > 0
    assert result["cli"]["peak_mib"] > 0


def test_report_renders_every_part():
    from bench.report import render

    machine = {"cores": "2", "cpu": "Test CPU", "memory": "1 GiB", "python": "3.11", "paddle": "3.3.1 (CPU)",
               "host": "h", "load": "0.1"}
    side = {"repeats": 3, "wall_s": 10.0, "startup_s": 2.0, "end_to_end_cards_s": 500.0, "steady_cards_s": 625.0,
            "peak_mib": 600.0, "all_end_to_end": [500.0]}
    nb = {**side, "end_to_end_cards_s": 25.0, "steady_cards_s": 30.0}
    load = {"req_s": 300.0, "p50_ms": 3.0, "p95_ms": 5.0, "p99_ms": 9.0, "errors": 0, "all_req_s": [300.0]}
    c1 = {"server_p50_ms": 3.2, "server_p95_ms": 4.0, "client_p50_ms": 4.1}
    results = {
        "machine": machine, "quick": False, "started": "2026-01-01 00:00", "minutes": 1.0, "load_end": "0.2",
        "command": "python -m bench",
        "batch": {"cards": 5000, "cli": side, "notebook": nb, "label_agreement": 1.0,
                  "scaling": [{"cards": 1000, **side}, {"cards": 5000, **side}]},
        "serve": {"generator": "wrk", "workers": 2, "threads": 1, "seconds": 10.0,
                  "service": {"1": load, "32": load, "c1_server": c1, "rss_mib": [300.0, 300.0]},
                  "baseline": {"1": {**load, "req_s": 30.0}, "32": {**load, "req_s": 30.0}, "c1_server": c1,
                               "rss_mib": [350.0]}},
        "train": [{"recipe": "default recipe (cardnet)", "cli_samples_s": 300.0, "notebook_samples_s": 20.0}],
    }
    text = render(results)
    assert "2 cores, Test CPU" in text
    assert "**20.0×**" in text  # batch ratio 500 / 25
    assert "**10.0×**" in text  # /classify ratio 300 / 30
    assert "**15.0×**" in text  # training ratio 300 / 20
