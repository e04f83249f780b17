"""gunicorn settings for CardSense, from ``CARDSENSE_*`` environment variables.

    gunicorn -c serving/gunicorn.conf.py "serving.app:create_app()"

No ``preload_app``: every worker imports the app and builds its own Paddle predictor after the
fork (a predictor or CUDA context made in the master breaks in the children). gthread workers:
each thread borrows its own predictor clone. Prometheus runs in multiprocess mode so ``/metrics``
adds up all workers.

Model reload without downtime: ``kill -HUP <master pid>``. The master copies the model files of every
configured model folder -- ``CARDSENSE_MODEL_DIR`` (a folder or a symlink to one) and the series/dual
folders (``CARDSENSE_EXTRA_MODEL_DIRS`` or the shipped ``models/series`` and ``models/dual``) -- into
private snapshots, checks the whole set in a child process (``python -m serving.reload``: real
predictors, warm-up, one card per model, the set servable together), and only if it passes do the
new workers load it; otherwise the new workers load the set that was serving, the log says ``model
reload refused: <reason>`` (naming the folder) and ``GET /model`` shows it under ``service.reload``.
Workers always load snapshots, never the configured folders themselves, so a folder overwritten or
half-written while the service runs never reaches a worker (also not a worker that gunicorn
replaces after a crash).
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
        # CARDSENSE_ACCESS_LOG="" turns the access log off: gunicorn logs every request whenever a
        # logconfig_dict is set, so the logger itself is silenced (it cost ~2.5 % of a worker's CPU at c=16).
        "gunicorn.access": {"level": "INFO" if accesslog else "CRITICAL", "handlers": ["access"], "propagate": False},
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


def _model_folders(server=None) -> list[str]:
    """The model folders to serve: the image model's, then the extra (series/dual) ones.

    On a reload: the folders being served, plus any the configuration names now and did not before
    (a shipped ``models/dual`` that has appeared). A served folder that has gone stays in the list, so
    the reload is refused with the reason rather than silently dropping that model.
    """
    configured = [str(d) for d in _cfg.model_dirs]
    served = list(getattr(server, "cardsense_folders", None) or [])
    return served + [f for f in configured if f not in served] if served else configured


def on_starting(server):
    """Check the model folders' files in the master so a missing model stops at once, clearly.

    Only ``meta.json`` is read here (no Paddle, no cv2 in the master); workers verify the
    preprocessing and the networks themselves after the fork.
    """
    from shared.meta import ModelFolderError, load_meta

    from serving.reload import ReloadError, snapshot_models

    folders = _model_folders()
    for folder in folders:
        try:
            load_meta(folder)
        except ModelFolderError as exc:
            server.log.error("cannot serve %s: %s", folder, exc)
            raise SystemExit(f"CardSense: cannot serve {folder}: {exc}") from None
    try:
        snapshots = [str(s) for s in snapshot_models(folders)]
    except ReloadError as exc:
        server.log.error("cannot serve the models: %s", exc)
        raise SystemExit(f"CardSense: cannot serve the models: {exc}") from None
    server.cardsense_folders = folders
    server.cardsense_snapshots = [snapshots]  # generations; the last one is what new workers load
    server.cardsense_reload = {"reloads": 0, "ok": None, "reason": "", "source": folders[0], "sources": folders}


def _check_snapshots(snapshots: list[str], folders: list[str]) -> tuple[str, list[dict]]:
    """Run ``python -m serving.reload`` on a snapshot set in a child process.

    Returns:
        ``("", [model info, ...])`` if the set is servable, else ``(why not, [])`` -- with the
        configured folder named in the reason, not its snapshot.
    """
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "serving.reload", *snapshots], cwd=_ROOT, capture_output=True, text=True,
            timeout=max(timeout, 30), env={**os.environ, "PYTHONPATH": os.pathsep.join(
                p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p)},
        )
    except subprocess.TimeoutExpired:
        return f"checking the models took longer than {max(timeout, 30)} s", []
    if proc.returncode == 0:
        infos = []
        for line, folder in zip(proc.stdout.splitlines()[-len(snapshots):], folders):
            try:
                info = json.loads(line)
            except ValueError:
                continue
            infos.append({k: info.get(k) for k in ("kind", "name", "version")} | {"source": folder})
        return "", infos
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    reason = lines[-1] if lines else f"model check exited with status {proc.returncode}"
    for snapshot, folder in zip(snapshots, folders):
        reason = reason.replace(snapshot, folder)
    return reason, []


def on_reload(server):
    """SIGHUP: snapshot and check all configured model folders; switch to them only if the set passes."""
    from serving.reload import ReloadError, snapshot_models

    generations = getattr(server, "cardsense_snapshots", [])
    folders = _model_folders(server)
    status = getattr(server, "cardsense_reload", {"reloads": 0})
    status = {"reloads": status.get("reloads", 0) + 1, "source": folders[0], "sources": folders,
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        candidate = [str(s) for s in snapshot_models(folders)]
    except ReloadError as exc:
        candidate, reason, models = [], str(exc), []
    else:
        reason, models = _check_snapshots(candidate, folders)
    if reason:
        for snapshot in candidate:
            shutil.rmtree(snapshot, ignore_errors=True)
        status.update(ok=False, reason=reason)
        server.log.error("model reload refused: %s; still serving the previous models", reason)
    else:
        # Keep the previous snapshots until the next reload: old workers may still be finishing.
        for old in generations[:-1]:
            for snapshot in old:
                shutil.rmtree(snapshot, ignore_errors=True)
        server.cardsense_snapshots = [*generations[-1:], candidate]
        server.cardsense_folders = folders
        status.update(ok=True, reason="", models=models)
        server.log.info("model reload: checked %s, new workers load them", ", ".join(folders))
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
    """In the new worker: load the checked snapshots, and know the last reload's outcome (``GET /model``)."""
    generations = getattr(server, "cardsense_snapshots", None)
    folders = getattr(server, "cardsense_folders", None) or [str(_cfg.model_dir)]
    if generations:
        # The worker's model folders become the snapshots of the last checked set: the image model's,
        # then the extra (series/dual) ones -- "none" when there are none, or the worker would read "a
        # model folder was named" as "no extras".
        image, *extras = generations[-1]
        os.environ["CARDSENSE_MODEL_DIR"] = image
        os.environ["CARDSENSE_EXTRA_MODEL_DIRS"] = ",".join(extras) or "none"
    os.environ["CARDSENSE_MODEL_SOURCE"] = folders[0]
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
    for generation in getattr(server, "cardsense_snapshots", []):
        for snapshot in generation:
            shutil.rmtree(snapshot, ignore_errors=True)


def when_ready(server):
    server.log.info(
        "CardSense master ready on %s: %d worker(s) x %d thread(s); models %s; workers load them after fork",
        bind, workers, threads, ", ".join(getattr(server, "cardsense_folders", None) or [str(_cfg.model_dir)]),
    )
