"""Helpers shared by the benchmarks: machine description, timed subprocesses with peak memory, medians."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def machine() -> dict[str, str]:
    """Cores, CPU model, memory, load and software versions, for the report header."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil  # noqa: PLC0415

        mem = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
    except ImportError:
        mem = "?"
    try:
        import paddle  # noqa: PLC0415

        pd = paddle.__version__ + (" (CUDA)" if paddle.is_compiled_with_cuda() else " (CPU)")
    except ImportError:
        pd = "not installed"
    return {"cores": str(os.cpu_count()), "cpu": model, "memory": mem, "python": platform.python_version(),
            "paddle": pd, "host": socket.gethostname(), "load": load()}


def load() -> str:
    """The 1-minute load average (other people's jobs on a shared machine show up here)."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


class PeakMemory:
    """Samples the summed RSS of a process and all its descendants; ``peak`` in MiB."""

    def __init__(self, pid: int, interval: float = 0.05):
        import psutil  # noqa: PLC0415

        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil  # noqa: PLC0415

        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total / 2**20)
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


@dataclass
class Run:
    """A finished subprocess: wall time, peak memory of its process tree, output."""

    wall: float
    peak_mib: float
    cpu_s: float  # user + system seconds of the process and the children it waited for (its workers)
    stdout: str
    stderr: str
    returncode: int
    extra: dict = field(default_factory=dict)


def run_timed(cmd: list[str], env: dict | None = None, timeout: float = 3600) -> Run:
    """Run ``cmd`` from the repository root, timing it and sampling its memory."""
    import resource  # noqa: PLC0415

    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mem = PeakMemory(proc.pid)
    out, err = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - started
    peak = mem.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return Run(wall, peak, cpu, out, err, proc.returncode)


def python() -> str:
    return sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
