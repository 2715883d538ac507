"""Every endpoint and every bad input, through Flask's test client."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from app import SECURITY_HEADERS, create_app
from app.settings import Settings, SettingsError
from tests.conftest import jpeg_bytes, many_scans_jpeg
from tests.helpers import save_tiny_release
from tests.serving import encode


def post_file(client: FlaskClient, data: bytes, name: str = "photo.jpg"):  # type: ignore[no-untyped-def]
    import io

    return client.post("/predict", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def test_landing_page_for_browsers_and_json_for_clients(client: FlaskClient) -> None:
    html = client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert html.status_code == 200 and html.mimetype == "text/html"
    page = html.get_data(as_text=True)
    assert 'type="file"' in page and "/docs" in page and "/metrics" in page
    assert 'data-image-size="32"' in page  # the model's input size, for the page's shrinking
    assert "http://" not in page and "https://" not in page  # no CDN: works with no internet
    info = client.get("/", headers={"Accept": "application/json"}).get_json()
    assert info["name"] == "Cats vs Dogs classifier"
    assert {"version", "model_version", "endpoints"} <= set(info)
    assert client.get("/").get_json()["name"] == "Cats vs Dogs classifier"  # curl's */* gets JSON


def test_health_and_ready(client: FlaskClient) -> None:
    assert client.get("/health").get_json()["status"] == "healthy"
    assert client.get("/health").get_json()["model_loaded"] is True  # what the reference clients read
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.get_json()["ready"] is True and ready.get_json()["model_version"].startswith("tiny_cnn-")


def test_predict_contract(client: FlaskClient) -> None:
    resp = post_file(client, jpeg_bytes((200, 60, 50), size=(64, 48)))
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["prediction"] in ("cat", "dog") and body["predicted_class"] == body["prediction"]
    assert body["probabilities"]["cat"] + body["probabilities"]["dog"] == pytest.approx(1.0, abs=1e-5)
    assert body["confidence"] == max(body["probabilities"].values())
    assert body["request_id"] == resp.headers["X-Request-ID"]
    assert body["inference_time_ms"] > 0 and body["model_version"] and body["feedback_token"]


def test_raw_image_body_and_incoming_request_id(client: FlaskClient) -> None:
    resp = client.post(
        "/predict", data=jpeg_bytes((1, 2, 3)), content_type="image/jpeg", headers={"X-Request-ID": "abc-123"}
    )
    assert resp.status_code == 200
    assert resp.get_json()["request_id"] == "abc-123" == resp.headers["X-Request-ID"]
    bad = client.post(
        "/predict", data=jpeg_bytes((1, 2, 3)), content_type="image/jpeg", headers={"X-Request-ID": "<script>"}
    )
    assert bad.headers["X-Request-ID"] != "<script>"


def bomb_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        (b"", 400, "empty_file"),
        (b"%PDF-1.4 definitely not a photo", 415, "not_an_image"),
        (jpeg_bytes((5, 5, 5), size=(120, 120))[:700], 422, "truncated"),
        (b"BM" + b"\x00" * 60, 422, "unreadable"),  # a BMP header with nothing behind it
        (bomb_png(60000, 60000), 413, "too_many_pixels"),
        (many_scans_jpeg(500), 422, "too_many_scans"),  # libjpeg-turbo's LJT-01-003
        (b"\x00" * 2_100_000, 413, "file_too_large"),
    ],
)
def test_bad_uploads_get_a_clear_4xx(client: FlaskClient, data: bytes, status: int, error: str) -> None:
    resp = post_file(client, data)
    assert resp.status_code == status, resp.get_json()
    body = resp.get_json()
    assert body["error"] == error and body["detail"]
    assert post_file(client, jpeg_bytes((9, 9, 9))).status_code == 200  # and the worker keeps serving


def test_unsupported_format_is_refused(client: FlaskClient) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    resp = post_file(client, svg, "x.svg")
    assert resp.status_code == 415


def test_missing_field_wrong_method_unknown_path(client: FlaskClient) -> None:
    resp = client.post("/predict", data={"other": "x"}, content_type="multipart/form-data")
    assert resp.status_code == 400 and resp.get_json()["error"] == "missing_file"
    assert client.post("/predict", json={"file": "x"}).status_code == 400
    wrong = client.get("/predict")
    assert wrong.status_code == 405 and wrong.get_json()["error"] == "method_not_allowed"
    assert set(wrong.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}  # RFC 9110: what would do
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and missing.is_json


def awkward_images() -> dict[str, bytes]:
    rgb = Image.effect_mandelbrot((96, 64), (-2, -1.5, 1, 1.5), 30).convert("RGB")
    frames = [Image.new("RGB", (40, 40), c) for c in ((250, 0, 0), (0, 0, 250))]
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "gif_animated": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "cmyk_jpeg": encode(rgb.convert("CMYK"), "JPEG"),
        "grayscale": encode(rgb.convert("L"), "PNG"),
        "rgba": encode(rgb.convert("RGBA"), "PNG"),
        "palette": encode(rgb.convert("P"), "PNG"),
        "png16": encode(Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)), "PNG"),
        "webp": encode(rgb, "WEBP"),
        "heic": encode(rgb, "HEIF", quality=60),  # an iPhone's own format
        "exif_rotated": encode(rgb, "JPEG", exif=exif.tobytes()),
    }


def test_forms_past_werkzeugs_limits_are_told_which_limit(client: FlaskClient) -> None:
    """Werkzeug refuses a form of too many parts, or a text field too large, with the exception
    an oversized body raises: the answer must not blame the photo's size."""
    many = b"".join(b'--B\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i for i in range(1001))
    note = {"note": "x" * 500_001, "file": (io.BytesIO(jpeg_bytes((1, 2, 3))), "p.jpg")}
    for resp in (
        client.post("/predict", data=many + b"--B--\r\n", content_type="multipart/form-data; boundary=B"),
        client.post("/predict", data=note, content_type="multipart/form-data"),
    ):
        assert resp.status_code == 413 and resp.get_json()["error"] == "form_too_large", resp.get_json()
        assert "at most 1000 parts" in resp.get_json()["detail"]


@pytest.mark.parametrize("kind", sorted(awkward_images()))
def test_awkward_but_valid_images_are_classified(client: FlaskClient, kind: str) -> None:
    resp = post_file(client, awkward_images()[kind])
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["prediction"] in ("cat", "dog")


def test_feedback_correct_incorrect_duplicate(client: FlaskClient) -> None:
    body = post_file(client, jpeg_bytes((1, 2, 3))).get_json()
    other = "dog" if body["prediction"] == "cat" else "cat"
    ok = client.post("/feedback", json={"feedback_token": body["feedback_token"], "label": other})
    assert ok.status_code == 200 and ok.get_json()["correct"] is False
    assert ok.get_json()["request_id"] == body["request_id"]
    again = client.post("/feedback", json={"feedback_token": body["feedback_token"], "label": other})
    assert again.status_code == 409
    second = post_file(client, jpeg_bytes((1, 2, 4))).get_json()
    right = client.post("/feedback", json={"feedback_token": second["feedback_token"], "label": second["prediction"]})
    assert right.get_json()["correct"] is True
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'feedback_total{{class="{other}",result="incorrect"}} 1.0' in metrics
    assert f'feedback_total{{class="{second["prediction"]}",result="correct"}} 1.0' in metrics


@pytest.mark.parametrize(
    ("payload", "status", "error"),
    [
        ("{not json", 400, "invalid_json"),
        ('["a list"]', 400, "invalid_json"),
        ("[" * 100_000, 400, "invalid_json"),  # too deep for Python's parser: a RecursionError
        ('{"a": ' * 50_000 + "1" + "}" * 50_000, 400, "invalid_json"),
        ('{"feedback_token": "x", "label": "hamster"}', 422, "invalid_label"),
        ('{"label": "cat"}', 400, "invalid_request"),
        ('{"feedback_token": "forged.token.value", "label": "cat"}', 403, "invalid_token"),
        ('{"feedback_token": "a.b\\ud800", "label": "cat"}', 403, "invalid_token"),  # a lone surrogate: was a 500
    ],
)
def test_bad_feedback(client: FlaskClient, payload: str, status: int, error: str) -> None:
    resp = client.post("/feedback", data=payload, content_type="application/json")
    assert resp.status_code == status
    assert resp.get_json()["error"] == error


def test_token_from_another_key_or_expired(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = create_app({"MODEL_DIR": str(tiny_model), "FEEDBACK_SECRET": "a" * 32, "FEEDBACK_DIR": str(tmp_path / "a")})
    b = create_app({"MODEL_DIR": str(tiny_model), "FEEDBACK_SECRET": "b" * 32, "FEEDBACK_DIR": str(tmp_path / "b")})
    token = post_file(a.test_client(), jpeg_bytes((1, 1, 1))).get_json()["feedback_token"]
    assert b.test_client().post("/feedback", json={"feedback_token": token, "label": "cat"}).status_code == 403
    c = create_app(
        {
            "MODEL_DIR": str(tiny_model),
            "FEEDBACK_SECRET": "a" * 32,
            "FEEDBACK_TTL_SECONDS": 60,
            "FEEDBACK_DIR": str(tmp_path / "c"),
        }
    )
    import itsdangerous.timed

    real = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real() + 3600)
    resp = c.test_client().post("/feedback", json={"feedback_token": token, "label": "cat"})
    assert resp.status_code == 410 and resp.get_json()["error"] == "token_expired"


def test_version_is_the_model_card(client: FlaskClient, tiny_model: Path) -> None:
    card = json.loads((tiny_model / "model.json").read_text())
    body = client.get("/version").get_json()
    assert body["model_version"] == card["version"] and body["architecture"] == "tiny_cnn"
    assert body["mlflow_run_id"] == "test" and "accuracy" in body["test_metrics"]


@pytest.mark.parametrize(("threshold", "flagged"), [(-1.0, True), (3.0, False), (None, None)])
def test_a_photo_that_is_no_pet_is_flagged_and_counted_and_still_classified(
    tmp_path: Path, threshold: float | None, flagged: bool | None
) -> None:
    save_tiny_release(tmp_path / "model", not_a_pet_threshold=threshold)  # None: a model without the detector
    client = create_app({"MODEL_DIR": str(tmp_path / "model"), "FEEDBACK_DIR": str(tmp_path / "seen")}).test_client()
    body = post_file(client, jpeg_bytes((240, 240, 240))).get_json()
    assert body["not_a_pet"] is flagged
    assert body["prediction"] in ("cat", "dog")  # unchanged for clients that do not read the flag
    batch = client.post(
        "/predict/batch",
        data={"file": [(io.BytesIO(jpeg_bytes((9, 9, 9))), "a.jpg")]},
        content_type="multipart/form-data",
    ).get_json()
    assert batch["results"][0]["not_a_pet"] is flagged
    text = client.get("/metrics").get_data(as_text=True)
    counted = sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("not_a_pet_total{"))
    assert counted == (2 if flagged else 0)


def test_metrics_count_predictions_rejections_and_model(client: FlaskClient) -> None:
    for _ in range(3):
        post_file(client, jpeg_bytes((1, 2, 3)))
    post_file(client, b"garbage")
    text = client.get("/metrics").get_data(as_text=True)
    total = sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("predictions_total{"))
    assert total == 3
    assert 'rejected_inputs_total{reason="not_an_image"} 1.0' in text
    assert "model_ready 1.0" in text and 'model_info{architecture="tiny_cnn",engine="eager"' in text
    assert re.search(r'^model_test_accuracy\{version="tiny_cnn-[0-9a-f]{12}"\} 0\.5$', text, re.M), text
    for name in (
        "prediction_confidence_bucket",
        "model_inference_seconds_bucket",
        "image_decode_seconds_bucket",
        "input_image_bytes_bucket",
        "input_image_pixels_bucket",
        "flask_http_request_duration_seconds_bucket",
    ):
        assert name in text


def test_the_onnx_graph_serves_the_same_answers(
    client: FlaskClient, tiny_model: Path, tiny_package: Path, tmp_path: Path
) -> None:
    compiled = create_app(
        {"MODEL_DIR": str(tiny_model), "MODEL_PACKAGE": str(tiny_package), "FEEDBACK_DIR": str(tmp_path)}
    )
    fast = compiled.test_client()
    assert fast.get("/ready").get_json()["engine"] == "onnxruntime"
    assert fast.get("/version").get_json()["engine"] == "onnxruntime"
    assert 'engine="onnxruntime"' in fast.get("/metrics").get_data(as_text=True)
    assert client.get("/ready").get_json()["engine"] == "eager"
    for i, color in enumerate([(200, 60, 50), (40, 70, 210), (90, 90, 90)]):
        photo = jpeg_bytes(color, size=(300, 200), seed=i)
        a, b = post_file(fast, photo).get_json(), post_file(client, photo).get_json()
        assert a["prediction"] == b["prediction"]
        assert a["probabilities"]["cat"] == pytest.approx(b["probabilities"]["cat"], abs=1e-5)


def test_a_graph_of_other_weights_falls_back_to_eager_with_one_log_line(
    tiny_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.helpers import save_tiny_release

    save_tiny_release(tmp_path / "retrained", seed=7)
    capsys.readouterr()
    app = create_app(
        {
            "MODEL_DIR": str(tmp_path / "retrained"),
            "MODEL_PACKAGE": str(tiny_package),
            "FEEDBACK_DIR": str(tmp_path / "seen"),
        }
    )
    client = app.test_client()
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.get_json()["engine"] == "eager"
    assert post_file(client, jpeg_bytes((1, 2, 3))).status_code == 200
    refused = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"graph_refused"' in line]
    assert len(refused) == 1 and refused[0]["level"] == "WARNING" and "pet.weights_sha256" in refused[0]["message"]


def test_without_pytorch_a_refused_graph_leaves_the_service_unready_with_the_reason(
    tiny_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_tiny_release(tmp_path / "retrained", seed=7)
    monkeypatch.setitem(sys.modules, "torch", None)  # as in the image: `import torch` fails
    for graph, why in (
        (str(tiny_package), r"the ONNX graph was refused \(.*pet.weights_sha256"),
        ("", "no ONNX graph was given"),
    ):
        app = create_app(
            {"MODEL_DIR": str(tmp_path / "retrained"), "MODEL_PACKAGE": graph, "FEEDBACK_DIR": str(tmp_path)}
        )
        ready = app.test_client().get("/ready")
        assert ready.status_code == 503
        assert re.search(why + ".*PyTorch, for the eager model, is not installed", json.dumps(ready.get_json()))
        assert post_file(app.test_client(), jpeg_bytes((1, 2, 3))).status_code == 503


# A model card edited by hand, and what /ready says of it.
CARD_DAMAGE: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "no version": (lambda card: card.pop("version"), "version: Field required"),
    "image_size as text": (lambda card: card.update(image_size="256"), "image_size: Input should be a valid integer"),
    "accuracy null": (lambda card: card["test_metrics"].update(accuracy=None), "test_metrics.accuracy"),
    "two means": (lambda card: card["normalization"].update(mean=[0.5, 0.5]), "normalization.mean"),
    "weights as text": (lambda card: card.update(weights="model.safetensors"), "weights: Input should be"),
    "too small for the network": (lambda card: card.update(image_size=2), "failed its warm-up inference"),
}


@pytest.mark.parametrize("problem", ["missing", "corrupt", *CARD_DAMAGE])
def test_no_model_means_not_ready_but_alive(
    tiny_model: Path, tmp_path: Path, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model missing, altered or with a broken card: alive, not ready, with the reason."""
    model_dir, reason = tmp_path / "model", {"missing": "not found", "corrupt": "sha256"}.get(problem, "")
    if problem != "missing":
        shutil.copytree(tiny_model, model_dir)
    if problem == "corrupt":
        (model_dir / "model.safetensors").write_bytes(b"\x00" * 100)
    if problem in CARD_DAMAGE:
        damage, reason = CARD_DAMAGE[problem]
        card = json.loads((model_dir / "model.json").read_text())
        damage(card)
        (model_dir / "model.json").write_text(json.dumps(card))
    app = create_app({"MODEL_DIR": str(model_dir), "FEEDBACK_DIR": str(tmp_path / "seen")})
    client = app.test_client()
    assert client.get("/health").status_code == 200
    assert client.get("/health").get_json()["model_loaded"] is False
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.get_json()["ready"] is False, ready.get_json()
    assert reason in ready.get_json()["reason"], ready.get_json()
    assert client.get("/version").status_code == 503
    assert post_file(client, jpeg_bytes((1, 2, 3))).status_code == 503
    assert "model_ready 0.0" in client.get("/metrics").get_data(as_text=True)
    page = client.get("/", headers={"Accept": "text/html"})  # still opens, and sends photos as they are
    assert page.status_code == 200 and 'data-image-size=""' in page.get_data(as_text=True)
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"model_load_failed"' in line]
    assert len(logged) == 1 and logged[0]["level"] == "ERROR"


def test_logs_are_json_and_never_hold_file_names(client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    post_file(client, jpeg_bytes((1, 2, 3)), name="secret-owner-name.jpg")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    events = {line.get("event") for line in lines}
    assert {"access", "prediction"} <= events
    access = next(line for line in lines if line.get("event") == "access")
    assert {"request_id", "method", "path", "status", "latency_ms"} <= set(access)
    assert all("secret-owner-name" not in json.dumps(line) for line in lines)


def test_access_lines_name_routes_never_a_clients_own_text(
    client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    sent = [
        ("GET", "/shelter/Jane-Doe-555-0100?pet=Whiskers"),  # 404: no route
        ("GET", "/docs/assets/Jane-Doe.js"),  # 404 under a route with a variable part
        ("GET", "/predict?owner=Jane-Doe"),  # 405 on a known path
        ("JANEDOE", "/health"),  # a method of the client's own
        ("GET", "/health?owner=Jane-Doe"),
    ]
    statuses = [client.open(path, method=method).status_code for method, path in sent]
    assert statuses == [404, 404, 405, 405, 200]
    out = capsys.readouterr().out
    assert "Jane" not in out and "Whiskers" not in out
    access = [json.loads(line) for line in out.splitlines() if '"event": "access"' in line]
    assert [(a["method"], a["path"], a["status"]) for a in access] == [
        ("GET", "<unknown>", 404),
        ("GET", "/docs/assets/<path:filename>", 404),
        ("GET", "/predict", 405),
        ("<other>", "/health", 405),
        ("GET", "/health", 200),
    ]


def test_fault_switch_gives_json_500(tiny_model: Path, tmp_path: Path) -> None:
    app: Flask = create_app({"MODEL_DIR": str(tiny_model), "FAULT_INJECTION": True, "FEEDBACK_DIR": str(tmp_path)})
    resp = post_file(app.test_client(), jpeg_bytes((1, 2, 3)))
    assert resp.status_code == 500 and resp.get_json()["error"] == "internal_error"
    assert SECURITY_HEADERS.items() <= dict(resp.headers).items()  # an unhandled error's answer too


def test_every_answer_carries_the_security_headers(client: FlaskClient) -> None:
    """Pages, JSON, static files and errors alike (tests/app/test_browser.py checks that
    both pages work under the policy in Chromium)."""
    answers = [
        client.get("/", headers={"Accept": "text/html"}),
        client.get("/docs"),
        client.get("/static/app.js"),
        client.get("/health"),
        post_file(client, jpeg_bytes((1, 2, 3))),
        post_file(client, b"not a photo"),
        client.get("/predict"),
        client.get("/no/such/page"),
        client.post("/predict", data=b"x" * (client.application.config["MAX_UPLOAD_BYTES"] + 1)),
    ]
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 200, 415, 405, 404, 413]
    for resp in answers:
        assert SECURITY_HEADERS.items() <= dict(resp.headers).items(), (resp.request.path, resp.headers)


# A fresh process, as a Gunicorn worker starts: nothing large freed yet to move glibc's thresholds.
_FAULTS_SCRIPT = """
import io, resource, sys
from PIL import Image
from app.inference import Classifier
photos = []
for i in range(12):
    buf = io.BytesIO()
    Image.new("RGB", (180, 180), (20 * i, 90, 200 - 10 * i)).save(buf, "JPEG")
    photos.append(buf.getvalue())
classifier = Classifier(sys.argv[1], threads=1)
for photo in photos[:2]:
    classifier.predict(photo)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for photo in photos:
    classifier.predict(photo)
print(classifier.keeps_freed_memory, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / len(photos))
"""


def test_a_prediction_reuses_the_memory_the_last_one_freed() -> None:
    """The release model's activations are reused, not given back to the kernel and faulted in
    again on every request (4,600 page faults a prediction before, a sixth of the CPU time)."""
    from tests.serving import RELEASE, run_python

    run = run_python(_FAULTS_SCRIPT, str(RELEASE))
    tuned, faults = run.stdout.split()
    assert tuned == "True"
    assert float(faults) < 50, f"{faults} page faults per prediction"


def test_no_origin_may_call_the_api_from_a_browser_unless_allowed(client: FlaskClient) -> None:
    preflight = client.options(
        "/predict", headers={"Origin": "https://adopt.example", "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert (
        "Access-Control-Allow-Origin" not in client.get("/version", headers={"Origin": "https://adopt.example"}).headers
    )


def test_an_allowed_origin_may_call_the_api_and_read_its_request_id(tiny_model: Path, tmp_path: Path) -> None:
    allowed = "https://adopt.example"
    origins = (allowed, "http://127.0.0.1:3000")
    app = create_app({"MODEL_DIR": str(tiny_model), "FEEDBACK_DIR": str(tmp_path), "CORS_ORIGINS": origins})
    client = app.test_client()
    preflight = client.options(
        "/predict",
        headers={
            "Origin": allowed,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-request-id",
        },
    )
    assert preflight.status_code == 200 and preflight.headers["Access-Control-Allow-Origin"] == allowed
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    answer = client.post(
        "/predict", data={"file": (io.BytesIO(jpeg_bytes((200, 120, 80))), "cat.jpg")}, headers={"Origin": allowed}
    )
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == allowed
    assert "X-Request-ID" in answer.headers["Access-Control-Expose-Headers"]
    assert "Origin" in answer.headers["Vary"]  # a shared cache keeps one answer per origin
    other = client.post(
        "/predict",
        data={"file": (io.BytesIO(jpeg_bytes((200, 120, 80))), "cat.jpg")},
        headers={"Origin": "https://evil.example"},
    )
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers
    assert "Access-Control-Allow-Origin" not in client.get("/metrics", headers={"Origin": allowed}).headers


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("adopt.example", "CORS_ORIGINS: 'adopt.example' is not an origin"),
        ("https://a.example/path", "is not an origin"),
    ],
)
def test_an_origin_that_is_no_origin_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    monkeypatch.setenv("CORS_ORIGINS", value)
    with pytest.raises(SettingsError, match=re.escape(says)):
        Settings.from_env()
