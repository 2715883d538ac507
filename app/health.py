"""Liveness and readiness: Kubernetes restarts on the first, routes traffic on the second."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from app.inference import Classifier

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> Response:
    # Alive while the process serves, even without a model: a restart would not bring one.
    # model_loaded says which, for clients that read /health alone (the reference ones do).
    classifier: Classifier = current_app.extensions["classifier"]
    return jsonify(
        status="healthy", model_loaded=classifier.ready, service_version=current_app.config["SERVICE_VERSION"]
    )


@bp.get("/ready")
def ready() -> tuple[Response, int]:
    classifier: Classifier = current_app.extensions["classifier"]
    if classifier.ready:
        return jsonify(ready=True, model_version=classifier.version, engine=classifier.engine), 200
    return jsonify(ready=False, reason=classifier.error or "the model is still loading"), 503
