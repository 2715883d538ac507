"""Every error is JSON ``{"error", "detail"}``: clients never parse an HTML error page."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge

log = logging.getLogger("app.errors")
# (error, detail) of a failure the server did not foresee; Gunicorn's own 500 says it too.
INTERNAL_ERROR = ("internal_error", "the server failed to handle this request")
# (error, detail) of a request that is not HTTP, as Gunicorn and the pod's nginx say it too.
NOT_HTTP = ("bad_request", "the request could not be read as HTTP")


def error_name(reason: str) -> str:
    """An HTTP reason phrase as an ``error`` tag: "Not Found" -> "not_found"."""
    return reason.lower().replace(" ", "_")


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def error_response(status: int, error: str, detail: str) -> tuple[Response, int]:
    return jsonify(error=error, detail=detail), status


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api(exc: ApiError) -> tuple[Response, int]:
        return error_response(exc.status, exc.error, exc.detail)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> tuple[Response, int]:
        limit = app.config["MAX_CONTENT_LENGTH"]
        if request.content_length is not None and request.content_length <= limit:
            # Werkzeug's form limits refuse it, not the body's size: the same exception.
            parts, memory = app.config["MAX_FORM_PARTS"], app.config["MAX_FORM_MEMORY_SIZE"]
            detail = f"a form may have at most {parts} parts, and fields other than files at most {memory} bytes"
            return error_response(413, "form_too_large", detail)
        return error_response(413, "file_too_large", f"request bodies are limited to {limit} bytes")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        response, status = error_response(exc.code or 500, error_name(exc.name or "error"), exc.description or "")
        # The exception's own headers but its HTML Content-Type: a 405's Allow (RFC 9110), say.
        response.headers.extend((k, v) for k, v in exc.get_headers() if k.lower() != "content-type")
        return response, status

    @app.errorhandler(ClientDisconnected)
    def _disconnected(exc: ClientDisconnected) -> tuple[Response, int]:
        # Werkzeug reports a body read that timed out (UPLOAD_IDLE_SECONDS or UPLOAD_DEADLINE_SECONDS,
        # app/gunicorn_worker.py) as a disconnect; that client is still there and should hear why.
        if isinstance(exc.__context__, TimeoutError):
            return error_response(408, "upload_timeout", "the request body did not arrive in time; send it again")
        return _http(exc)

    @app.errorhandler(ParseException)
    def _unparsable(exc: ParseException) -> tuple[Response, int]:
        # Gunicorn parses a chunked body's trailer fields only as the app reads the body, and
        # raises there ("Trailer: x" is one a trailer may not hold): the client's error, not ours.
        return error_response(400, *NOT_HTTP)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error", extra={"event": "unhandled_error"})
        return error_response(500, *INTERNAL_ERROR)
