"""JSON logs and Prometheus metrics.

Under Gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` is set before anything imports
prometheus_client, every worker writes its samples there, and ``/metrics`` sums them, so a
counter reads the same whichever worker answers. Without it (tests, ``flask run``) the app
keeps its metrics in its own registry.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics
from pythonjsonlogger.json import JsonFormatter

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is at the time (pytest and some runners swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: asctime, level, name, process, message, then the extras.

    The app's and Gunicorn's lines (gunicorn.conf.py) use it, and the pod's nginx writes its
    own in the same shape (deploy/k8s/app/nginx.conf). The time is RFC 3339 in UTC with
    milliseconds, as nginx writes it in a container: logging's default has no zone.
    """

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s", rename_fields={"levelname": "level"}
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def configure_logging(level: str = "INFO") -> None:
    """One JSON object per line on stdout, for every logger (idempotent)."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return  # already JSON: Gunicorn's logconfig_dict, or an earlier call
    handler = _StdoutHandler()
    handler.setFormatter(JsonLineFormatter())
    root.addHandler(handler)
    root.setLevel(level)


class ServiceMetrics:
    """The service's own metrics, beside the exporter's HTTP metrics."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry
        self.predictions = Counter("predictions_total", "Predictions served, by predicted class", ["class"], registry=r)
        self.confidence = Histogram(
            "prediction_confidence",
            "Confidence of the predicted class",
            ["class"],
            buckets=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0),
            registry=r,
        )
        self.inference_seconds = Histogram(
            "model_inference_seconds", "Model forward pass, one photo", buckets=LATENCY_BUCKETS, registry=r
        )
        self.decode_seconds = Histogram(
            "image_decode_seconds", "Decoding and resizing one upload", buckets=LATENCY_BUCKETS, registry=r
        )
        self.input_bytes = Histogram(
            "input_image_bytes",
            "Size of uploaded photos in bytes",
            buckets=(1e4, 5e4, 1e5, 5e5, 1e6, 2e6, 5e6, 1e7),
            registry=r,
        )
        self.input_pixels = Histogram(
            "input_image_pixels",
            "Size of uploaded photos in pixels",
            buckets=(1e4, 5e4, 1e5, 3e5, 1e6, 3e6, 1.2e7, 2.5e7, 5e7),
            registry=r,
        )
        self.not_a_pet = Counter(
            "not_a_pet_total",
            "Predictions flagged as showing neither a cat nor a dog, by the class still predicted",
            ["class"],
            registry=r,
        )
        self.rejected = Counter("rejected_inputs_total", "Uploads refused, by reason", ["reason"], registry=r)
        self.feedback = Counter(
            "feedback_total", "Staff feedback on predictions, by true class and result", ["class", "result"], registry=r
        )
        self.model_info = Gauge(
            "model_info",
            "The model being served (value is 1); engine: onnxruntime, or eager without a usable ONNX graph",
            ["version", "run_id", "architecture", "engine"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.model_test_accuracy = Gauge(
            "model_test_accuracy",
            "The served model's accuracy on the held-back test split (its model card): live accuracy's yardstick",
            ["version"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.model_ready = Gauge(
            "model_ready", "1 when the model is loaded and warmed up", multiprocess_mode="livemin", registry=r
        )
        self.in_flight = Gauge(
            "http_requests_in_flight", "Requests being served now", multiprocess_mode="livesum", registry=r
        )


# Where Prometheus scrapes; its own requests count as no traffic (HTTP metrics, in flight).
METRICS_PATH = "/metrics"


def init_metrics(app: Flask) -> ServiceMetrics:
    registry = CollectorRegistry(auto_describe=True)
    common = {"group_by": "endpoint", "excluded_paths": [f"^{METRICS_PATH}$"], "buckets": LATENCY_BUCKETS}
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        exporter: PrometheusMetrics = GunicornInternalPrometheusMetrics(
            app, path=METRICS_PATH, registry=registry, **common
        )
        service = ServiceMetrics(None)  # samples go to the shared folder; /metrics collects them all
    else:
        exporter = PrometheusMetrics(app, path=METRICS_PATH, registry=registry, **common)
        service = ServiceMetrics(registry)
    app.extensions["prometheus_exporter"] = exporter
    return service
