"""Benchmark 2: ``POST /classify`` on a real gunicorn on loopback, against a minimal Flask app.

Load comes from ``wrk`` (Debian package ``wrk``) when it is installed -- a C client that leaves the
cores to the server -- else from ``serving.loadtest`` (Python threads, which compete with the server
for the same cores and so understate the server). Server time is the ``elapsed_ms`` the service
reports, read by a sequential client at concurrency 1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import REPO, free_port, load, median, python
from bench.data import base_cards


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout} s")


class Server:
    """A server subprocess on 127.0.0.1 (gunicorn with the service, or the baseline Flask app)."""

    def __init__(self, kind: str, model: str, workers: int | None = None, threads: int | None = None):
        """``workers``/``threads`` None: the service's shipped layout (``serving/config.py`` defaults)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        keep = ("CARDSENSE_CACHE", "CARDSENSE_MAX_WAIT_MS")  # the data cache; a layout sweep's setting
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARDSENSE_") or k in keep}
        env["PYTHONPATH"] = str(REPO)
        self.log = tempfile.TemporaryFile("w+")
        self.workers = workers or 1
        if kind == "service":
            env.update({"CARDSENSE_MODEL_DIR": model, "CARDSENSE_BIND": f"127.0.0.1:{self.port}",
                        "CARDSENSE_ACCESS_LOG": "", "CARDSENSE_LOG_LEVEL": "warning"})
            if workers:
                env["CARDSENSE_WORKERS"] = str(workers)
            if threads:
                env["CARDSENSE_THREADS"] = str(threads)
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            cmd = [python(), "-m", "gunicorn", "-c", "serving/gunicorn.conf.py", "serving.app:create_app()"]
            ready = "/readyz"
        else:
            cmd = [python(), "-m", "bench.baselines", "serve", "--model", model, "--port", str(self.port)]
            ready = "/healthz"
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        try:
            _wait_ready(self.url + ready, self.proc)
            if kind == "service":  # every worker must be up before load starts
                time.sleep(1.0)
                for _ in range(4 * self.workers + 4):
                    _wait_ready(self.url + ready, self.proc)
        except Exception:
            self.stop()
            raise

    def worker_rss_mib(self) -> list[float]:
        import psutil  # noqa: PLC0415

        kids = psutil.Process(self.proc.pid).children(recursive=True)
        return [round(k.memory_info().rss / 2**20, 1) for k in kids] or \
            [round(psutil.Process(self.proc.pid).memory_info().rss / 2**20, 1)]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server's processes so far (the workers, or the one process)."""
        import psutil  # noqa: PLC0415

        total = 0.0
        for proc in [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def batch_stats(self) -> tuple[float, float]:
        """``(cards, calls)`` of the service's dynamic batcher so far, from ``/metrics`` (0, 0 if none)."""
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
                text = r.read().decode()
        except OSError:
            return 0.0, 0.0
        cards = calls = 0.0
        for line in text.splitlines():
            if line.startswith("cardsense_batch_size_sum{"):
                cards += float(line.split()[-1])
            elif line.startswith("cardsense_batch_size_count{"):
                calls += float(line.split()[-1])
        return cards, calls

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def server_time_ms(url: str, cards: list[bytes], n: int) -> dict:
    """Sequential requests: the service's own ``elapsed_ms`` and the client's round trip, medians."""
    import http.client  # noqa: PLC0415

    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    server, client = [], []
    for i in range(n):
        started = time.perf_counter()
        conn.request("POST", "/classify", body=cards[i % len(cards)], headers={"Content-Type": "image/png"})
        resp = conn.getresponse()
        body = resp.read()
        client.append((time.perf_counter() - started) * 1000)
        if resp.status != 200:
            raise RuntimeError(f"/classify answered {resp.status}: {body[:200]!r}")
        if resp.getheader("Connection", "").lower() == "close":
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
        server.append(json.loads(body)["elapsed_ms"])
    conn.close()
    server.sort()
    return {"server_p50_ms": median(server), "server_p95_ms": server[int(0.95 * (len(server) - 1))],
            "client_p50_ms": median(client)}


def load_wrk(url: str, card_paths: list[Path], concurrency: int, seconds: float) -> dict:
    threads = max(1, min(2, concurrency))
    env = {**os.environ, "CARDSENSE_BENCH_CARDS": ":".join(str(p) for p in card_paths)}
    proc = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "10s",
         "-s", str(REPO / "bench" / "wrk_classify.lua"), url + "/classify"],
        env=env, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {proc.stdout[-1000:]} {proc.stderr[-1000:]}")
    raw = json.loads(line[len("WRK_JSON "):])
    errors = sum(raw["errors"].values())
    return {"req_s": raw["requests"] / (raw["duration_us"] / 1e6), "p50_ms": raw["p50_us"] / 1000,
            "p95_ms": raw["p95_us"] / 1000, "p99_ms": raw["p99_us"] / 1000, "requests": raw["requests"],
            "errors": errors}


def load_python(url: str, card_paths: list[Path], concurrency: int, seconds: float) -> dict:
    from serving.loadtest import run  # noqa: PLC0415

    cards = [(p.read_bytes(), "image/png") for p in card_paths]
    stats = run(url, cards, concurrency, seconds)
    errors = sum(v for k, v in stats["statuses"].items() if k != "200")
    return {"req_s": stats["requests_per_s"], "p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"],
            "p99_ms": stats["p99_ms"], "requests": stats["requests"], "errors": errors}


def measured_load(server: Server, loader, card_paths: list[Path], concurrency: int, seconds: float) -> dict:
    """One load run plus the server's CPU per request and, for the service, its mean batch (cards per call)."""
    cpu0, (cards0, calls0) = server.cpu_seconds(), server.batch_stats()
    r = loader(server.url, card_paths, concurrency, seconds)
    cpu1, (cards1, calls1) = server.cpu_seconds(), server.batch_stats()
    r["cpu_ms_per_request"] = 1000 * (cpu1 - cpu0) / max(r["requests"], 1)
    r["mean_batch"] = (cards1 - cards0) / (calls1 - calls0) if calls1 > calls0 else float("nan")
    return r


def bench_serve(model: str, concurrencies: list[int], seconds: float, repeats: int, workers: int | None,
                threads: int | None, server_requests: int, per_class: int = 100, log=print) -> dict:
    """Both servers up at once, runs interleaved (baseline, service, baseline, ...); medians over ``repeats``.

    ``workers``/``threads`` None: the service's shipped layout.
    """
    from serving.config import ServingConfig, default_workers  # noqa: PLC0415

    workers_used = workers or default_workers()
    threads_used = threads or ServingConfig.threads
    card_paths = base_cards(per_class)[::12][:100] or base_cards(per_class)
    cards = [p.read_bytes() for p in card_paths]
    generator = "wrk" if shutil.which("wrk") else "python (serving.loadtest)"
    loader = load_wrk if shutil.which("wrk") else load_python
    out: dict = {"generator": generator, "workers": workers_used, "threads": threads_used, "seconds": seconds,
                 "service": {}, "baseline": {}}
    servers: dict[str, Server] = {}
    try:
        for kind in ("baseline", "service"):
            servers[kind] = Server(kind, model, workers_used if kind == "service" else None,
                                   threads_used if kind == "service" else None)
        for server in servers.values():
            loader(server.url, card_paths, max(concurrencies), 2.0)  # warm every worker and thread
        c1: dict[str, list[dict]] = {kind: [] for kind in servers}
        for _ in range(max(repeats, 1)):  # interleaved too: the load of the machine drifts
            for kind, server in servers.items():
                c1[kind].append(server_time_ms(server.url, cards, max(1, server_requests // max(repeats, 1))))
        for kind, runs in c1.items():
            out[kind]["c1_server"] = {k: median([r[k] for r in runs]) for k in runs[0]}
        for c in concurrencies:
            runs: dict[str, list[dict]] = {kind: [] for kind in servers}
            for _ in range(repeats):
                for kind, server in servers.items():
                    runs[kind].append(measured_load(server, loader, card_paths, c, seconds))
                    r = runs[kind][-1]
                    log(f"  {kind} c={c}: {r['req_s']:.0f} req/s p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms "
                        f"errors {r['errors']}, {r['cpu_ms_per_request']:.2f} CPU ms/request, mean batch "
                        f"{r['mean_batch']:.2f} (load {load()})")
            for kind in servers:
                agg = {k: median([r[k] for r in runs[kind]])
                       for k in ("req_s", "p50_ms", "p95_ms", "p99_ms", "cpu_ms_per_request", "mean_batch")}
                agg["load"] = load()
                agg["errors"] = sum(r["errors"] for r in runs[kind])
                agg["all_req_s"] = [round(r["req_s"], 1) for r in runs[kind]]
                out[kind][str(c)] = agg
        for kind, server in servers.items():
            out[kind]["rss_mib"] = server.worker_rss_mib()
    finally:
        for server in servers.values():
            server.stop()
    return out


LAYOUTS = ((2, 8, 5.0), (2, 8, 0.0), (2, 4, 5.0), (3, 4, 5.0), (2, 16, 5.0), (1, 16, 5.0))


def bench_layouts(model: str, concurrency: int = 16, seconds: float = 10.0, repeats: int = 2,
                  layouts=LAYOUTS, per_class: int = 100, log=print) -> list[dict]:
    """``/classify`` at one concurrency for several ``(workers, threads, max wait ms)``: how the default was chosen.

    One server at a time (they would compete for the cores), the layouts interleaved over ``repeats``; per
    layout the median req/s, p99, server CPU per request and cards per call.
    """
    card_paths = base_cards(per_class)[::12][:100] or base_cards(per_class)
    loader = load_wrk if shutil.which("wrk") else load_python
    runs: dict[tuple, list[dict]] = {layout: [] for layout in layouts}
    for _ in range(repeats):
        for workers, threads, wait in layouts:
            os.environ["CARDSENSE_MAX_WAIT_MS"] = str(wait)
            try:
                server = Server("service", model, workers, threads)
            finally:
                os.environ.pop("CARDSENSE_MAX_WAIT_MS", None)
            try:
                loader(server.url, card_paths, concurrency, 2.0)  # warm every worker and thread
                r = measured_load(server, loader, card_paths, concurrency, seconds)
            finally:
                server.stop()
            r["load"] = load()
            runs[(workers, threads, wait)].append(r)
            log(f"  layout {workers}x{threads} wait {wait:g} ms c={concurrency}: {r['req_s']:.0f} req/s p99 "
                f"{r['p99_ms']:.1f} ms errors {r['errors']}, {r['cpu_ms_per_request']:.2f} CPU ms/request, "
                f"{r['mean_batch']:.2f} cards per call (load {r['load']})")
    return [{"workers": w, "threads": t, "max_wait_ms": wait, "concurrency": concurrency,
             **{k: median([r[k] for r in rs]) for k in ("req_s", "p50_ms", "p99_ms", "cpu_ms_per_request", "mean_batch")},
             "errors": sum(r["errors"] for r in rs), "loads": [r["load"] for r in rs]}
            for (w, t, wait), rs in runs.items()]
