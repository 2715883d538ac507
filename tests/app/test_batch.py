"""POST /predict/batch: a shelter's folder in one request, one answer per photo."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from openapi_schema_validator import OAS30Validator

from app import create_app
from tests.conftest import jpeg_bytes
from tests.serving import schema_for

GOOD_A, GOOD_B = jpeg_bytes((200, 60, 50), seed=1), jpeg_bytes((40, 70, 210), seed=2)
# (name, bytes, status, error) as /predict answers each alone
MIXED = [
    ("a.jpg", GOOD_A, 200, None),
    ("empty.jpg", b"", 400, "empty_file"),
    ("notes.pdf", b"%PDF-1.4 not a photo", 415, "not_an_image"),
    ("b.jpg", GOOD_B, 200, None),
    ("cut.jpg", jpeg_bytes((5, 5, 5), size=(120, 120))[:700], 422, "truncated"),
]


def post_batch(client: FlaskClient, files: list[tuple[str, bytes]]):  # type: ignore[no-untyped-def]
    form = {"file": [(io.BytesIO(data), name) for name, data in files]}
    return client.post("/predict/batch", data=form, content_type="multipart/form-data")


def metric(client: FlaskClient, prefix: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_each_photo_gets_its_own_answer_in_order_and_a_bad_one_fails_nothing(client: FlaskClient) -> None:
    resp = post_batch(client, [(name, data) for name, data, _, _ in MIXED])
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["count"] == len(MIXED) and body["failed"] == 3
    assert body["request_id"] == resp.headers["X-Request-ID"] and body["model_version"].startswith("tiny_cnn-")
    for (name, data, status, error), result in zip(MIXED, body["results"], strict=True):
        assert result["filename"] == name and result["status"] == status, result
        if error:
            assert result["error"] == error and result["detail"] and "prediction" not in result
            continue
        alone = client.post("/predict", data=data, content_type="image/jpeg").get_json()
        assert result["probabilities"] == alone["probabilities"] and result["prediction"] == alone["prediction"]
    ids = [r["request_id"] for r in body["results"] if r["status"] == 200]
    assert ids == [f"{body['request_id']}-0", f"{body['request_id']}-3"]


def test_every_photo_of_a_batch_can_be_given_feedback_once(client: FlaskClient) -> None:
    results = post_batch(client, [("a.jpg", GOOD_A), ("b.jpg", GOOD_B)]).get_json()["results"]
    for result in results:
        sent = client.post("/feedback", json={"feedback_token": result["feedback_token"], "label": "cat"})
        assert sent.status_code == 200 and sent.get_json()["request_id"] == result["request_id"]
    again = client.post("/feedback", json={"feedback_token": results[0]["feedback_token"], "label": "cat"})
    assert again.status_code == 409


def test_a_batch_counts_in_the_metrics_as_its_photos_would_alone(client: FlaskClient) -> None:
    post_batch(client, [(name, data) for name, data, _, _ in MIXED])
    assert metric(client, "predictions_total{") == 2
    assert metric(client, 'rejected_inputs_total{reason="empty"}') == 1
    assert metric(client, 'rejected_inputs_total{reason="not_an_image"}') == 1
    assert metric(client, 'rejected_inputs_total{reason="truncated"}') == 1
    assert metric(client, "model_inference_seconds_count") == 2
    assert metric(client, 'flask_http_request_duration_seconds_count{endpoint="api.predict_batch"') == 1


def test_a_batch_past_its_limits_gets_a_clear_error(tiny_model: Path, tmp_path: Path) -> None:
    app = create_app(
        {"MODEL_DIR": str(tiny_model), "FEEDBACK_DIR": str(tmp_path), "MAX_BATCH_FILES": 3, "MAX_UPLOAD_BYTES": 100_000}
    )
    client = app.test_client()
    assert post_batch(client, [("a.jpg", GOOD_A)] * 3).status_code == 200
    too_many = post_batch(client, [("a.jpg", GOOD_A)] * 4)
    assert too_many.status_code == 413 and too_many.get_json()["error"] == "too_many_files"
    assert "at most 3 photos" in too_many.get_json()["detail"]
    too_big = post_batch(client, [("a.jpg", b"\xff" * 60_000), ("b.jpg", b"\xff" * 60_000)])
    assert too_big.status_code == 413 and too_big.get_json()["error"] == "file_too_large"
    for nothing in (
        client.post("/predict/batch", data={"note": "x"}, content_type="multipart/form-data"),
        client.post("/predict/batch", data=GOOD_A, content_type="image/jpeg"),
    ):
        assert nothing.status_code == 400 and nothing.get_json()["error"] == "missing_file"
    assert metric(client, 'rejected_inputs_total{reason="too_many_files"}') == 1
    assert client.get("/predict/batch").status_code == 405


def test_no_model_means_503_for_the_whole_batch(tmp_path: Path) -> None:
    client = create_app({"MODEL_DIR": str(tmp_path / "none"), "FEEDBACK_DIR": str(tmp_path)}).test_client()
    resp = post_batch(client, [("a.jpg", GOOD_A)])
    assert resp.status_code == 503 and resp.get_json()["error"] == "model_unavailable"


def test_answers_match_the_openapi_document(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    for resp in (
        post_batch(client, [(name, data) for name, data, _, _ in MIXED]),
        post_batch(client, []),
    ):
        OAS30Validator(schema_for(spec, "/predict/batch", "post", resp.status_code)).validate(resp.get_json())


def test_logs_name_each_photo_by_its_request_id_never_its_file_name(
    client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    post_batch(client, [("whiskers-secret.jpg", GOOD_A), ("rex-secret.jpg", GOOD_B)])
    out = capsys.readouterr().out
    assert "secret" not in out
    predictions = [json.loads(line) for line in out.splitlines() if '"prediction"' in line and '"event"' in line]
    assert [p["request_id"][-2:] for p in predictions if p.get("event") == "prediction"] == ["-0", "-1"]
