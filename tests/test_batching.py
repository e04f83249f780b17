"""Dynamic batching (serving/batcher.py): grouped calls give the single-card answers, errors stay per request,
one thread makes every Paddle call, close() drains, and the settings are checked.

The batcher runs the real tiny model's predictor; the service tests (``tests/test_batching_gunicorn.py``)
run it inside a real gunicorn.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from serving.batcher import Batcher, BatcherClosed, PredictionFailed
from serving.config import ConfigError, ServingConfig
from serving.model_set import ModelSet
from serving.predictor import Predictor
from serving.routing import Router
from shared.cards import CardError
from tests.conftest import CARD_KINDS, card_png


PNGS = [card_png(kind, seed) for seed in range(4) for kind in CARD_KINDS]


class RecordingPredictor(Predictor):
    """The real predictor; it also notes which thread runs each Paddle call and how many cards it carries."""

    def __init__(self, *args, **kwargs) -> None:
        self.calls: list[tuple[int, int]] = []  # (thread id, cards)
        super().__init__(*args, **kwargs)

    def _run(self, predictor, batch):
        self.calls.append((threading.get_ident(), len(next(iter(batch.values())))))
        return super()._run(predictor, batch)


@pytest.fixture(scope="module")
def recording(tiny_model) -> RecordingPredictor:
    return RecordingPredictor(tiny_model, device="cpu", pool_size=2, batch_sizes=tuple(range(1, 17)))


@pytest.fixture(scope="module")
def prepared(recording) -> list[dict]:
    router = Router((recording.inputs,))
    return [router.prepare(png, None).input for png in PNGS]


@pytest.fixture(scope="module")
def single_answers(recording, prepared) -> np.ndarray:
    """Every card alone, straight from the predictor: what a grouped call must give each request."""
    return np.stack([recording.predict_cards([x])[0] for x in prepared])


def concurrently(answer, threads: int = 8, rounds: int = 6) -> tuple[list[tuple[int, np.ndarray]], list]:
    """``threads`` clients each ask ``answer(i)`` for card ``i`` of :data:`PNGS`, every card ``rounds`` times
    over all clients; returns ``([(card index, answer row)], [errors])``."""
    answers: list[tuple[int, np.ndarray]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def client(offset: int) -> None:
        start.wait()
        for step in range(rounds * len(PNGS) // threads):
            i = (offset * 3 + step) % len(PNGS)
            try:
                row = answer(i)
            except BaseException as exc:  # noqa: BLE001 - every error is a test failure, collected
                with lock:
                    errors.append(exc)
                continue
            with lock:
                answers.append((i, row))

    workers = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return answers, errors


def through_the_model_set(models: ModelSet, threads: int, rounds: int = 3) -> tuple[list, list]:
    """Clients that prepare each card and ask for its answer, as the app does."""
    def answer(i: int) -> np.ndarray:
        predictor, _, x, _ = models.prepare(PNGS[i], None)
        return models.predict_cards(predictor.kind, [x])[0]

    return concurrently(answer, threads, rounds)


def test_concurrent_requests_share_calls_and_get_their_single_card_answers(recording, prepared, single_answers):
    batcher = Batcher({"image": recording}, max_batch=16).start()
    try:
        recording.calls.clear()
        grouped = 0
        for _ in range(5):  # grouping depends on threads overlapping; five rounds of 8 clients always did
            answers, errors = concurrently(lambda i: batcher.predict_cards("image", [prepared[i]])[0])
            assert errors == []
            for i, row in answers:
                assert np.array_equal(row, single_answers[i]), f"card {i} answered differently in a batch"
            grouped = sum(1 for _, cards in recording.calls if cards > 1)
            if grouped:
                break
        assert grouped > 0, "no predictor call carried more than one request"
        assert max(cards for _, cards in recording.calls) <= 16
        # Every Paddle call came from the batcher's own thread.
        assert {thread for thread, _ in recording.calls} == {batcher.thread_ident}
    finally:
        batcher.close()


def test_a_request_that_breaks_the_predictor_fails_alone(recording, prepared, single_answers):
    """An input the network cannot take fails its own request; its batch-mates get their answers."""
    batcher = Batcher({"image": recording}, max_batch=16).start()
    broken = {"image": np.zeros((50, 50), np.uint8)}  # not the model's 190 x 400
    results: dict[int, object] = {}

    def client(i: int) -> None:
        try:
            x = broken if i == 3 else prepared[i]
            results[i] = batcher.predict_cards("image", [x])[0]
        except BaseException as exc:  # noqa: BLE001
            results[i] = exc

    try:
        for _ in range(3):
            threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert isinstance(results[3], PredictionFailed) and results[3].status == 500
            for i in (0, 1, 2, 4, 5, 6, 7):
                assert np.array_equal(results[i], single_answers[i])
        assert batcher.alive
        assert np.array_equal(batcher.predict_cards("image", [prepared[0]])[0], single_answers[0])
    finally:
        batcher.close()


def test_close_answers_everything_queued_then_refuses(recording, prepared, single_answers):
    batcher = Batcher({"image": recording}, max_batch=4).start()
    big = [prepared[i % len(prepared)] for i in range(200)]  # keeps the batcher busy while others queue
    results: dict[int, object] = {}

    def client(i: int) -> None:
        try:
            results[i] = batcher.predict_cards("image", big if i == 0 else [prepared[i]])
        except BaseException as exc:  # noqa: BLE001
            results[i] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    while sum(batcher.queued().values()) == 0 and len(results) < 10:
        pass  # until something is queued behind the running call (or everything already finished)
    batcher.close()
    for t in threads:
        t.join()
    assert not batcher.alive
    assert results[0].shape == (200, single_answers.shape[1])
    for i in range(1, 10):
        assert np.array_equal(results[i][0], single_answers[i]), f"request {i} was lost in the drain"
    with pytest.raises(BatcherClosed):
        batcher.predict_cards("image", [prepared[0]])


def test_lone_requests_are_never_held_even_with_a_max_wait(recording):
    """One client at a time: every call runs at once, whatever CARDSENSE_MAX_WAIT_MS says."""
    models = ModelSet([recording])
    batcher = models.start_batcher(max_batch=16, max_wait_ms=1000)
    try:
        answers, errors = through_the_model_set(models, threads=1)
        assert errors == [] and len(answers) == 3 * len(PNGS)
        assert batcher.held_calls == 0
        assert batcher.calls == len(answers)
    finally:
        models.close()


def test_calls_wait_for_cards_being_prepared_only_under_load(recording, single_answers):
    models = ModelSet([recording])
    batcher = models.start_batcher(max_batch=16, max_wait_ms=20)
    try:
        for _ in range(5):
            answers, errors = through_the_model_set(models, threads=8)
            assert errors == []
            assert all(np.array_equal(row, single_answers[i]) for i, row in answers)
            if batcher.held_calls:
                break
        assert batcher.held_calls > 0
        assert batcher.calls < len(answers)  # held calls took more than one request
    finally:
        models.close()


def test_a_bad_card_withdraws_its_announcement(recording):
    """A card that fails while it is prepared does not leave the batcher waiting for it."""
    models = ModelSet([recording])
    batcher = models.start_batcher(max_batch=16, max_wait_ms=1000)
    try:
        with pytest.raises(CardError):
            models.prepare(b"not a png", None)
        predictor, _, x, _ = models.prepare(PNGS[0], None)
        models.predict_cards(predictor.kind, [x])
        assert batcher.held_calls == 0
    finally:
        models.close()


def test_unknown_kind_and_bad_settings_are_refused(recording):
    with pytest.raises(ValueError):
        Batcher({"image": recording}, max_batch=0)
    with pytest.raises(ValueError):
        Batcher({"image": recording}, max_batch=4, max_wait_ms=-1)
    batcher = Batcher({"image": recording}, max_batch=4).start()
    try:
        with pytest.raises(KeyError, match="no series model"):
            batcher.predict_cards("series", [{}])
        assert batcher.predict_cards("image", []).shape == (0, len(recording.codes))
    finally:
        batcher.close()


def test_batching_settings_from_the_environment():
    assert ServingConfig.from_env({}).batch_sizes == tuple(range(1, 17))
    assert ServingConfig.from_env({"CARDSENSE_MAX_BATCH": "4"}).batch_sizes == (1, 2, 3, 4)
    assert ServingConfig.from_env({"CARDSENSE_BATCH_SIZES": "1,8"}).max_batch == 8
    assert ServingConfig.from_env({"CARDSENSE_MAX_WAIT_MS": "2.5"}).max_wait_ms == 2.5
    assert ServingConfig.from_env({"CARDSENSE_MAX_WAIT_MS": "0"}).max_wait_ms == 0.0
    for bad in ({"CARDSENSE_MAX_BATCH": "4", "CARDSENSE_BATCH_SIZES": "1,4"}, {"CARDSENSE_MAX_BATCH": "0"},
                {"CARDSENSE_MAX_BATCH": "1000"}, {"CARDSENSE_MAX_WAIT_MS": "soon"}, {"CARDSENSE_MAX_WAIT_MS": "-1"},
                {"CARDSENSE_MAX_WAIT_MS": "5000"}):
        with pytest.raises(ConfigError):
            ServingConfig.from_env(bad)
