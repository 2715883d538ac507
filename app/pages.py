"""The landing page (JSON for API clients), the OpenAPI document and Swagger UI, all local."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, Response, current_app, jsonify, render_template, request
from swagger_ui_bundle import swagger_ui_path

from app.inference import Classifier

bp = Blueprint("pages", __name__)
# Swagger UI's files come from the swagger-ui-bundle wheel: nothing is fetched from a CDN.
docs_bp = Blueprint("docs", __name__, static_folder=swagger_ui_path, static_url_path="/docs/assets")

OPENAPI_FILE = Path(__file__).with_name("openapi.yaml")
ENDPOINTS = {
    "predict": "POST /predict",
    "predict_batch": "POST /predict/batch",
    "feedback": "POST /feedback",
    "version": "GET /version",
    "health": "GET /health",
    "ready": "GET /ready",
    "metrics": "GET /metrics",
    "openapi": "GET /openapi.json",
    "docs": "GET /docs",
}


def load_openapi(service_version: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(OPENAPI_FILE.read_text())
    spec["info"]["version"] = service_version
    return spec


@bp.get("/")
def index() -> Response | str:
    classifier: Classifier = current_app.extensions["classifier"]
    # Browsers rank text/html above */*; curl and API clients get JSON.
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
        size = classifier.release.image_size if classifier.release else ""  # the page shrinks photos to it
        return render_template(
            "index.html",
            model_version=classifier.version or "not loaded",
            image_size=size,
            batch_limit=current_app.config["MAX_BATCH_FILES"],  # the page sends a folder in such batches
            upload_limit=current_app.config["MAX_UPLOAD_BYTES"],
        )
    return jsonify(
        name="Cats vs Dogs classifier",
        version=current_app.config["SERVICE_VERSION"],
        model_version=classifier.version,
        endpoints=ENDPOINTS,
    )


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(current_app.extensions["openapi"])


@docs_bp.get("/docs")
def docs() -> str:
    return render_template("docs.html")
