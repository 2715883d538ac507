"""``/predict``, ``/feedback`` and ``/version``: the contract older clients rely on."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from app.errors import ApiError
from app.feedback import FeedbackError, FeedbackTokens
from app.inference import Classifier
from app.observability import ServiceMetrics
from ml.images import ImageError

bp = Blueprint("api", __name__)
log = logging.getLogger("app.predict")

# Image problems → HTTP status: too big is 413, not a picture is 415, a broken one 422.
_IMAGE_STATUS = {
    "too_many_pixels": 413,
    "not_an_image": 415,
    "empty": 400,
    "truncated": 422,
    "unreadable": 422,
    "too_many_scans": 422,
}


def _classifier() -> Classifier:
    classifier: Classifier = current_app.extensions["classifier"]
    if not classifier.ready:
        raise ApiError(503, "model_unavailable", classifier.error or "the model is still loading")
    return classifier


def _metrics() -> ServiceMetrics:
    metrics: ServiceMetrics = current_app.extensions["service_metrics"]
    return metrics


def _whole_body(cache: bool) -> bytes:
    """The request body, refused with 413 when it is over the limit."""
    data = request.get_data(cache=cache)
    # A chunked body has no Content-Length to refuse up front, and Werkzeug stops reading it
    # at the limit without a word: a byte beyond the limit means it was too large. (Reading on
    # through Werkzeug's own limited stream would refuse a body of exactly the limit too.)
    if len(data) >= current_app.config["MAX_CONTENT_LENGTH"] and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
    return data


def _upload() -> bytes:
    """The photo: multipart field ``file``, or a raw ``image/*`` body."""
    if "file" in request.files:
        return request.files["file"].read()
    if request.mimetype.startswith("image/"):
        return _whole_body(cache=False)
    _metrics().rejected.labels("missing_file").inc()
    raise ApiError(400, "missing_file", "send the photo as multipart field 'file' or as a raw image/* body")


def _answer(classifier: Classifier, data: bytes, request_id: str) -> dict[str, Any]:
    """One photo's prediction, counted and logged; an unusable photo raises ApiError (counted too)."""
    metrics = _metrics()
    if not data:
        metrics.rejected.labels("empty").inc()
        raise ApiError(400, "empty_file", "the uploaded file has zero bytes")
    if current_app.config["FAULT_INJECTION"]:
        raise RuntimeError("fault injection is on (test configuration)")
    metrics.input_bytes.observe(len(data))
    try:
        result = classifier.predict(data)
    except ImageError as exc:
        metrics.rejected.labels(exc.reason).inc()
        raise ApiError(_IMAGE_STATUS.get(exc.reason, 422), exc.reason, exc.detail) from None
    version = classifier.version or ""
    metrics.predictions.labels(result.label).inc()
    metrics.confidence.labels(result.label).observe(result.confidence)
    if result.not_a_pet:
        metrics.not_a_pet.labels(result.label).inc()
    metrics.decode_seconds.observe(result.decode_seconds)
    metrics.inference_seconds.observe(result.inference_seconds)
    metrics.input_pixels.observe(result.pixels)
    tokens: FeedbackTokens = current_app.extensions["feedback_tokens"]
    body: dict[str, Any] = {
        "prediction": result.label,
        "predicted_class": result.label,
        "confidence": round(result.confidence, 6),
        "probabilities": {k: round(v, 6) for k, v in result.probabilities.items()},
        "not_a_pet": result.not_a_pet,
        "model_version": version,
        "request_id": request_id,
        "inference_time_ms": round((result.decode_seconds + result.inference_seconds) * 1000, 3),
        "feedback_token": tokens.issue(request_id, result.label, version),
    }
    log.info(
        "prediction",
        extra={
            "event": "prediction",
            "request_id": request_id,
            "class": result.label,
            "confidence": body["confidence"],
            "not_a_pet": result.not_a_pet,
            "model_version": version,
            "latency_ms": body["inference_time_ms"],
        },
    )
    return body


@bp.post("/predict")
def predict() -> Response:
    classifier = _classifier()
    return jsonify(_answer(classifier, _upload(), g.request_id))


@bp.post("/predict/batch")
def predict_batch() -> Response:
    """Several multipart ``file`` fields → one answer per photo, in order. A photo that cannot
    be classified gets its own error and the status /predict would have given it; the rest of
    the batch is answered all the same."""
    classifier = _classifier()
    files = request.files.getlist("file")
    limit = current_app.config["MAX_BATCH_FILES"]
    if not files:
        _metrics().rejected.labels("missing_file").inc()
        raise ApiError(400, "missing_file", "send the photos as multipart fields named 'file', one per photo")
    if len(files) > limit:
        _metrics().rejected.labels("too_many_files").inc()
        detail = f"a batch holds at most {limit} photos (MAX_BATCH_FILES), got {len(files)}"
        raise ApiError(413, "too_many_files", detail)
    results: list[dict[str, Any]] = []
    for i, upload in enumerate(files):
        item: dict[str, Any] = {"filename": upload.filename or ""}
        try:
            # Each photo has its own request id (the batch's, then its place), for its feedback token.
            item.update(status=200, **_answer(classifier, upload.read(), f"{g.request_id}-{i}"))
        except ApiError as exc:
            item.update(status=exc.status, error=exc.error, detail=exc.detail)
        results.append(item)
    return jsonify(
        request_id=g.request_id,
        model_version=classifier.version or "",
        count=len(results),
        failed=sum(r["status"] != 200 for r in results),
        results=results,
    )


def _json_object() -> Any:
    """The body parsed as JSON, or None where it is not JSON at all."""
    body = _whole_body(cache=True)  # cut short, a JSON body over the limit would read as malformed
    if not request.is_json:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # Flask's silent parsing lets RecursionError through: a 500
        return None


@bp.post("/feedback")
def feedback() -> Response:
    payload = _json_object()
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_json", 'send a JSON object {"feedback_token": "...", "label": "cat"|"dog"}')
    label = payload.get("label")
    classes = current_app.config["CLASSES"]
    if label not in classes:
        raise ApiError(422, "invalid_label", f"label must be one of {', '.join(classes)}")
    tokens: FeedbackTokens = current_app.extensions["feedback_tokens"]
    try:
        ticket = tokens.redeem(payload.get("feedback_token"))
    except FeedbackError as exc:
        raise ApiError(exc.status, exc.error, exc.detail) from None
    correct = ticket.prediction == label
    _metrics().feedback.labels(label, "correct" if correct else "incorrect").inc()
    log.info(
        "feedback",
        extra={"event": "feedback", "request_id": ticket.request_id, "class": label, "correct": correct},
    )
    return jsonify(accepted=True, correct=correct, request_id=ticket.request_id, model_version=ticket.model_version)


@bp.get("/version")
def version() -> Response:
    classifier: Classifier = current_app.extensions["classifier"]
    if classifier.release is None:
        raise ApiError(503, "model_unavailable", classifier.error or "no model loaded")
    card = classifier.release.card
    return jsonify(
        service_version=current_app.config["SERVICE_VERSION"],
        model_version=card["version"],
        architecture=card["architecture"],
        engine=classifier.engine,
        image_size=card["image_size"],
        classes=card["classes"],
        test_metrics={
            k: card["test_metrics"].get(k) for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "n")
        },
        git_commit=card.get("git_commit", "unknown"),
        mlflow_run_id=card.get("mlflow_run_id", "unknown"),
        created_at=card.get("created_at", "unknown"),
    )
