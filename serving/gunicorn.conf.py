"""gunicorn settings for CardSense, from ``CARDSENSE_*`` environment variables.

    gunicorn -c serving/gunicorn.conf.py "serving.app:create_app()"

No ``preload_app``: every worker imports the app and builds its own Paddle predictor after the
fork (a predictor or CUDA context made in the master breaks in the children). gthread workers:
each thread borrows its own predictor clone. Prometheus runs in multiprocess mode so ``/metrics``
adds up all workers.

Model reload without downtime: ``kill -HUP <master pid>``. The master copies the model files of
``CARDSENSE_MODEL_DIR`` (a folder or a symlink to one) into a private snapshot, checks the snapshot
in a child process (``python -m serving.reload``: real predictor, warm-up, one card), and only if it
passes do the new workers load it; otherwise the new workers load the snapshot that was serving,
the log says ``model reload refused: <reason>`` and ``GET /model`` shows it under
``service.reload``. Workers always load a snapshot, never the configured folder itself, so a folder
overwritten or half-written while the service runs never reaches a worker (also not a worker that
gunicorn replaces after a crash).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# Make "serving" and "shared" importable however gunicorn was started.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from serving.config import ServingConfig, default_workers  # noqa: E402

_cfg = ServingConfig.from_env()  # fail fast on a bad CARDSENSE_* value, in the master

bind = os.environ.get("CARDSENSE_BIND") or f"{os.environ.get('CARDSENSE_HOST', '0.0.0.0')}:{os.environ.get('CARDSENSE_PORT', '8000')}"
workers = int(os.environ.get("CARDSENSE_WORKERS") or default_workers())
worker_class = "gthread"
threads = _cfg.threads
# Covers interpreter start, Paddle import, predictor creation and warm-up of every batch shape,
# and the slowest allowed request (a 1,000-card batch).
timeout = int(os.environ.get("CARDSENSE_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5
max_requests = int(os.environ.get("CARDSENSE_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
preload_app = False
limit_request_line = 8190
limit_request_fields = 100
control_socket_disable = True
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = os.environ.get("CARDSENSE_ACCESS_LOG", "-") or None
errorlog = "-"
loglevel = os.environ.get("CARDSENSE_LOG_LEVEL", "info")
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": loglevel.upper(), "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["console"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr"},
        "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
    },
    "formatters": {
        "generic": {"format": "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"},
        "access": {"format": "%(message)s"},
    },
}

# Prometheus multiprocess mode: a fresh folder per master, set before any worker imports the client.
# This file is executed again on every SIGHUP: a folder this master made is recognised and kept
# (clearing it would reset the counters of the workers still running).
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _metrics_dir and _metrics_dir == os.environ.get("_CARDSENSE_OWN_METRICS_DIR"):
    _own_metrics_dir = True
elif not _metrics_dir:
    _metrics_dir = tempfile.mkdtemp(prefix="cardsense-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
    os.environ["_CARDSENSE_OWN_METRICS_DIR"] = _metrics_dir
    _own_metrics_dir = True
else:
    os.makedirs(_metrics_dir, exist_ok=True)
    for _name in os.listdir(_metrics_dir):  # stale files from a previous run would be added in
        if _name.endswith(".db"):
            os.unlink(os.path.join(_metrics_dir, _name))
    _own_metrics_dir = False


def on_starting(server):
    """Check the model folder's files in the master so a missing model stops at once, clearly.

    Only ``meta.json`` is read here (no Paddle, no cv2 in the master); workers verify the
    preprocessing and the network itself after the fork.
    """
    from shared.meta import ModelFolderError, load_meta

    from serving.reload import ReloadError, snapshot_model

    try:
        load_meta(_cfg.model_dir)
        snapshot = snapshot_model(_cfg.model_dir)
    except (ModelFolderError, ReloadError) as exc:
        server.log.error("cannot serve %s: %s", _cfg.model_dir, exc)
        raise SystemExit(f"CardSense: cannot serve {_cfg.model_dir}: {exc}") from None
    server.cardsense_snapshots = [snapshot]
    server.cardsense_reload = {"reloads": 0, "ok": None, "reason": "", "source": str(_cfg.model_dir)}


def _check_snapshot(snapshot: str) -> str:
    """Run ``python -m serving.reload`` on a snapshot in a child process; "" if servable, else why not."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "serving.reload", snapshot], cwd=_ROOT, capture_output=True, text=True,
            timeout=max(timeout, 30), env={**os.environ, "PYTHONPATH": os.pathsep.join(
                p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p)},
        )
    except subprocess.TimeoutExpired:
        return f"checking the model took longer than {max(timeout, 30)} s"
    if proc.returncode == 0:
        return ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"model check exited with status {proc.returncode}"


def on_reload(server):
    """SIGHUP: snapshot and check the configured model; switch to it only if it passes."""
    from serving.reload import ReloadError, snapshot_model

    snapshots = getattr(server, "cardsense_snapshots", [])
    status = getattr(server, "cardsense_reload", {"reloads": 0})
    status = {"reloads": status.get("reloads", 0) + 1, "source": str(_cfg.model_dir),
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        candidate = str(snapshot_model(_cfg.model_dir))
    except ReloadError as exc:
        candidate, reason = None, str(exc)
    else:
        reason = _check_snapshot(candidate)
    if reason:
        if candidate:
            shutil.rmtree(candidate, ignore_errors=True)
        status.update(ok=False, reason=reason)
        server.log.error("model reload refused: %s; still serving the previous model", reason)
    else:
        # Keep the previous snapshot until the next reload: old workers may still be finishing.
        for old in snapshots[:-1]:
            shutil.rmtree(old, ignore_errors=True)
        server.cardsense_snapshots = [*snapshots[-1:], candidate]
        status.update(ok=True, reason="")
        server.log.info("model reload: checked %s, new workers load it", _cfg.model_dir)
    server.cardsense_reload = status
    # gunicorn stops the old workers as soon as it has forked the new ones, which then take seconds
    # to import Paddle and warm up: the service would answer nobody meanwhile. Keep the old workers
    # serving instead (raise the worker count for now); each new worker, once ready, stops one old
    # worker gracefully, and the count comes back down as the master reaps them (child_exit).
    server.cardsense_retire_pids = list(server.WORKERS)
    server.cardsense_retiring = set(server.WORKERS)
    server.num_workers = len(server.WORKERS) + server.cfg.workers


def pre_fork(server, worker):
    """Give each worker forked by a reload one old worker to stop once it is ready itself."""
    pending = getattr(server, "cardsense_retire_pids", [])
    worker.cardsense_retire_pid = pending.pop(0) if pending else None


def post_worker_init(worker):
    """Give the worker gunicorn's signal handlers back once the app (and Paddle) is loaded.

    Importing Paddle installs C-level handlers for SIGTERM and others that print a C++ trace and kill
    the process at once: a worker stopped by a reload, ``max_requests`` or shutdown would drop the
    requests it is handling. gunicorn's own handlers stop accepting and finish them first.
    """
    worker.init_signals()
    old = getattr(worker, "cardsense_retire_pid", None)
    if old:
        try:
            os.kill(old, signal.SIGTERM)
        except ProcessLookupError:  # it has gone already
            pass


def post_fork(server, worker):
    """In the new worker: load the checked snapshot, and know the last reload's outcome (``GET /model``)."""
    snapshots = getattr(server, "cardsense_snapshots", None)
    if snapshots:
        # The worker's CARDSENSE_MODEL_DIR becomes the snapshot; pin the extra (series/dual) folders the
        # master resolved, or the worker would read "a model folder was named" as "no extras".
        os.environ.setdefault(
            "CARDSENSE_EXTRA_MODEL_DIRS", ",".join(str(d) for d in _cfg.extra_model_dirs) or "none"
        )
        os.environ["CARDSENSE_MODEL_DIR"] = str(snapshots[-1])
    os.environ["CARDSENSE_MODEL_SOURCE"] = str(_cfg.model_dir)
    os.environ["CARDSENSE_RELOAD_STATUS"] = json.dumps(getattr(server, "cardsense_reload", {}), ensure_ascii=False)


def child_exit(server, worker):
    """Merge a dead worker's live gauges away (counters and histograms are kept); after a reload,
    bring the worker count back down as the old workers leave."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
    retiring = getattr(server, "cardsense_retiring", set())
    if worker.pid in retiring:  # an old worker after a reload: not to be replaced
        retiring.discard(worker.pid)
        server.num_workers = max(server.cfg.workers, server.num_workers - 1)


def on_exit(server):
    """Remove the metrics folder this master created and the model snapshots."""
    if _own_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
    for snapshot in getattr(server, "cardsense_snapshots", []):
        shutil.rmtree(snapshot, ignore_errors=True)


def when_ready(server):
    server.log.info(
        "CardSense master ready on %s: %d worker(s) x %d thread(s); model %s; workers load the model after fork",
        bind, workers, threads, _cfg.model_dir,
    )
