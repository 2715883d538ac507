"""The inference service: ``create_app`` builds it, Gunicorn serves it (gunicorn.conf.py)."""

from __future__ import annotations

import logging
import re
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request
from flask_cors import CORS

from app import errors
from app.api import bp as api_bp
from app.feedback import FeedbackTokens
from app.health import bp as health_bp
from app.inference import Classifier
from app.observability import METRICS_PATH, configure_logging, init_metrics
from app.pages import bp as pages_bp
from app.pages import docs_bp, load_openapi
from app.settings import Settings
from ml.card import CLASSES

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# What an access line may say of a request's method: these, or "<other>" for a client's own word.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
UNKNOWN_PATH, OTHER_METHOD = "<unknown>", "<other>"
# Every answer's own hardening. The two pages load scripts and styles from this server only
# (no inline script), show the chosen photo from a blob: URL, and Swagger UI draws its icons
# from data: URLs; nothing may frame them, nor learn from a Referer where staff came from.
# The API a browser page on another origin may call (CORS_ORIGINS); regexes on the path.
CORS_RESOURCES = r"^/(predict|feedback|version|health|ready)$"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
access_log = logging.getLogger("app.access")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the service. ``config`` overrides the environment's settings (tests use it)."""
    configure_logging()
    app = Flask(__name__)
    app.config.from_mapping(Settings.from_env().to_flask())
    app.config.update(config or {})
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_UPLOAD_BYTES"]
    app.config["CLASSES"] = list(CLASSES)
    app.json.sort_keys = False  # type: ignore[attr-defined]

    classifier = Classifier(app.config["MODEL_DIR"], app.config["TORCH_THREADS"], app.config["MODEL_PACKAGE"])
    seen = Path(app.config["FEEDBACK_DIR"] or tempfile.mkdtemp(prefix="pet-feedback-"))
    service_metrics = init_metrics(app)
    app.extensions.update(
        classifier=classifier,
        service_metrics=service_metrics,
        feedback_tokens=FeedbackTokens(app.config["FEEDBACK_SECRET"], app.config["FEEDBACK_TTL_SECONDS"], seen),
        openapi=load_openapi(app.config["SERVICE_VERSION"]),
    )
    publish_model_state(app)

    for bp in (pages_bp, docs_bp, health_bp, api_bp):
        app.register_blueprint(bp)
    if app.config["CORS_ORIGINS"]:
        # A front end on another origin calls the API, never /metrics or the pages.
        CORS(app, resources=CORS_RESOURCES, origins=list(app.config["CORS_ORIGINS"]), expose_headers=["X-Request-ID"])
    errors.init_app(app)
    _request_hooks(app)
    return app


def publish_model_state(app: Flask) -> None:
    """Set this process's ``model_info`` and ``model_ready``. Gunicorn's workers call it again
    after the fork (gunicorn.conf.py): prometheus_client starts a forked process's samples at 0,
    so a worker would otherwise report model_ready 0 beside a master's 1, and /metrics, which
    takes the minimum over live processes, would read 0 while /ready says true."""
    classifier, service_metrics = app.extensions["classifier"], app.extensions["service_metrics"]
    if classifier.release is not None:
        card = classifier.release.card
        service_metrics.model_info.labels(
            card["version"], card.get("mlflow_run_id", ""), card["architecture"], classifier.engine
        ).set(1)
        service_metrics.model_test_accuracy.labels(card["version"]).set(card["test_metrics"]["accuracy"])
    service_metrics.model_ready.set(1 if classifier.ready else 0)


def _request_hooks(app: Flask) -> None:
    in_flight = app.extensions["service_metrics"].in_flight

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        g.started = time.perf_counter()
        g.in_flight = request.path != METRICS_PATH  # the scrape is not traffic
        if g.in_flight:
            in_flight.inc()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.headers.update(SECURITY_HEADERS)
        g.status = response.status_code  # for the access line written at teardown
        return response

    # A path is logged as the route it matched (a template where it has a variable part), so
    # a client's own text never reaches the logs: an unknown path is "<unknown>".
    routes = {rule.rule for rule in app.url_map.iter_rules()}

    @app.teardown_request
    def _log(_exc: BaseException | None) -> None:
        if "started" not in g:
            return
        if g.in_flight:
            in_flight.dec()
        rule = request.url_rule.rule if request.url_rule else None  # None too for 404 and 405
        path = rule or (request.path if request.path in routes else UNKNOWN_PATH)
        # Only what is safe to keep: no query strings, file names, image bytes or client text.
        access_log.info(
            "request",
            extra={
                "event": "access",
                "request_id": g.request_id,
                "method": request.method if request.method in HTTP_METHODS else OTHER_METHOD,
                "path": path,
                "status": g.get("status", None),
                "latency_ms": round((time.perf_counter() - g.started) * 1000, 3),
            },
        )
