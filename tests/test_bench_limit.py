"""The limit and layout parts of the benchmark (``python -m bench --only limit|layout``): they run and render.

Benchmarks are never timed in CI; this checks the commands and the tables on tiny sizes.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.report import render
from tests.conftest import REPO

MACHINE = {"cores": "2", "cpu": "Test CPU", "memory": "1 GiB", "python": "3.11", "paddle": "3.3.1 (CPU)",
           "host": "h", "load": "0.1"}


def test_quick_limit_benchmark_measures_every_stage(tiny_model, tmp_path):
    out, raw = tmp_path / "BENCHMARKS.md", tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "limit", "--model", str(tiny_model),
         "--out", str(out), "--json", str(raw)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(raw.read_text(encoding="utf-8"))["limit"]
    assert set(result["stages_ms"]) == {"inflate", "decode", "fill", "check", "measures", "scale"}
    assert all(v > 0 for v in result["stages_ms"].values())
    assert result["stages_ms"]["inflate"] < result["stages_ms"]["decode"]  # the inflate is part of the decode
    assert set(result["network_ms"]) == {"1", "4", "8", "16", "32"} and all(v > 0 for v in result["network_ms"].values())
    text = out.read_text(encoding="utf-8")
    assert "## 4. The limit" in text and "| card check (`check_outline`" in text and "| card measures (" in text


def test_limit_and_layout_sections_render():
    limit = {"cards": 300, "stages_ms": {"inflate": 0.2, "decode": 0.4, "fill": 0.4, "scale": 0.05},
             "network_ms": {"1": 1.6, "4": 0.7, "8": 0.55, "16": 0.5, "32": 0.55},
             "flops": {"architecture": "cardnet", "macs": 12_673_536}, "cpu_mhz": 2600.0}
    row = {"workers": 2, "threads": 8, "max_wait_ms": 5.0, "concurrency": 16, "req_s": 480.0, "p50_ms": 30.0,
           "p99_ms": 80.0, "cpu_ms_per_request": 2.5, "mean_batch": 4.7, "errors": 0, "loads": ["0.9", "1.1"]}
    text = render({"machine": MACHINE, "quick": False, "started": "2026-01-01 00:00", "minutes": 1.0,
                   "load_end": "0.2", "command": "python -m bench", "limit": limit, "layout": [row]})
    assert "## 4. The limit" in text and "## 5. Layouts" in text
    assert "25.3 MFLOP" in text  # 2 x 12.67 M multiply-adds
    assert "**1.35 ms**" in text  # path at batch 16: 0.4 + 0.4 + 0.05 + 0.5
    assert "**0.70 ms**" in text  # floor: inflate 0.2 + network 0.5
    assert "| 2 × 8 | 5 | 480 |" in text


def test_the_limit_path_includes_the_card_check_and_measures():
    limit = {"cards": 300, "stages_ms": {"inflate": 0.2, "decode": 0.4, "fill": 0.4, "check": 0.3, "measures": 0.2,
                                         "scale": 0.05},
             "network_ms": {"1": 1.6, "16": 0.5}, "flops": {}, "cpu_mhz": None}
    text = render({"machine": MACHINE, "quick": False, "started": "2026-01-01 00:00", "minutes": 1.0,
                   "load_end": "0.2", "command": "python -m bench", "limit": limit})
    assert "| card check (`check_outline` on the traced outline" in text and "| 0.300 |" in text
    assert "**1.85 ms**" in text  # 0.4 + 0.4 + 0.3 + 0.2 + 0.05 + 0.5
    assert "(decode + fill + check + measures + scale + network)" in text
