"""gunicorn settings for CardSense, from ``CARDSENSE_*`` environment variables.

    gunicorn -c serving/gunicorn.conf.py "serving.app:create_app()"

No ``preload_app``: every worker imports the app and builds its own Paddle predictor after the
fork (a predictor or CUDA context made in the master breaks in the children). gthread workers:
each thread borrows its own predictor clone. Prometheus runs in multiprocess mode so ``/metrics``
adds up all workers.
"""

import os
import shutil
import sys
import tempfile

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
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if not _metrics_dir:
    _metrics_dir = tempfile.mkdtemp(prefix="cardsense-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
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

    try:
        load_meta(_cfg.model_dir)
    except ModelFolderError as exc:
        server.log.error("cannot serve %s: %s", _cfg.model_dir, exc)
        raise SystemExit(f"CardSense: cannot serve {_cfg.model_dir}: {exc}") from None


def child_exit(server, worker):
    """Merge a dead worker's live gauges away (counters and histograms are kept)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics folder this master created."""
    if _own_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)


def when_ready(server):
    server.log.info(
        "CardSense master ready on %s: %d worker(s) x %d thread(s); model %s; workers load the model after fork",
        bind, workers, threads, _cfg.model_dir,
    )
