"""The OpenAPI document is valid OpenAPI 3 and describes what the service really answers."""

from __future__ import annotations

import io
from typing import Any

import pytest
from flask.testing import FlaskClient
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from tests.conftest import jpeg_bytes
from tests.serving import schema_for


def check(spec: dict[str, Any], path: str, method: str, resp: Any) -> None:
    OAS30Validator(schema_for(spec, path, method, resp.status_code)).validate(resp.get_json())


def test_document_is_valid_openapi(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    validate(spec)
    assert spec["openapi"].startswith("3.")
    documented = set(spec["paths"])
    routed = {r.rule for r in client.application.url_map.iter_rules() if not r.rule.startswith(("/static", "/docs/"))}
    assert routed == documented  # every endpoint documented, nothing documented that is not served


def test_real_responses_match_the_document(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    check(spec, "/", "get", client.get("/", headers={"Accept": "application/json"}))
    check(spec, "/health", "get", client.get("/health"))
    check(spec, "/ready", "get", client.get("/ready"))
    check(spec, "/version", "get", client.get("/version"))
    ok = client.post("/predict", data={"file": (io.BytesIO(jpeg_bytes((1, 2, 3))), "a.jpg")})
    check(spec, "/predict", "post", ok)
    for bad in (b"", b"junk"):
        check(spec, "/predict", "post", client.post("/predict", data={"file": (io.BytesIO(bad), "a.jpg")}))
    feedback = client.post("/feedback", json={"feedback_token": ok.get_json()["feedback_token"], "label": "cat"})
    check(spec, "/feedback", "post", feedback)
    check(spec, "/feedback", "post", client.post("/feedback", json={"feedback_token": "x", "label": "cat"}))


@pytest.mark.parametrize("asset", ["swagger-ui.css", "swagger-ui-bundle.js"])
def test_swagger_ui_is_served_locally(client: FlaskClient, asset: str) -> None:
    page = client.get("/docs").get_data(as_text=True)
    assert f"/docs/assets/{asset}" in page and "https://" not in page
    assert client.get(f"/docs/assets/{asset}").status_code == 200
