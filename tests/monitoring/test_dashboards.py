"""Grafana dashboards: valid provisioning JSON, up to date with their generator, and every panel
query answered by a real Prometheus that scraped the real service after real traffic."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.conftest import jpeg_bytes
from tests.helpers import nginx_connection_limit
from tests.stack import load_script, nginx_exporter, nginx_in_front, prometheus, query
from tools.local_server import ROOT, free_port, gunicorn

pytestmark = pytest.mark.servers

DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
DATASOURCE_UID = yaml.safe_load((ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())[
    "datasources"
][0]["uid"]


def load(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text())


def test_committed_json_is_what_the_generator_builds() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "grafana" / "build_dashboards.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_dashboards_are_valid_provisioning_json() -> None:
    assert {p.stem for p in DASHBOARDS} == {"pet-api", "pet-model", "pet-cluster"}
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)
    for path in DASHBOARDS:
        board = load(path)
        assert board["schemaVersion"] >= 36 and board["title"] and board["panels"]
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids), path.name
        for p in board["panels"]:
            assert p["datasource"]["uid"] == DATASOURCE_UID, (path.name, p["title"])
            assert p["targets"] and all(t["datasource"]["uid"] == DATASOURCE_UID and t["expr"] for t in p["targets"])
            assert {"x", "y", "w", "h"} <= set(p["gridPos"])
    provider = yaml.safe_load((ROOT / "grafana" / "provisioning" / "dashboards" / "provider.yml").read_text())
    assert provider["providers"][0]["type"] == "file"


def alert_groups() -> list[dict[str, Any]]:
    return yaml.safe_load((ROOT / "prometheus" / "rules" / "alerts.yml").read_text())["groups"]  # type: ignore[no-any-return]


def test_thresholds_drawn_on_panels_are_where_the_alerts_fire() -> None:
    """A line on a panel at 0.5 s must be the latency alert's 0.5 s (or nginx's own limit)."""
    build = load_script(ROOT / "grafana" / "build_dashboards.py")
    panels = {p["title"]: p for path in DASHBOARDS for p in load(path)["panels"]}
    for title, (alert, steps) in build.THRESHOLDS.items():
        exprs = [r["expr"] for g in alert_groups() for r in g["rules"] if r.get("alert") == alert]
        fired_at = {float(n) for e in exprs for n in re.findall(r">=? ?(\d+(?:\.\d+)?)", e)}
        assert exprs and steps[0][0] in fired_at, (title, alert, fired_at)
        assert {v for v, _ in steps} <= fired_at | {float(nginx_connection_limit())}, title
        drawn = panels[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["value"] for s in drawn[1:]] == [v for v, _ in steps], title


def service_alerts() -> set[str]:
    """The alerts about the service itself (group application): a healthy one must raise none.
    The model group may fire here, as the test model is untrained."""
    (application,) = [g for g in alert_groups() if g["name"] == "application"]
    return {rule["alert"] for rule in application["rules"]}


def test_panels_have_data_and_no_service_alert_fires_after_real_traffic(tiny_model: Path, tmp_path: Path) -> None:
    """Every panel query answered by Prometheus after real traffic through the pod's nginx;
    and, with every `for` at 3 s, a healthy service pages nobody (model_ready read 0 under
    Gunicorn once, which only a live stack showed)."""
    prom_port, api_port = free_port(), free_port()
    with ExitStack() as stack:
        (tmp_path / "svc").mkdir()
        server = stack.enter_context(gunicorn(tmp_path / "svc", tiny_model, workers=2, port=api_port))
        proxy = stack.enter_context(nginx_in_front(tmp_path, server.url))
        exporter = stack.enter_context(nginx_exporter(tmp_path, proxy))
        targets = {"pet-classifier": [f"127.0.0.1:{api_port}"], "pet-classifier-proxy": [exporter]}
        prom = prometheus(stack, tmp_path, targets, prom_port)
        queries = [
            (path.stem, p["title"], t["expr"])
            for path in DASHBOARDS
            for p in load(path)["panels"]
            for t in p["targets"]
        ]
        deadline = time.monotonic() + 60
        while True:  # real traffic until every API and model panel has data
            for i in range(6):
                resp = requests.post(
                    f"{server.url}/predict",
                    files={"file": ("p.jpg", io.BytesIO(jpeg_bytes((200, 60, 50), seed=i)))},
                    timeout=10,
                )
                requests.post(
                    f"{server.url}/feedback",
                    json={"feedback_token": resp.json()["feedback_token"], "label": "cat"},
                    timeout=10,
                )
            requests.post(f"{server.url}/predict", files={"file": ("x.jpg", io.BytesIO(b"not a photo"))}, timeout=10)
            answers = {
                (board, title, expr): requests.get(
                    f"http://127.0.0.1:{prom_port}/api/v1/query", params={"query": expr}, timeout=5
                ).json()
                for board, title, expr in queries
            }
            empty = [key for key, a in answers.items() if key[0] != "pet-cluster" and not a["data"]["result"]]
            if not empty or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert all(a["status"] == "success" for a in answers.values()), "a panel query does not parse"
        assert empty == [], f"panels without data: {empty}"
        time.sleep(5)  # past every `for` (3 s) at one evaluation a second
        alerts = query(prom, "ALERTS")
        assert {a["metric"]["alertname"] for a in alerts} & service_alerts() == set(), alerts


def test_the_cluster_dashboard_shows_what_the_runbooks_point_to() -> None:
    """Container CPU, throttling and memory per pod (cAdvisor, which the runbooks name), the
    alerts firing, replicas available against desired, and the nodes' network and disk I/O."""
    (cluster,) = [load(p) for p in DASHBOARDS if p.stem == "pet-cluster"]
    exprs = " ".join(t["expr"] for p in cluster["panels"] for t in p["targets"])
    for metric in (
        "container_cpu_usage_seconds_total",
        "container_cpu_cfs_throttled_periods_total",
        "container_memory_working_set_bytes",
        "ALERTS{",
        "kube_deployment_status_replicas_available",
        "kube_deployment_spec_replicas",
        "node_network_receive_bytes_total",
        "node_disk_read_bytes_total",
    ):
        assert metric in exprs, metric
    per_pod = [t["expr"] for p in cluster["panels"] for t in p["targets"] if "container_" in t["expr"]]
    assert all("by (pod)" in e for e in per_pod)
    # What the panels read is what Prometheus keeps of cAdvisor (prometheus.yml's metric_relabel_configs).
    prom = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    (cadvisor,) = [j for j in prom["scrape_configs"] if j["job_name"] == "kubelet-cadvisor"]
    kept = re.compile(cadvisor["metric_relabel_configs"][0]["regex"])
    assert all(kept.fullmatch(m) for m in re.findall(r"\b(container_\w+)\{", " ".join(per_pod)))
