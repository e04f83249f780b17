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
        unknown: ``cardsense_unknown_total{model}`` (answers with ``unknown: true``: not a card, or none of the twelve).
        review: ``cardsense_review_total{model}`` (answers with ``review: true``: to be checked by a person).
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
        # Beside predictions, per model: what share of the answers a person must look at (rate over predictions).
        self.unknown = Counter(
            "cardsense_unknown_total", "Answers saying unknown (not a card, or none of the twelve), by model kind.",
            ["model"], **kw
        )
        self.review = Counter(
            "cardsense_review_total", "Answers flagged for review (not confident enough to act on), by model kind.",
            ["model"], **kw
        )
        self.errors = Counter("cardsense_errors_total", "Errors by kind (error code).", ["kind"], **kw)
        self.batch_cards = Histogram(
            "cardsense_batch_cards", "Cards per /classify/batch request.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), **kw,
        )
        self.inference = Histogram(
            "cardsense_inference_seconds", "Time spent in the predictor per call.", buckets=LATENCY_BUCKETS, **kw
        )

    def show_models(self, kinds) -> None:
        """Show the unknown and review counters of these model kinds at 0 from the start (rates need both series)."""
        for kind in kinds:
            self.unknown.labels(model=kind)
            self.review.labels(model=kind)

    def observe_answer(self, answer: dict, model: str) -> None:
        """Count one card's answer (:func:`serving.answers.answer`): its label, and whether unknown or to review.

        Args:
            answer: the answer (``label``, ``unknown``, ``review``).
            model: the kind of the model that answered (image, series, dual).
        """
        self.predictions.labels(label=answer["label"], model=model).inc()
        if answer["unknown"]:
            self.unknown.labels(model=model).inc()
        if answer["review"]:
            self.review.labels(model=model).inc()

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


# ------------------------------------------------------------------------------------ dynamic batching

BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
QUEUE_WAIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class BatchingMetrics:
    """What the dynamic batcher (:mod:`serving.batcher`) reports, in the registry of a :class:`Metrics`.

    Args:
        metrics: the service's metrics (their registry, or the multiprocess folder).
        kinds: the loaded model kinds (their counters are shown from the start).

    Attributes:
        batch_size: ``cardsense_batch_size{kind}`` -- cards per predictor call.
        batch_requests: ``cardsense_batch_requests{kind}`` -- requests per predictor call.
        queue_wait: ``cardsense_batch_queue_wait_seconds{kind}`` -- per request, from queued to its call's start.
        run: ``cardsense_batch_run_seconds{kind}`` -- predictor time per call.
        failures: ``cardsense_batch_failures_total{kind}`` -- predictor calls that raised.
        held: ``cardsense_batch_held_total{kind}`` -- calls held back up to ``CARDSENSE_MAX_WAIT_MS`` for more
            requests (only under load; a lone request is never held).
    """

    def __init__(self, metrics: Metrics, kinds=()) -> None:
        kw = {"registry": metrics.registry}
        self.batch_size = Histogram(
            "cardsense_batch_size", "Cards per predictor call (dynamic batching), by model kind.",
            ["kind"], buckets=BATCH_SIZE_BUCKETS, **kw,
        )
        self.batch_requests = Histogram(
            "cardsense_batch_requests", "Requests per predictor call (dynamic batching), by model kind.",
            ["kind"], buckets=BATCH_SIZE_BUCKETS, **kw,
        )
        self.queue_wait = Histogram(
            "cardsense_batch_queue_wait_seconds", "Per request: from queued to the start of its predictor call.",
            ["kind"], buckets=QUEUE_WAIT_BUCKETS, **kw,
        )
        self.run = Histogram(
            "cardsense_batch_run_seconds", "Predictor time per call (dynamic batching), by model kind.",
            ["kind"], buckets=LATENCY_BUCKETS, **kw,
        )
        self.failures = Counter(
            "cardsense_batch_failures_total", "Predictor calls that raised, by model kind.", ["kind"], **kw,
        )
        self.held = Counter(
            "cardsense_batch_held_total", "Predictor calls held back for more requests (CARDSENSE_MAX_WAIT_MS).",
            ["kind"], **kw,
        )
        for kind in kinds:  # the counters show 0 from the start, not only after the first event
            self.failures.labels(kind=kind)
            self.held.labels(kind=kind)

    def observe_call(self, kind: str, cards: int, requests: int, seconds: float, failed: bool, held: bool) -> None:
        """One predictor call of the batcher."""
        self.batch_size.labels(kind=kind).observe(cards)
        self.batch_requests.labels(kind=kind).observe(requests)
        self.run.labels(kind=kind).observe(seconds)
        if failed:
            self.failures.labels(kind=kind).inc()
        if held:
            self.held.labels(kind=kind).inc()

    def observe_wait(self, kind: str, seconds: float) -> None:
        """One request's wait in the queue."""
        self.queue_wait.labels(kind=kind).observe(seconds)
