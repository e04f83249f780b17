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
from serving.routing import ModelSet, SeriesPredictor, load_predictor
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

    def __init__(self, config: ServingConfig, predictor: Predictor, metrics: Metrics,
                 models: ModelSet | None = None) -> None:
        self.config = config
        self.models = models or ModelSet([predictor])
        self.predictor = self.models.primary  # labels, /readyz; the routed model answers each card
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
            model of ``model_dir`` and those of ``extra_model_dirs`` are loaded (:mod:`serving.routing`).

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
    app.extensions[EXTENSION] = ServiceState(serving, predictor, metrics, models)
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


def _series_upload(file_kind: str) -> Upload | None:
    """The optional multipart field ``series``: the CSV of the same card as the PNG in ``file``.

    Raises:
        ApiError: 400 for two ``series`` files, an empty one, or ``file`` not being a PNG; 415 if it is no CSV.
    """
    if _body_type() != "multipart/form-data":
        return None
    files = request.files.getlist("series")
    if not files:
        return None
    if len(files) > 1:
        raise ApiError(400, "too_many_files", "send one 'series' CSV with the card's PNG")
    series = _read_file(files[0])
    if not series.data:
        raise ApiError(400, "empty_file", "the field 'series' holds an empty file")
    if card_kind(series) != "csv":
        raise ApiError(415, "unsupported_media_type", "the field 'series' takes the card's CSV (position/load)")
    if file_kind != "png":
        raise ApiError(400, "invalid_parameter", "with a 'series' CSV, the field 'file' must be the card's PNG")
    return series


def _route(png: bytes | None, csv: bytes | None):
    """(predictor, input kind) for a card (serving.routing); 422 when no loaded model reads it."""
    try:
        return state().models.route(png, csv)
    except CardError as exc:
        raise ApiError(422, "invalid_card", str(exc)) from None


def _prepare_series(predictor: SeriesPredictor, png: bytes | None, csv: bytes | None,
                    include_input: bool) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Card files -> series/dual model inputs, plus the outline (and the image input of a dual model) when asked.

    Raises:
        ApiError: 422 for a file that is not a usable card.
    """
    try:
        x = predictor.prepare_pair(png, csv)
        extra = {}
        if include_input:
            extra["card_png"] = png_data_url(outline_png(predictor.card_outline(png, "png") if png is not None
                                                         else predictor.card_outline(csv, "csv")))
            if "image" in x:
                extra["input_png"] = png_data_url(to_grey_png(x["image"]))
    except CardError as exc:
        raise ApiError(422, "invalid_card", f"not a usable card for the {predictor.kind} model: {exc}") from None
    return x, extra


def _prepare(data: bytes, kind: str, include_input: bool,
             predictor: Predictor | None = None) -> tuple[np.ndarray, dict[str, str]]:
    """Card bytes -> model input (the model's shared preprocessing), plus display images when asked.

    Raises:
        ApiError: 422 for a file that is not a usable card.
    """
    predictor = predictor or state().predictor
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
    info["models"] = st.models.describe()
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
    series = _series_upload(kind)
    png = upload.data if kind == "png" else None
    csv = series.data if series is not None else (upload.data if kind == "csv" else None)
    predictor, used = _route(png, csv)
    if isinstance(predictor, SeriesPredictor):
        x, extra = _prepare_series(predictor, png, csv, include_input)
    else:
        x, extra = _prepare(upload.data, kind, include_input, predictor)
    with Timer() as t:
        probs = predictor.predict(ModelSet.stack([x]))[0]
    st.metrics.inference.observe(t.seconds)
    body = predictor.result(probs, top_k)
    st.metrics.predictions.labels(label=body["label"]).inc()
    body["model"] = predictor.model_id
    body["input"] = {"kind": used, **({"filename": upload.filename} if upload.filename else {}),
                     **({"series_filename": series.filename} if series is not None and series.filename else {})}
    body.update(extra)
    body["elapsed_ms"] = _ms(time.perf_counter() - started)
    return jsonify(body)


def _iter_batch_cards(uploads: list[Upload], limit: int, pair_files: bool = False
                      ) -> Iterator[tuple[str, str, bytes | None, bytes | None, dict | None]]:
    """Yield ``(id, file, png, csv, error)`` for every card of a batch request.

    Zips are read in memory with the shared safe reader (``shared.dataset_io``), which pairs
    ``<id>.png`` with ``<id>.csv``; refused card members come out as errors. Loose files are one card
    each, except that with ``pair_files`` (a dual model is loaded) a PNG and a CSV of the same name
    are one card.

    Raises:
        ApiError: 413 past ``limit`` cards, 422 for a zip that cannot be opened at all.
    """
    count = 0

    def bump(n: int = 1) -> None:
        nonlocal count
        count += n
        if count > limit:
            raise ApiError(413, "too_many_cards", f"a batch holds at most {limit} cards; split the upload")

    loose: list[tuple[Upload, str | None, dict | None]] = []
    for upload in uploads:
        if is_zip(upload):
            continue
        if not upload.data:
            loose.append((upload, None, {"code": "empty_file", "message": "the file is empty"}))
            continue
        try:
            loose.append((upload, card_kind(upload), None))
        except ApiError as exc:
            loose.append((upload, None, exc.to_dict()))
    partner: dict[int, int] = {}
    if pair_files:
        by_stem: dict[str, dict[str, int]] = {}
        for i, (upload, kind, error) in enumerate(loose):
            if error is None and upload.stem:
                by_stem.setdefault(upload.stem, {}).setdefault(kind, i)
        for kinds in by_stem.values():
            if "png" in kinds and "csv" in kinds:
                partner[kinds["png"]] = kinds["csv"]
                partner[kinds["csv"]] = kinds["png"]

    done: set[int] = set()
    loose_index = {id(u): i for i, (u, _, _) in enumerate(loose)}
    for upload in uploads:
        if not is_zip(upload):
            i = loose_index[id(upload)]
            if i in done:
                continue
            _, kind, error = loose[i]
            bump()
            if error is not None:
                yield upload.stem, upload.filename, None, None, error
            elif i in partner:
                j = partner[i]
                done.add(j)
                png, csv = (loose[i][0], loose[j][0]) if kind == "png" else (loose[j][0], loose[i][0])
                yield png.stem, png.filename, png.data, csv.data, None
            else:
                yield upload.stem, upload.filename, (upload.data if kind == "png" else None), \
                    (upload.data if kind == "csv" else None), None
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
                    card_payload(card)  # the card has a readable file at all (else: why not)
                except CardError as exc:
                    yield card.id, card.name, None, None, {"code": "invalid_card", "message": str(exc)}
                    continue
                yield card.id, card.name, card.png, card.csv, None
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
    # One queue per model kind: each card goes to the model that reads it (serving.routing).
    pending: dict[str, list[tuple[int, Any]]] = {}

    def flush(kind: str) -> None:
        items = pending.pop(kind, [])
        if not items:
            return
        predictor = st.models.get(kind)
        with Timer() as t:
            probs = predictor.predict(ModelSet.stack([x for _, x in items]))
        st.metrics.inference.observe(t.seconds)
        for (index, _), row in zip(items, probs):
            body = predictor.result(row, top_k)
            st.metrics.predictions.labels(label=body["label"]).inc()
            results[index].update(body)
            results[index]["model"] = predictor.model_id

    cards = _iter_batch_cards(uploads, st.config.max_batch_cards, pair_files=st.models.get("dual") is not None)
    for card_id, filename, png, csv, error in cards:
        entry: dict[str, Any] = {"id": card_id, "file": filename}
        results.append(entry)
        if error is None:
            try:
                predictor, used = _route(png, csv)
                entry["kind"] = used
                if isinstance(predictor, SeriesPredictor):
                    x, _ = _prepare_series(predictor, png, csv, include_input=False)
                else:
                    x, _ = _prepare(png if used == "png" else csv, used, False, predictor)
                pending.setdefault(predictor.kind, []).append((len(results) - 1, x))
                if len(pending[predictor.kind]) >= predictor.max_batch:
                    flush(predictor.kind)
            except ApiError as exc:
                error = exc.to_dict()
        if error is not None:
            entry["error"] = error
            st.metrics.errors.labels(kind=error["code"]).inc()
    for kind in list(pending):
        flush(kind)
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
