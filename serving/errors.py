"""JSON errors for the HTTP API: ``{"error": {"code": ..., "message": ...}}`` with the right status.

Every error a client can cause is an :class:`ApiError` (or a werkzeug ``HTTPException``, mapped to
the same shape); anything unexpected becomes a JSON 500 and is logged with its traceback. No route
ever answers with an HTML error page.
"""

from __future__ import annotations

import logging

from flask import Flask, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# werkzeug's names for the statuses we can produce, as stable snake_case codes.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_card",
    429: "too_many_requests",
    500: "internal_error",
    503: "not_ready",
}


# A request refused before its body was read (too large, no token) has the rest of its body read
# and discarded, up to this many bytes, before the answer: an ordinary client sends the whole body
# before it reads, and would otherwise see a broken pipe instead of the 413/401. Beyond this the
# connection is closed with the answer and the client may see a reset.
DRAIN_LIMIT = 32 * 1024 * 1024


def drain_request_body(limit: int = DRAIN_LIMIT) -> None:
    """Read and discard what is left of the request body, up to ``limit`` bytes."""
    stream = request.environ.get("wsgi.input")
    if stream is None:
        return
    length = request.content_length
    remaining = min(length, limit) if length is not None else limit
    try:
        while remaining > 0:
            chunk = stream.read(min(1 << 16, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
    except (OSError, ValueError):  # client went away, or the server closed the stream
        pass


class ApiError(Exception):
    """An error to return to the client.

    Args:
        status: HTTP status (400, 401, 413, 415, 422, 503, ...).
        code: stable machine-readable code, e.g. ``"missing_file"``, ``"invalid_card"``.
        message: a sentence a person can act on.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_dict(self) -> dict:
        """The ``{"code", "message"}`` body of the error (also used per card in batch results)."""
        return {"code": self.code, "message": self.message}


def error_response(status: int, code: str, message: str):
    """A Flask JSON response in the error shape."""
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="cardsense"'
    return response


def register_error_handlers(app: Flask, on_error=None) -> None:
    """Install JSON handlers for :class:`ApiError`, every ``HTTPException`` and unexpected exceptions.

    Args:
        on_error: optional ``callable(code)`` told about every error response (metrics).
    """

    def report(code: str) -> None:
        if on_error is not None:
            on_error(code)

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        report(exc.code)
        # Refused before the body was read (401, 413): read it away so the client gets the answer.
        drain_request_body()
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = _HTTP_CODES.get(status, f"http_{status}")
        if status == 413:
            limit = request.max_content_length if has_request_context() else None
            length = request.content_length if has_request_context() else None
            if limit and length is not None and length <= limit:
                # Within the size limit: werkzeug refused the number of parts or a long form field.
                parts = app.config.get("MAX_FORM_PARTS")
                message = f"the request has too many parts or too long a form field (at most {parts} files per request)"
            else:
                message = "the upload is larger than this service accepts" + (f" ({limit:,} bytes)" if limit else "")
        else:
            message = exc.description or exc.name
        report(code)
        response = error_response(status, code, message)
        if status == 413 and has_request_context():
            drain_request_body()
            response.headers["Connection"] = "close"
        if status == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error while handling a request")
        report("internal_error")
        return error_response(500, "internal_error", "the service failed to handle this request; it has been logged")
