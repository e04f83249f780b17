"""Dynamic batching in one service worker: concurrent requests of one model kind become one predictor call.

The gthread worker answers several requests at once, one per thread. Each thread routes and prepares its
card itself (:meth:`serving.model_set.ModelSet.prepare`: decode, fill -- a bad card fails there, alone, before
anything is queued) and hands the prepared input to the worker's :class:`Batcher`, which

* keeps one queue per model kind (``image``, ``series``, ``dual``);
* runs every predictor call from **one thread it owns**: the queued requests of a kind, up to ``max_batch``
  cards, go to the predictor in one :meth:`serving.predictor.Predictor.predict_cards` call, and each
  request gets its own rows back;
* is *opportunistic*: a request that finds the batcher idle runs at once, alone -- it never waits for
  company; requests that arrive while a call is running queue up and go together in the next call;
* waits only for requests it knows are coming: the app's threads announce each card while they prepare
  it (:meth:`Batcher.preparing`, from :meth:`serving.model_set.ModelSet.prepare`), and a call that is not
  full waits up to ``max_wait_ms`` while some card is still being prepared. ``predictor.run()`` holds
  the GIL, so no thread of the worker can prepare a card while a call runs: without this wait a call
  would take only the requests that happened to be queued when the last one ended (measured: 1.6-1.9
  cards per call at 16 clients). A lone request never waits -- nothing else is being prepared.

Why one thread owns the predictors:

* Paddle Inference predictor clones used from several threads sometimes fail inside ``predictor.run()``
  (``RuntimeError: std::exception``; 6 threads x 40 calls on 2 clones: about 1 % of calls, none with one
  clone) -- even one thread after another, when a new thread uses clones in turn. The batcher pins one
  clone per predictor (:meth:`serving.predictor.Predictor.pin`) and makes every call from its own
  long-lived thread: no two Paddle calls of a worker overlap, and no clone changes hands.
* ``predictor.run()`` holds the GIL for the whole call (measured: a sleeping thread wakes only when the
  call ends), so several threads calling Paddle never ran in parallel anyway; and oneDNN keeps its
  primitive cache per thread, so one thread warms each batch shape once (:meth:`Batcher.start` re-runs the
  warm-up on the batcher's own thread).

Errors stay per request: a predictor call that raises is retried one request at a time, so a request whose
input breaks the network fails alone (:class:`PredictionFailed`, a JSON 500 ``prediction_failed``) and its
batch-mates get their answers; the batcher thread survives every error. :meth:`Batcher.close` (also run at
interpreter exit, after gunicorn's graceful stop has let in-flight requests finish) refuses new requests
and answers every queued one before the thread stops: shutdown and a SIGHUP reload drain the queue.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Protocol, Sequence

import numpy as np

from serving.errors import ApiError
from serving.predictor import Predictor
from serving.routing import CardInput

log = logging.getLogger(__name__)


class BatcherClosed(ApiError):
    """The batcher is shutting down and takes no new requests (HTTP 503 ``shutting_down``)."""

    def __init__(self, message: str = "the service is shutting down; retry on another instance") -> None:
        super().__init__(503, "shutting_down", message)


class PredictionFailed(ApiError):
    """The predictor call that carried this request raised (HTTP 500 ``prediction_failed``); the message
    names the original error."""

    def __init__(self, message: str) -> None:
        super().__init__(500, "prediction_failed", message)


class BatchObserver(Protocol):
    """What the batcher reports per predictor call (:class:`serving.metrics.BatchingMetrics` implements it)."""

    def observe_call(self, kind: str, cards: int, requests: int, seconds: float, failed: bool, held: bool) -> None: ...

    def observe_wait(self, kind: str, seconds: float) -> None: ...


@dataclass(eq=False)
class _Request:
    kind: str
    inputs: Sequence[CardInput]
    enqueued: float
    done: threading.Event = field(default_factory=threading.Event)
    outputs: np.ndarray | None = None
    error: BaseException | None = None
    waited: float = 0.0  # seconds from enqueue to the start of its predictor call


class Batcher:
    """One worker's dynamic batcher: per-kind queues, one thread that runs every predictor call.

    Args:
        predictors: ``{kind: predictor}`` (:attr:`serving.model_set.ModelSet.by_kind`).
        max_batch: the most cards one call runs (whole requests are taken; a request larger than this
            runs alone and the predictor splits it into chunks of its own ``max_batch``).
        max_wait_ms: how long a call that is not full may wait for cards still being prepared
            (:meth:`preparing`); 0: never wait.
        observer: gets the size, duration and queue waits of every call (metrics), or None.

    Raises:
        ValueError: ``max_batch`` < 1 or ``max_wait_ms`` < 0.
    """

    def __init__(self, predictors: Mapping[str, Predictor], max_batch: int, max_wait_ms: float = 0.0,
                 observer: BatchObserver | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, got {max_wait_ms}")
        self.predictors = dict(predictors)
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.observer = observer
        self._queues: dict[str, deque[_Request]] = {kind: deque() for kind in self.predictors}
        self._preparing = 0  # cards the app's threads are preparing now (preparing())
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.calls = 0  # predictor calls made
        self.held_calls = 0  # calls held back (max_wait_ms) for more requests
        self.thread_ident: int | None = None  # the thread that runs every Paddle call

    # ---------------------------------------------------------------------------------- life cycle

    def start(self) -> "Batcher":
        """Start the batcher thread and warm every predictor up on it; returns when it is ready.

        Raises:
            RuntimeError: the warm-up failed on the batcher thread (the message says why).
        """
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._main, args=(ready, failure), name="cardsense-batcher",
                                        daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise RuntimeError(f"the batcher could not warm up its predictors: {failure[0]}") from failure[0]
        # Drain at interpreter exit (gunicorn's graceful stop has let in-flight requests finish by then);
        # through a weak reference, so the exit hook never keeps a stopped batcher alive.
        ref = weakref.ref(self)
        atexit.register(lambda: (b := ref()) is not None and b.close())
        return self

    def close(self, timeout: float | None = 30.0) -> None:
        """Refuse new requests, answer every queued one, then stop the thread (idempotent)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """The batcher thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def queued(self) -> dict[str, int]:
        """Requests waiting per kind (not counting the call that is running)."""
        with self._cond:
            return {kind: len(q) for kind, q in self._queues.items()}

    # ---------------------------------------------------------------------------------- requests

    @contextmanager
    def preparing(self) -> Iterator[None]:
        """Announce a card being prepared (routed, decoded, filled) for a call of this batcher soon.

        A call that is not full waits up to ``max_wait_ms`` while any card is announced. Leaving the
        block withdraws the announcement whatever happens (a bad card, an exception).
        """
        with self._cond:
            self._preparing += 1
        try:
            yield
        finally:
            with self._cond:
                self._preparing -= 1
                self._cond.notify_all()

    def predict_cards(self, kind: str, inputs: Sequence[CardInput]) -> np.ndarray:
        """The network's output for prepared cards of one kind, computed in the batcher's next call.

        Blocks until the answer is ready. Same result as ``predictors[kind].predict_cards(inputs)``; a request
        of many inputs (an explanation's occluded copies) is one request and runs in as few calls as its size
        allows.

        Returns:
            ``float32 [len(inputs), output width]`` (:meth:`serving.predictor.Predictor.predict`).

        Raises:
            KeyError: no predictor of that kind.
            BatcherClosed: the batcher is shutting down.
            PredictionFailed: the predictor raised on this request's input.
        """
        if kind not in self._queues:
            raise KeyError(f"no {kind} model loaded; loaded: {', '.join(self._queues)}")
        if not inputs:
            return np.empty((0, self.predictors[kind].output.width), np.float32)
        request = _Request(kind, inputs, time.perf_counter())
        with self._cond:
            if self._closing or not self.alive:
                raise BatcherClosed()
            self._queues[kind].append(request)
            self._cond.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.outputs

    # ---------------------------------------------------------------------------------- the thread

    def _main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        self.thread_ident = threading.get_ident()
        try:
            for predictor in self.predictors.values():
                predictor.pin()  # one clone, used from this thread only (Predictor.pin says why)
                predictor.warm_up()  # oneDNN caches primitives per thread: warm this one
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            failure.append(exc)
            ready.set()
            return
        ready.set()
        while True:
            with self._cond:
                while not self._closing and not any(self._queues.values()):
                    self._cond.wait()
                if not any(self._queues.values()):  # closing and drained
                    for predictor in self.predictors.values():
                        predictor.unpin()
                    return
                kind = self._oldest_kind()
                batch = self._take(kind)
                held = self._wait_for_more(kind, batch) if self.max_wait > 0 else False
            self._execute(kind, batch, held)

    def _oldest_kind(self) -> str:
        """The kind whose first queued request has waited longest (fair between kinds)."""
        return min((q[0].enqueued, kind) for kind, q in self._queues.items() if q)[1]

    def _cards(self, batch: list[_Request]) -> int:
        return sum(len(r.inputs) for r in batch)

    def _take(self, kind: str, batch: list[_Request] | None = None) -> list[_Request]:
        """Whole requests from the front of a kind's queue while they fit in ``max_batch`` (at least one)."""
        batch = [] if batch is None else batch
        queue = self._queues[kind]
        cards = self._cards(batch)
        while queue and (not batch or cards + len(queue[0].inputs) <= self.max_batch):
            request = queue.popleft()
            batch.append(request)
            cards += len(request.inputs)
        return batch

    def _wait_for_more(self, kind: str, batch: list[_Request]) -> bool:
        """While cards are being prepared, wait up to ``max_wait`` for them to join the batch (lock held).

        Returns:
            whether the call was held at all.
        """
        deadline = time.perf_counter() + self.max_wait
        held = False
        while self._preparing > 0 and self._cards(batch) < self.max_batch and not self._closing:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            held = True
            self._cond.wait(remaining)
            before = len(batch)
            self._take(kind, batch)
            if len(batch) == before and self._queues[kind]:
                break  # the next request does not fit
        return held

    def _execute(self, kind: str, batch: list[_Request], held: bool = False) -> None:
        """One predictor call for the batch; on failure, one call per request so errors stay per request."""
        predictor = self.predictors[kind]
        started = time.perf_counter()
        for request in batch:
            request.waited = started - request.enqueued
        inputs = [x for request in batch for x in request.inputs]
        try:
            outputs = predictor.predict_cards(inputs)
        except Exception as exc:  # noqa: BLE001 - the batcher must survive anything the predictor raises
            self._observe(kind, batch, started, failed=True, held=held)
            if len(batch) > 1:
                log.warning("a %s batch of %d requests failed (%s); retrying them one by one", kind, len(batch), exc)
                for request in batch:
                    self._execute(kind, [request])
                return
            log.error("%s prediction failed: %s: %s", kind, type(exc).__name__, exc, exc_info=exc)
            batch[0].error = PredictionFailed(f"the {kind} model failed on this card: {type(exc).__name__}: {exc}")
            batch[0].done.set()
            return
        self._observe(kind, batch, started, failed=False, held=held)
        start = 0
        for request in batch:
            stop = start + len(request.inputs)
            request.outputs = outputs[start:stop]
            start = stop
            request.done.set()

    def _observe(self, kind: str, batch: list[_Request], started: float, failed: bool, held: bool) -> None:
        self.calls += 1
        self.held_calls += int(held)
        if self.observer is None:
            return
        try:
            self.observer.observe_call(kind, self._cards(batch), len(batch), time.perf_counter() - started, failed,
                                       held)
            for request in batch:
                self.observer.observe_wait(kind, request.waited)
        except Exception:  # noqa: BLE001 - metrics never break predictions
            log.exception("batch metrics failed")
