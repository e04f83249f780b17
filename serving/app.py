"""The CardSense HTTP service: a Flask application factory, run by gunicorn.

    gunicorn -c serving/gunicorn.conf.py "serving.app:create_app()"

gunicorn (without ``--preload``) calls :func:`create_app` in every worker after the fork, so each
worker builds and warms its own Paddle predictor; nothing heavy happens at import time.

Routes (blueprint ``api``):
    POST /classify         one card (multipart field ``file``, or a raw ``image/png`` / ``text/csv`` body)
    POST /classify/batch   several files (multipart) or one zip -> one result or error per card
    GET  /healthz          the process is alive
    GET  /readyz           the model is loaded and warmed up
    GET  /model            model metadata, device, preprocessing, evaluation metrics
    GET  /metrics          Prometheus exposition
    GET  /                 web page (serving/static/)
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request, send_from_directory
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge

from serving.config import ServingConfig
from serving.batch import card_payload, skipped_card_members
from serving.errors import ApiError, register_error_handlers
from serving.metrics import Metrics, Timer
from serving.predictor import Predictor
from serving.uploads import ZIP_MAGIC, Upload, card_kind, is_zip, media_type, outline_png, png_data_url
from shared.cards import CardError
from shared.dataset_io import ArchiveError, iter_cards
from shared.preprocess import to_grey_png

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
EXTENSION = "cardsense"
MiB = 1024 * 1024

bp = Blueprint("api", __name__)


class ServiceState:
    """What one worker holds: configuration, the predictor and the metrics."""

    def __init__(self, config: ServingConfig, predictor: Predictor, metrics: Metrics) -> None:
        self.config = config
        self.predictor = predictor
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
            plus any Flask setting.

    Raises:
        serving.predictor.StartupError: the model folder cannot be served (the worker then exits).
        serving.config.ConfigError: a ``CARDSENSE_*`` variable is invalid.
    """
    config = dict(config or {})
    # cv2's thread pool is not fork-safe and competes with Paddle's threads for the cores.
    cv2.setNumThreads(0)
    serving: ServingConfig = config.pop("SERVING", None) or ServingConfig.from_env()
    predictor: Predictor | None = config.pop("PREDICTOR", None)
    if predictor is None:
        predictor = Predictor(
            serving.model_dir,
            device=serving.device,
            cpu_threads=serving.cpu_threads,
            pool_size=serving.threads,
            batch_sizes=serving.batch_sizes,
            gpu_id=serving.gpu_id,
            gpu_mem_mb=serving.gpu_mem_mb,
            tensorrt=serving.tensorrt,
            trt_cache_dir=serving.trt_cache_dir,
        )

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
    app.extensions[EXTENSION] = ServiceState(serving, predictor, metrics)
    register_error_handlers(app, on_error=lambda code: metrics.errors.labels(kind=code).inc())
    app.register_blueprint(bp)
    log.info("CardSense worker %d serving %s on %s", os.getpid(), predictor.name, predictor.device)
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


def _require_token() -> None:
    token = state().config.api_token
    if not token:
        return
    given = request.headers.get("X-API-Token", "")
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        raise ApiError(401, "unauthorized", "this service needs an API token: send 'Authorization: Bearer <token>'")


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


def _read_file(storage: FileStorage) -> Upload:
    return Upload(storage.filename or "", storage.mimetype or "", storage.read())


def _body_type() -> str:
    """The request's media type; a form-urlencoded body (what ``curl --data-binary`` sends without
    ``-H Content-Type``) cannot carry a file, so it is taken as an undeclared raw body and sniffed."""
    ctype = media_type(request.content_type)
    return "" if ctype == "application/x-www-form-urlencoded" else ctype


def _raw_body() -> bytes:
    """The request body, refusing one over the route's limit also when it is sent chunked.

    werkzeug stops reading a chunked body (no Content-Length) at ``max_content_length`` and
    returns what it has; a body that fills the limit exactly is taken as one that went past it.
    """
    data = request.get_data(cache=False)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(data) >= limit:
        raise RequestEntityTooLarge()
    return data


def _single_upload() -> Upload:
    """The one card of a /classify request, from the multipart field ``file`` or the raw body."""
    ctype = _body_type()
    if ctype == "multipart/form-data":
        files = request.files.getlist("file")
        if not files:
            others = sorted(request.files.keys())
            hint = f" (got field(s) {', '.join(others)})" if others else ""
            raise ApiError(400, "missing_file", f"no multipart field 'file' with a card{hint}")
        if len(files) > 1:
            raise ApiError(400, "too_many_files", "send one card to /classify; use /classify/batch for several")
        upload = _read_file(files[0])
        if not upload.data:
            raise ApiError(400, "empty_file", "the field 'file' holds an empty file")
        return upload
    data = _raw_body()
    if not data:
        raise ApiError(
            400, "missing_file",
            "no card in the request: send multipart field 'file', or the card as the body with "
            "Content-Type image/png or text/csv",
        )
    return Upload("", ctype, data)


def _batch_uploads() -> list[Upload]:
    """All files of a /classify/batch request (multipart, any field name) or its raw body."""
    ctype = _body_type()
    if ctype == "multipart/form-data":
        uploads = [_read_file(f) for _, f in request.files.items(multi=True)]
        if not uploads:
            raise ApiError(400, "missing_file", "no files in the request: send one or more cards or a zip (multipart)")
        return uploads
    data = _raw_body()
    if not data:
        raise ApiError(400, "missing_file", "empty request: send cards as multipart files or one zip as the body")
    return [Upload("", ctype, data)]


def _prepare(data: bytes, kind: str, include_input: bool) -> tuple[np.ndarray, dict[str, str]]:
    """Card bytes -> model input (the model's shared preprocessing), plus display images when asked.

    Raises:
        ApiError: 422 for a file that is not a usable card.
    """
    predictor = state().predictor
    try:
        x = predictor.prepare(data, kind)
        extra = {}
        if include_input:
            extra = {
                "card_png": png_data_url(outline_png(predictor.card_outline(data, kind))),
                "input_png": png_data_url(to_grey_png(x)),
            }
    except CardError as exc:
        raise ApiError(422, "invalid_card", f"not a usable {kind.upper()} card: {exc}") from None
    return x, extra


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
    info["service"] = {
        "max_upload_bytes": int(st.config.max_upload_mb * MiB),
        "max_batch_upload_bytes": int(st.config.max_batch_upload_mb * MiB),
        "max_batch_cards": st.config.max_batch_cards,
        "auth": bool(st.config.api_token),
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


@bp.post("/classify")
def classify():
    """Classify one card. ``?top_k=N`` adds a ranked list, ``?include_input=1`` the card and model input as PNGs."""
    started = time.perf_counter()
    _require_token()
    st = state()
    request.max_content_length = int(st.config.max_upload_mb * MiB)
    top_k = min(_int_arg("top_k", 0, 0, 10_000), len(st.predictor.codes))
    include_input = _flag_arg("include_input")
    upload = _single_upload()
    if is_zip(upload) and upload.data.startswith(ZIP_MAGIC):
        raise ApiError(415, "unsupported_media_type", "the upload is a zip archive; send zips to /classify/batch")
    kind = card_kind(upload)
    x, extra = _prepare(upload.data, kind, include_input)
    with Timer() as t:
        probs = st.predictor.predict(x[None])[0]
    st.metrics.inference.observe(t.seconds)
    body = st.predictor.result(probs, top_k)
    st.metrics.predictions.labels(label=body["label"]).inc()
    body["model"] = st.predictor.model_id
    body["input"] = {"kind": kind, **({"filename": upload.filename} if upload.filename else {})}
    body.update(extra)
    body["elapsed_ms"] = _ms(time.perf_counter() - started)
    return jsonify(body)


def _iter_batch_cards(uploads: list[Upload], limit: int) -> Iterator[tuple[str, str, str | None, bytes | None, dict | None]]:
    """Yield ``(id, file, kind, data, error)`` for every card of a batch request.

    Zips are read in memory with the shared safe reader (``shared.dataset_io``); their cards are
    paired and chosen as in the batch scorer (PNG, else CSV), refused card members come out as errors.

    Raises:
        ApiError: 413 past ``limit`` cards, 422 for a zip that cannot be opened at all.
    """
    count = 0

    def bump(n: int = 1) -> None:
        nonlocal count
        count += n
        if count > limit:
            raise ApiError(413, "too_many_cards", f"a batch holds at most {limit} cards; split the upload")

    for upload in uploads:
        if not is_zip(upload):
            bump()
            if not upload.data:
                yield upload.stem, upload.filename, None, None, {"code": "empty_file", "message": "the file is empty"}
                continue
            try:
                kind = card_kind(upload)
            except ApiError as exc:
                yield upload.stem, upload.filename, None, None, exc.to_dict()
                continue
            yield upload.stem, upload.filename, kind, upload.data, None
            continue
        try:
            source = iter_cards(upload.data)
        except ArchiveError as exc:
            name = f" {upload.filename}" if upload.filename else ""
            raise ApiError(422, "invalid_zip", f"cannot read the zip{name}: {exc}") from None
        with source:
            bump(len(source))
            seen = set()
            for card in source:
                seen.add((card.folder, card.id))
                try:
                    kind, data = card_payload(card)
                except CardError as exc:
                    yield card.id, card.name, None, None, {"code": "invalid_card", "message": str(exc)}
                    continue
                yield card.id, card.name, kind, data, None
            for card_id, name, reason in skipped_card_members(source, seen):
                bump()
                yield card_id, name, None, None, {"code": "skipped_member", "message": f"{name}: {reason}"}


@bp.post("/classify/batch")
def classify_batch():
    """Classify several cards (multipart files or one zip); one bad card does not fail the others."""
    started = time.perf_counter()
    _require_token()
    st = state()
    request.max_content_length = int(st.config.max_batch_upload_mb * MiB)
    top_k = min(_int_arg("top_k", 0, 0, 10_000), len(st.predictor.codes))
    uploads = _batch_uploads()
    results: list[dict[str, Any]] = []
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        with Timer() as t:
            probs = st.predictor.predict(np.stack([x for _, x in pending]))
        st.metrics.inference.observe(t.seconds)
        for (index, _), row in zip(pending, probs):
            body = st.predictor.result(row, top_k)
            st.metrics.predictions.labels(label=body["label"]).inc()
            results[index].update(body)
        pending.clear()

    for card_id, filename, kind, data, error in _iter_batch_cards(uploads, st.config.max_batch_cards):
        entry: dict[str, Any] = {"id": card_id, "file": filename}
        results.append(entry)
        if error is None:
            entry["kind"] = kind
            try:
                x, _ = _prepare(data, kind, include_input=False)
                pending.append((len(results) - 1, x))
            except ApiError as exc:
                error = exc.to_dict()
        if error is not None:
            entry["error"] = error
            st.metrics.errors.labels(kind=error["code"]).inc()
        if len(pending) >= st.predictor.max_batch:
            flush()
    flush()
    st.metrics.batch_cards.observe(len(results))
    failed = sum(1 for r in results if "error" in r)
    return jsonify(
        {
            "count": len(results),
            "ok": len(results) - failed,
            "errors": failed,
            "results": results,
            "model": st.predictor.model_id,
            "elapsed_ms": _ms(time.perf_counter() - started),
        }
    )
