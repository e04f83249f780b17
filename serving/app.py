"""The CardSense HTTP service: a Flask application factory, run by gunicorn.

    gunicorn -c serving/gunicorn.conf.py "serving.app:create_app()"

gunicorn (without ``--preload``) calls :func:`create_app` in every worker after the fork, so each
worker builds and warms its own Paddle predictor; nothing heavy happens at import time.

The factory and the routes only: a request becomes cards in :mod:`serving.uploads`, a card is routed and
prepared in :mod:`serving.routing` (through :class:`serving.model_set.ModelSet`), the routed model's
predictor answers it (:meth:`serving.predictor.Predictor.predict_cards`) and :mod:`serving.answers` says it.

Routes (blueprint ``api``):
    POST /classify         one card (multipart field ``file``, or a raw ``image/png`` / ``text/csv`` body);
                           ``?explain=1`` adds occlusion heat maps (serving/explain.py)
    POST /classify/batch   several files (multipart) or one zip -> one result or error per card
    GET  /healthz          the process is alive
    GET  /readyz           the model is loaded and warmed up
    GET  /model            model metadata, device, preprocessing, evaluation metrics
    GET  /metrics          Prometheus exposition
    GET  /openapi.json     the API described in OpenAPI 3.1 (serving/openapi.py)
    GET  /                 web page (serving/static/)
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import cv2
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request, send_from_directory

from serving.accuracy import accuracy_figures
from serving.answers import LOW_CONFIDENCE, answer, input_views, models_summary
from serving.card_facts import CardFacts
from serving.config import ServingConfig
from serving.errors import ApiError, register_error_handlers
from serving.explain import explanation, occlusion_plan
from serving.metrics import BatchingMetrics, Metrics, Timer
from serving.model_set import ModelSet
from serving.openapi import openapi_document
from serving.predictor import Predictor, load_predictor
from serving.routing import CardInput, UnusableCard
from serving.uploads import iter_batch_cards, read_batch_uploads, read_single_card
from shared.card_pair import MismatchedPair
from shared.cards import CardError

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
EXTENSION = "cardsense"
MiB = 1024 * 1024

bp = Blueprint("api", __name__)


class ServiceState:
    """What one worker holds: configuration, the models and the metrics."""

    def __init__(self, config: ServingConfig, models: ModelSet, metrics: Metrics) -> None:
        self.config = config
        self.models = models
        self.predictor = models.primary  # labels, /readyz; the routed model answers each card
        self.metrics = metrics
        self.started = time.time()


def state() -> ServiceState:
    """The :class:`ServiceState` of the current app."""
    return current_app.extensions[EXTENSION]


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app, load and warm up the model.

    Args:
        config: optional overrides. ``SERVING`` (a :class:`ServingConfig`; default: from the
            environment), ``PREDICTOR`` (an already built :class:`Predictor`, e.g. shared by tests),
            ``EXTRA_PREDICTORS`` (built series/dual predictors), plus any Flask setting. Without them the
            model of ``model_dir`` and those of ``extra_model_dirs`` are loaded (:mod:`serving.model_set`).

    Raises:
        serving.predictor.StartupError: the model folder cannot be served (the worker then exits).
        serving.config.ConfigError: a ``CARDSENSE_*`` variable is invalid.
    """
    config = dict(config or {})
    # cv2's thread pool is not fork-safe and competes with Paddle's threads for the cores.
    cv2.setNumThreads(0)
    serving: ServingConfig = config.pop("SERVING", None) or ServingConfig.from_env()
    predictor: Predictor | None = config.pop("PREDICTOR", None)
    extras: list[Predictor] | None = config.pop("EXTRA_PREDICTORS", None)
    if serving.explain == "token" and not serving.api_token:
        log.warning("CARDSENSE_EXPLAIN=token but CARDSENSE_API_TOKEN is not set: no request can carry the token, "
                    "so every ?explain=1 is refused (403)")
    options = dict(
        device=serving.device,
        cpu_threads=serving.cpu_threads,
        pool_size=serving.threads,
        batch_sizes=serving.batch_sizes,
        gpu_id=serving.gpu_id,
        gpu_mem_mb=serving.gpu_mem_mb,
        tensorrt=serving.tensorrt,
        trt_cache_dir=serving.trt_cache_dir,
    )
    if predictor is None:
        predictor = load_predictor(serving.model_dir, **options)
    if extras is None:
        extras = [load_predictor(d, **options) for d in serving.extra_model_dirs]
    models = ModelSet([predictor, *extras])

    app = Flask(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.config.update(
        # The largest request any route accepts; /classify lowers it per request.
        MAX_CONTENT_LENGTH=int(max(serving.max_upload_mb, serving.max_batch_upload_mb) * MiB),
        MAX_FORM_PARTS=serving.max_batch_cards + 16,
        # Non-file form fields; werkzeug also holds its look-ahead buffer to this, and at 64 kB a batch of
        # many small files (1,000 small CSVs) was refused with a 413.
        MAX_FORM_MEMORY_SIZE=1 * MiB,
    )
    app.config.update(config)
    app.json.ensure_ascii = False  # 供液不足, not \u4f9b...
    app.json.sort_keys = False
    metrics = Metrics()
    metrics.show_models(models.by_kind)
    models.start_batcher(serving.max_batch, serving.max_wait_ms, BatchingMetrics(metrics, models.by_kind))
    app.extensions[EXTENSION] = ServiceState(serving, models, metrics)
    register_error_handlers(app, on_error=lambda code: metrics.errors.labels(kind=code).inc())
    app.register_blueprint(bp)
    log.info("CardSense worker %d serving %s on %s", os.getpid(),
             ", ".join(f"{p.name} ({k})" for k, p in models.by_kind.items()), predictor.device)
    return app


# ------------------------------------------------------------------------------------ plumbing


@bp.before_app_request
def _start_timer() -> None:
    g.started = time.perf_counter()


@bp.after_app_request
def _observe(response: Response) -> Response:
    started = g.pop("started", None)
    if started is not None:
        rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        if not rule.startswith("/static"):
            state().metrics.observe_request(rule, request.method, response.status_code, time.perf_counter() - started)
    return response


def _carries_token(token: str) -> bool:
    """The request sends ``token`` (``Authorization: Bearer <token>`` or ``X-API-Token``)."""
    given = request.headers.get("X-API-Token", "")
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


def _require_token() -> None:
    token = state().config.api_token
    if token and not _carries_token(token):
        raise ApiError(401, "unauthorized", "this service needs an API token: send 'Authorization: Bearer <token>'")


def _require_explain_allowed() -> None:
    """Refuse ``?explain=1`` (403) when ``CARDSENSE_EXPLAIN`` does not allow this request an explanation."""
    config = state().config
    if config.explain == "off":
        raise ApiError(403, "explain_off", "explanations are turned off on this service (CARDSENSE_EXPLAIN=off); "
                                           "ask without explain=1")
    if config.explain == "token" and not (config.api_token and _carries_token(config.api_token)):
        raise ApiError(403, "explain_needs_token",
                       "explanations on this service are for requests carrying the API token (CARDSENSE_EXPLAIN=token)"
                       + ("" if config.api_token else ", and none is configured (CARDSENSE_API_TOKEN)"))


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"?{name}= must be an integer from {lo} to {hi}") from None
    if not lo <= value <= hi:
        raise ApiError(400, "invalid_parameter", f"?{name}= must be an integer from {lo} to {hi}")
    return value


def _flag_arg(name: str) -> bool:
    return request.args.get(name, "").lower() in ("1", "true", "yes", "on")


def _card_error(exc: CardError) -> ApiError:
    """422 ``invalid_card`` for a card no loaded model reads, or that the model it goes to cannot read;
    422 ``mismatched_pair`` for a PNG and a CSV of two different cards sent as one."""
    if isinstance(exc.__cause__, MismatchedPair):
        return ApiError(422, "mismatched_pair", str(exc))
    if isinstance(exc, UnusableCard):
        what = f"{exc.used.upper()} card" if exc.kind == "image" else f"card for the {exc.kind} model"
        return ApiError(422, "invalid_card", f"not a usable {what}: {exc}")
    return ApiError(422, "invalid_card", str(exc))


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


# ------------------------------------------------------------------------------------ routes


@bp.get("/")
def index():
    """The web page."""
    return send_from_directory(STATIC_DIR, "index.html", max_age=0)


@bp.get("/healthz")
def healthz():
    """Liveness: the worker answers."""
    return jsonify({"status": "ok", "pid": os.getpid()})


@bp.get("/readyz")
def readyz():
    """Readiness: the model is loaded and every batch shape warmed up."""
    predictor = state().predictor
    if not predictor.ready:
        raise ApiError(503, "not_ready", "the model is still loading")
    return jsonify({"status": "ready", "model": predictor.model_id, "device": predictor.device})


@bp.get("/model")
def model_info():
    """Model metadata, device, preprocessing and the model's evaluation metrics."""
    _require_token()
    st = state()
    info = st.predictor.describe()
    info["models"] = st.models.describe()
    info["accuracy"] = accuracy_figures(st.predictor.meta)
    for kind, described in info["models"].items():
        described["accuracy"] = accuracy_figures(st.models.get(kind).meta)
    info["service"] = {
        "max_upload_bytes": int(st.config.max_upload_mb * MiB),
        "max_batch_upload_bytes": int(st.config.max_batch_upload_mb * MiB),
        "max_batch_cards": st.config.max_batch_cards,
        # the review threshold of models without a fitted review rule (each model's rules: models.<kind>.answers)
        "low_confidence": LOW_CONFIDENCE,
        "auth": bool(st.config.api_token),
        "explain": st.config.explain,  # CARDSENSE_EXPLAIN: on, off or token
        "uptime_seconds": round(time.time() - st.started, 1),
    }
    # Under gunicorn the worker loads a checked snapshot of the configured folder (gunicorn.conf.py).
    if os.environ.get("CARDSENSE_MODEL_SOURCE"):
        info["service"]["model_source"] = os.environ["CARDSENSE_MODEL_SOURCE"]
    if os.environ.get("CARDSENSE_RELOAD_STATUS"):
        info["service"]["reload"] = json.loads(os.environ["CARDSENSE_RELOAD_STATUS"])
    return jsonify(info)


@bp.get("/metrics")
def metrics():
    """Prometheus metrics (aggregated over gunicorn workers)."""
    body, content_type = state().metrics.render()
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi():
    """The API in OpenAPI 3.1 (``serving/openapi.py``); ``tests/test_openapi.py`` holds it to the real routes."""
    return jsonify(openapi_document())


@bp.post("/classify")
def classify():
    """Classify one card. ``?top_k=N`` adds a ranked list, ``?include_input=1`` the card and model input as PNGs,
    ``?explain=1`` occlusion heat maps of what drove the answer (:mod:`serving.explain`)."""
    started = time.perf_counter()
    _require_token()
    st = state()
    request.max_content_length = int(st.config.max_upload_mb * MiB)
    top_k = min(_int_arg("top_k", 0, 0, 10_000), len(st.predictor.codes))
    include_input = _flag_arg("include_input")
    explain = _flag_arg("explain")
    if explain:
        _require_explain_allowed()
    card = read_single_card(request)
    try:
        predictor, used, x, facts = st.models.prepare(card.png, card.csv)
    except CardError as exc:
        raise _card_error(exc) from None
    try:  # the pictures of the files the model read
        extra = input_views(card.png if used != "csv" else None, card.csv if used != "png" else None, x) \
            if include_input else {}
    except CardError as exc:  # the outline of a file the model did not read (a PNG sent to a series model)
        raise _card_error(UnusableCard(predictor.kind, used, exc)) from None
    # An explanation's occluded copies go with the card in one request: the batcher owns the predictors.
    plan = occlusion_plan(x) if explain else None
    with Timer() as t:
        outputs = st.models.predict_cards(predictor.kind, [x, *plan.inputs] if plan is not None else [x])
    if plan is None:  # a hundred-card explanation call is not an inference latency
        st.metrics.inference.observe(t.seconds)
    body = answer(predictor, outputs[0], facts, top_k)
    st.metrics.observe_answer(body, predictor.kind)
    if plan is not None:
        body["explanation"] = explanation(plan, predictor.output.interpret(outputs).probabilities,
                                          predictor.codes.index(body["label"]), body["label"])
    body["input"] = {"kind": used, **({"filename": card.filename} if card.filename else {}),
                     **({"series_filename": card.series_filename} if card.series_filename else {})}
    body.update(extra)
    body["elapsed_ms"] = _ms(time.perf_counter() - started)
    return jsonify(body)


@bp.post("/classify/batch")
def classify_batch():
    """Classify several cards (multipart files or one zip); one bad card does not fail the others."""
    started = time.perf_counter()
    _require_token()
    st = state()
    request.max_content_length = int(st.config.max_batch_upload_mb * MiB)
    top_k = min(_int_arg("top_k", 0, 0, 10_000), len(st.predictor.codes))
    uploads = read_batch_uploads(request)
    results: list[dict[str, Any]] = []
    # One queue per model kind: each card goes to the model that reads it (serving.routing).
    pending: dict[str, list[tuple[int, CardInput, CardFacts]]] = {}

    def flush(kind: str) -> None:
        items = pending.pop(kind, [])
        if not items:
            return
        predictor = st.models.get(kind)
        with Timer() as t:
            outputs = st.models.predict_cards(kind, [x for _, x, _ in items])
        st.metrics.inference.observe(t.seconds)
        for (index, _, facts), row in zip(items, outputs):
            body = answer(predictor, row, facts, top_k)
            st.metrics.observe_answer(body, predictor.kind)
            results[index].update(body)

    cards = iter_batch_cards(uploads, st.config.max_batch_cards, pair_files=st.models.get("dual") is not None)
    for card_id, filename, png, csv, error in cards:
        entry: dict[str, Any] = {"id": card_id, "file": filename}
        results.append(entry)
        if error is None:
            try:
                predictor, used, x, facts = st.models.prepare(png, csv)
            except CardError as exc:
                if isinstance(exc, UnusableCard):
                    entry["kind"] = exc.used
                error = _card_error(exc).to_dict()
            else:
                entry["kind"] = used
                pending.setdefault(predictor.kind, []).append((len(results) - 1, x, facts))
                if len(pending[predictor.kind]) >= predictor.max_batch:
                    flush(predictor.kind)
        if error is not None:
            entry["error"] = error
            st.metrics.errors.labels(kind=error["code"]).inc()
    for kind in list(pending):
        flush(kind)
    st.metrics.batch_cards.observe(len(results))
    failed = sum(1 for r in results if "error" in r)
    # Each result names its model; the top level lists them all ("model" only when one model answered all).
    summary = models_summary([r for r in results if "error" not in r])
    return jsonify(
        {
            "count": len(results),
            "ok": len(results) - failed,
            "errors": failed,
            "results": results,
            **summary,
            "elapsed_ms": _ms(time.perf_counter() - started),
        }
    )
