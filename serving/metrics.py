"""Prometheus metrics of the service, correct under several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``serving/gunicorn.conf.py`` does it before any worker
starts), every worker writes its samples to files in that folder and ``GET /metrics`` aggregates
them with ``MultiProcessCollector``; without it (tests, a single process) each app has its own
registry.
"""

from __future__ import annotations

import os
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def multiprocess_dir() -> str | None:
    """The multiprocess folder if one is configured and exists, else ``None``."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    return path if path and os.path.isdir(path) else None


class Metrics:
    """The service's counters and histograms.

    Attributes:
        requests: ``cardsense_http_requests_total{route, method, status}``.
        latency: ``cardsense_http_request_duration_seconds{route}``.
        predictions: ``cardsense_predictions_total{label, model}`` (one per classified card; model: image|series|dual).
        errors: ``cardsense_errors_total{kind}`` (error code, also per failed card in a batch).
        batch_cards: ``cardsense_batch_cards`` (cards per batch request).
        inference: ``cardsense_inference_seconds`` (predictor time per call).
    """

    def __init__(self) -> None:
        # In multiprocess mode the values live in the shared folder, not in a registry.
        self.multiproc_dir = multiprocess_dir()
        self.registry = None if self.multiproc_dir else CollectorRegistry()
        kw = {"registry": self.registry} if self.registry is not None else {"registry": None}
        self.requests = Counter(
            "cardsense_http_requests_total", "HTTP requests by route, method and status.",
            ["route", "method", "status"], **kw,
        )
        self.latency = Histogram(
            "cardsense_http_request_duration_seconds", "HTTP request latency by route.",
            ["route"], buckets=LATENCY_BUCKETS, **kw,
        )
        self.predictions = Counter(
            "cardsense_predictions_total", "Cards classified, by predicted label and the model kind that answered.",
            ["label", "model"], **kw
        )
        self.errors = Counter("cardsense_errors_total", "Errors by kind (error code).", ["kind"], **kw)
        self.batch_cards = Histogram(
            "cardsense_batch_cards", "Cards per /classify/batch request.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), **kw,
        )
        self.inference = Histogram(
            "cardsense_inference_seconds", "Time spent in the predictor per call.", buckets=LATENCY_BUCKETS, **kw
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished HTTP request."""
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type, aggregated over workers when multiprocess."""
        if self.multiproc_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiproc_dir)
        else:
            registry = self.registry
        return generate_latest(registry), CONTENT_TYPE_LATEST


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
