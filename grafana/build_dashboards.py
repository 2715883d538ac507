"""Build the Grafana dashboards (grafana/dashboards/*.json) from the panel lists below.

    python grafana/build_dashboards.py          # rewrite the JSON files
    python grafana/build_dashboards.py --check  # exit 1 if the committed JSON is out of date

The committed JSON is what Grafana reads; tests prove it matches this file, and send every
panel query to a real Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
SCHEMA_VERSION = 39

# (title, [(expr, legend)], unit, panel type)
Panel = tuple[str, list[tuple[str, str]], str, str]

API: list[Panel] = [
    ("API request rate (uploads, feedback)", [("job:api_requests:rate5m", "{{job}}")], "reqps", "timeseries"),
    ("API error ratio (5xx, no probes)", [("job:api_error_ratio:rate5m", "{{job}}")], "percentunit", "timeseries"),
    (
        "Latency p50 by endpoint",
        [("job_endpoint:http_request_duration_seconds:p50_5m", "{{endpoint}}")],
        "s",
        "timeseries",
    ),
    (
        "Latency p95 by endpoint",
        [("job_endpoint:http_request_duration_seconds:p95_5m", "{{endpoint}}")],
        "s",
        "timeseries",
    ),
    (
        "Latency p99 by endpoint",
        [("job_endpoint:http_request_duration_seconds:p99_5m", "{{endpoint}}")],
        "s",
        "timeseries",
    ),
    ("Requests in flight", [("sum by (job) (http_requests_in_flight)", "{{job}}")], "short", "timeseries"),
    (
        # Past nginx.conf's limit_conn of 64 a pod's nginx answers 429 (PetClassifierProxyNearLimit at 48).
        "Requests held by each pod's nginx (429 past 64)",
        [("instance:pet_proxy_requests_in_flight:count", "{{pod}}")],
        "short",
        "timeseries",
    ),
    (
        "Rejected uploads by reason",
        [("sum by (reason) (rate(rejected_inputs_total[5m]))", "{{reason}}")],
        "reqps",
        "timeseries",
    ),
    (
        "Availability SLO: 1h error ratio (budget 0.5%)",
        [("job:slo_predict_errors:ratio_rate1h", "{{job}}")],
        "percentunit",
        "stat",
    ),
]
MODEL: list[Panel] = [
    ("Predictions by label", [("job_class:predictions:rate5m", "{{class}}")], "reqps", "timeseries"),
    (
        "Confidence distribution",
        [("sum by (le) (rate(prediction_confidence_bucket[5m]))", "{{le}}")],
        "short",
        "bargauge",
    ),
    (
        "Low-confidence share (< 70%)",
        [("job:predictions_low_confidence:ratio_rate1h", "{{job}}")],
        "percentunit",
        "stat",
    ),
    (
        "Live accuracy from feedback (6 h) against the test split",
        [("job:feedback_accuracy:ratio_rate6h", "live, 6 h"), ("job:model_test_accuracy:max", "test split")],
        "percentunit",
        "stat",
    ),
    (
        "Not a pet: share of predictions flagged (1 h)",
        [("job:predictions_not_a_pet:ratio_rate1h", "{{job}}")],
        "percentunit",
        "timeseries",
    ),
    (
        "Dog share of predictions (baseline 50%)",
        [("job:predictions_dog_share:ratio_rate6h", "{{job}}")],
        "percentunit",
        "timeseries",
    ),
    (
        "Model version",
        [("max by (version, run_id, engine) (model_info)", "{{version}} (run {{run_id}}, {{engine}})")],
        "short",
        "table",
    ),
    (
        "Inference and decode latency p95",
        [
            ("histogram_quantile(0.95, sum by (le) (rate(model_inference_seconds_bucket[5m])))", "inference"),
            ("histogram_quantile(0.95, sum by (le) (rate(image_decode_seconds_bucket[5m])))", "decode"),
        ],
        "s",
        "timeseries",
    ),
]
CLUSTER: list[Panel] = [
    ("Pods ready", [('sum(kube_pod_status_ready{namespace="mlops",condition="true"})', "ready")], "short", "stat"),
    (
        "Alerts firing (Watchdog aside)",
        [
            (
                'count by (alertname, severity) (ALERTS{alertstate="firing",alertname!="Watchdog"})',
                "{{alertname}} ({{severity}})",
            )
        ],
        "short",
        "table",
    ),
    (
        "Replicas available against desired",
        [
            ('kube_deployment_status_replicas_available{namespace="mlops"}', "{{deployment}} available"),
            ('kube_deployment_spec_replicas{namespace="mlops"}', "{{deployment}} desired"),
        ],
        "short",
        "timeseries",
    ),
    (
        "Container CPU by pod (cores)",
        [('sum by (pod) (rate(container_cpu_usage_seconds_total{namespace="mlops",container!=""}[5m]))', "{{pod}}")],
        "short",
        "timeseries",
    ),
    (
        "CPU throttled share by pod",
        [
            (
                'sum by (pod) (rate(container_cpu_cfs_throttled_periods_total{namespace="mlops",container!=""}[5m]))'
                ' / sum by (pod) (rate(container_cpu_cfs_periods_total{namespace="mlops",container!=""}[5m]))',
                "{{pod}}",
            )
        ],
        "percentunit",
        "timeseries",
    ),
    (
        "Container memory (working set) by pod",
        [('sum by (pod) (container_memory_working_set_bytes{namespace="mlops",container!=""})', "{{pod}}")],
        "bytes",
        "timeseries",
    ),
    (
        "Node network I/O",
        [
            ('sum by (instance) (rate(node_network_receive_bytes_total{device!="lo"}[5m]))', "{{instance}} in"),
            ('sum by (instance) (rate(node_network_transmit_bytes_total{device!="lo"}[5m]))', "{{instance}} out"),
        ],
        "Bps",
        "timeseries",
    ),
    (
        "Node disk I/O",
        [
            ("sum by (instance) (rate(node_disk_read_bytes_total[5m]))", "{{instance}} read"),
            ("sum by (instance) (rate(node_disk_written_bytes_total[5m]))", "{{instance}} written"),
        ],
        "Bps",
        "timeseries",
    ),
    (
        "Container restarts (1h)",
        [('sum by (pod) (increase(kube_pod_container_status_restarts_total{namespace="mlops"}[1h]))', "{{pod}}")],
        "short",
        "timeseries",
    ),
    (
        "HPA replicas against max",
        [
            ('kube_horizontalpodautoscaler_status_current_replicas{namespace="mlops"}', "current"),
            ('kube_horizontalpodautoscaler_spec_max_replicas{namespace="mlops"}', "max"),
        ],
        "short",
        "timeseries",
    ),
    (
        "Node CPU busy",
        [('1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m]))', "{{instance}}")],
        "percentunit",
        "timeseries",
    ),
    (
        "Node memory used",
        [("1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes", "{{instance}}")],
        "percentunit",
        "timeseries",
    ),
    (
        "Disk free",
        [
            (
                'node_filesystem_avail_bytes{fstype!~"tmpfs|overlay"} / node_filesystem_size_bytes',
                "{{instance}} {{mountpoint}}",
            )
        ],
        "percentunit",
        "timeseries",
    ),
]
# Where an alert fires, drawn on its panel: panel title -> (alert, [(value, colour)]). The first
# value is the alert's own threshold (tests/monitoring/test_dashboards.py reads it from alerts.yml).
THRESHOLDS: dict[str, tuple[str, list[tuple[float, str]]]] = {
    "API error ratio (5xx, no probes)": ("PetClassifierHighErrorRatio", [(0.05, "orange"), (0.20, "red")]),
    "Latency p95 by endpoint": ("PetClassifierHighLatencyP95", [(0.5, "orange")]),
    "Latency p99 by endpoint": ("PetClassifierLatencyP99Critical", [(2.0, "red")]),
    "Requests held by each pod's nginx (429 past 64)": ("PetClassifierProxyNearLimit", [(48, "orange"), (64, "red")]),
    "Low-confidence share (< 70%)": ("PetClassifierLowConfidenceShareHigh", [(0.15, "orange")]),
    "Not a pet: share of predictions flagged (1 h)": ("PetClassifierNotAPetShareHigh", [(0.05, "orange")]),
}
DASHBOARDS = {
    "pet-api": ("Pet classifier — API", API),
    "pet-model": ("Pet classifier — Model", MODEL),
    "pet-cluster": ("Pet classifier — Cluster and node", CLUSTER),
}


def panel(pid: int, spec: Panel) -> dict[str, Any]:
    title, queries, unit, kind = spec
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"x": 12 * ((pid - 1) % 2), "y": 8 * ((pid - 1) // 2), "w": 12, "h": 8},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
            for i, (expr, legend) in enumerate(queries)
        ],
        "fieldConfig": {"defaults": {"unit": unit, **thresholds(title, kind)}, "overrides": []},
        "options": {},
    }


def thresholds(title: str, kind: str) -> dict[str, Any]:
    """Grafana's threshold steps for a panel in THRESHOLDS, drawn as dashed lines on a graph."""
    if title not in THRESHOLDS:
        return {}
    steps = [{"color": "green", "value": None}] + [{"color": c, "value": v} for v, c in THRESHOLDS[title][1]]
    drawn = {"custom": {"thresholdsStyle": {"mode": "dashed"}}} if kind == "timeseries" else {}
    return {"thresholds": {"mode": "absolute", "steps": steps}, **drawn}


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["pet-classifier"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": False,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": [panel(i + 1, p) for i, p in enumerate(panels)],
    }


def rendered() -> dict[str, str]:
    return {
        f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2, ensure_ascii=False) + "\n"
        for uid, (title, panels) in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = OUT / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)} (run python grafana/build_dashboards.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
