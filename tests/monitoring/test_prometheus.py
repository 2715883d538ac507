"""Prometheus rules checked by the real promtool: syntax, unit tests, and the house rules
(every alert has severity, summary, description, a runbook section, a firing test case and a
silent one)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.helpers import ROOT, nginx_connection_limit
from tests.helpers import require_tool as tool
from tests.stack import load_script
from tools.local_server import free_port

RULES = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = sorted((ROOT / "prometheus" / "tests").glob("*_test.yml"))


def groups() -> list[dict[str, Any]]:
    return yaml.safe_load((ROOT / "prometheus" / "rules" / "alerts.yml").read_text())["groups"]  # type: ignore[no-any-return]


def alerts() -> list[dict[str, object]]:
    return [rule for group in groups() for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run([tool("promtool"), "check", "rules", *map(str, RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = subprocess.run(
        [tool("promtool"), "test", "rules", *[p.name for p in RULE_TESTS]],
        cwd=ROOT / "prometheus" / "tests",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_alerts_follow_the_house_rules() -> None:
    runbook = (ROOT / "docs" / "runbooks.md").read_text()
    dashboards = {json.loads(p.read_text())["uid"] for p in (ROOT / "grafana" / "dashboards").glob("*.json")}
    anchors = {
        re.sub(r"[^a-z0-9-]", "", line[3:].strip().lower()) for line in runbook.splitlines() if line.startswith("## ")
    }
    names = set()
    model_alerts = {r["alert"] for g in groups() if g["name"] == "model" for r in g["rules"]}
    for rule in alerts():
        names.add(rule["alert"])
        labels, notes = rule["labels"], rule["annotations"]
        if rule["alert"] in model_alerts:  # the model's alerts link the Model dashboard
            assert notes["dashboard"] == "pet-model", rule["alert"]  # type: ignore[index]
        if rule["alert"] == "Watchdog":  # always firing, for a dead man's switch: no person reads it
            assert labels["severity"] == "none" and str(rule["expr"]) == "vector(1)"  # type: ignore[index]
            continue
        assert labels["severity"] in ("critical", "warning"), rule["alert"]  # type: ignore[index]
        assert notes["summary"] and "$value" in notes["description"], rule["alert"]  # type: ignore[index]
        anchor = notes["runbook_url"].split("#", 1)[1]  # type: ignore[index]
        assert anchor == str(rule["alert"]).lower() and anchor in anchors, f"{rule['alert']}: no runbook section"
        assert rule.get("for"), f"{rule['alert']} must not fire on a single evaluation"
        assert notes["dashboard"] in dashboards, f"{rule['alert']}: its email must link a dashboard"  # type: ignore[index]
    assert len(names) >= 13


def test_the_monitoring_is_monitored() -> None:
    """As kube-prometheus does: a Watchdog for a dead man's switch, every job's targets, failed
    rule evaluations, notifications Prometheus or Alertmanager cannot send, and a configuration
    that did not load."""
    names = {rule["alert"] for rule in alerts()}
    assert {
        "Watchdog",
        "TargetDown",
        "PrometheusRuleFailures",
        "PrometheusNotificationsFailing",
        "AlertmanagerFailedToSendAlerts",
        "PrometheusConfigReloadFailed",
        "AlertmanagerConfigReloadFailed",
    } <= names
    (target_down,) = [r for r in alerts() if r["alert"] == "TargetDown"]
    assert "job=" not in str(target_down["expr"])  # every job, kube-state-metrics included


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    fired, silent = set(), set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - fired == set(), "alerts never shown firing"
    assert names - silent - {"Watchdog"} == set(), "alerts never shown staying silent"


def test_the_proxy_alert_follows_the_limit_in_nginx_conf() -> None:
    """PetClassifierProxyNearLimit warns at three quarters of the limit nginx enforces, and
    names that limit; a change to one without the other fails here."""
    limit = nginx_connection_limit()
    (rule,) = [r for r in alerts() if r["alert"] == "PetClassifierProxyNearLimit"]
    threshold = re.search(r">= (\d+)$", str(rule["expr"]))
    assert threshold and int(threshold[1]) == limit * 3 // 4
    notes = rule["annotations"]
    assert f"limit of {limit} " in notes["summary"] and f"past {limit} " in notes["description"]  # type: ignore[index]


def with_file_sd(config: dict[str, Any], targets: Path) -> dict[str, Any]:
    """The in-cluster configuration with Kubernetes discovery swapped for file discovery that
    offers the same ``__meta_kubernetes_*`` labels: Debian's Prometheus is built without
    Kubernetes discovery, and the relabelling is what there is to check."""
    config = copy.deepcopy(config)
    for job in config["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["file_sd_configs"] = [{"files": [str(targets)]}]
        # The service account's files exist only in the pod: promtool wants them readable.
        for section, key in (("tls_config", "ca_file"), ("authorization", "credentials_file")):
            if key in job.get(section, {}):
                job[section][key] = str(targets)
    config["rule_files"] = []
    config["alerting"] = {}
    return config


def test_promtool_checks_both_configs_from_the_one_source(tmp_path: Path) -> None:
    promtool = tool("promtool")
    source_config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    assert any("kubernetes_sd_configs" in job for job in source_config["scrape_configs"])
    checkable = tmp_path / "in-cluster.yml"
    checkable.write_text(yaml.safe_dump(with_file_sd(source_config, tmp_path / "targets.json")))
    (tmp_path / "targets.json").write_text("[]")
    in_cluster = subprocess.run([promtool, "check", "config", str(checkable)], capture_output=True, text=True)
    assert in_cluster.returncode == 0, in_cluster.stdout + in_cluster.stderr
    local = tmp_path / "prometheus.yml"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "prometheus" / "render_local.py"),
            "--target",
            "pet-classifier=127.0.0.1:8000",
            "--target",
            "prometheus=127.0.0.1:9090",
            "--out",
            str(local),
        ],
        check=True,
    )
    checked = subprocess.run([promtool, "check", "config", str(local)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    source, derived = (
        yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text()),
        yaml.safe_load(local.read_text()),
    )
    assert {j["job_name"] for j in source["scrape_configs"]} >= {
        "pet-classifier",
        "node-exporter",
        "kube-state-metrics",
        "alertmanager",
        "prometheus",
    }
    assert [j["job_name"] for j in derived["scrape_configs"]] == ["pet-classifier", "prometheus"]
    assert derived["scrape_configs"][0]["static_configs"] == [
        {"targets": ["127.0.0.1:8000"], "labels": {"namespace": "local", "pod": "127.0.0.1:8000"}}
    ]
    assert derived["global"]["scrape_interval"] == source["global"]["scrape_interval"]


def pod_target(address: str, pod: str, port_name: str, ready: bool, app: str = "pet-classifier") -> dict[str, Any]:
    """A target as Prometheus' Kubernetes pod discovery offers it, one per container port."""
    return {
        "targets": [address],
        "labels": {
            "__meta_kubernetes_namespace": "mlops",
            "__meta_kubernetes_pod_name": pod,
            "__meta_kubernetes_pod_label_app_kubernetes_io_name": app,
            "__meta_kubernetes_pod_container_port_name": port_name,
            "__meta_kubernetes_pod_ready": str(ready).lower(),
            "__meta_kubernetes_pod_phase": "Running",
        },
    }


@pytest.mark.servers
def test_api_pods_stay_scraped_when_not_ready_and_carry_pod_and_namespace(tmp_path: Path) -> None:
    # A pod whose /ready answers 503 leaves the Services; found through DNS, it was no longer
    # scraped, so PetClassifierModelNotReady could never fire in the cluster.
    targets = tmp_path / "targets.json"
    targets.write_text(
        json.dumps(
            [
                pod_target("10.0.0.1:8000", "pet-classifier-a", "api", ready=True),
                pod_target("10.0.0.2:8000", "pet-classifier-b", "api", ready=False),
                pod_target("10.0.0.2:8080", "pet-classifier-b", "http", ready=False),
                pod_target("10.0.0.2:9113", "pet-classifier-b", "proxy-metrics", ready=False),
                pod_target("10.0.0.3:3000", "grafana-x", "http", ready=True, app="grafana"),
            ]
        )
    )
    config = with_file_sd(yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text()), targets)
    config["scrape_configs"] = [j for j in config["scrape_configs"] if "file_sd_configs" in j]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        found: list[dict[str, str]] = []
        deadline = time.monotonic() + 30  # discovery hands targets over at most every 5 s
        while len(found) < 3 and time.monotonic() < deadline:
            time.sleep(1)
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=2).json()
            except requests.ConnectionError:
                continue
            found = [t["labels"] for t in answer["data"]["activeTargets"]]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    by_job = sorted((t["job"], t["pod"], t["namespace"], t["instance"]) for t in found)
    assert by_job == [
        ("pet-classifier", "pet-classifier-a", "mlops", "10.0.0.1:8000"),
        ("pet-classifier", "pet-classifier-b", "mlops", "10.0.0.2:8000"),
        ("pet-classifier-proxy", "pet-classifier-b", "mlops", "10.0.0.2:9113"),
    ]


def test_the_slo_rules_come_from_one_definition_of_the_windows() -> None:
    built = subprocess.run(
        [sys.executable, str(ROOT / "prometheus" / "build_slo_rules.py"), "--check"], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr
    slo = load_script(ROOT / "prometheus" / "build_slo_rules.py")
    recorded = {
        rule["record"]
        for group in yaml.safe_load((ROOT / "prometheus" / "rules" / "recording.yml").read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    alerts = (ROOT / "prometheus" / "rules" / "alerts.yml").read_text()
    read = set(re.findall(r"job:slo_predict_errors:ratio_rate(\w+)", alerts))
    # Every window an alert reads is defined once and recorded; none is defined and unread.
    assert read == set(slo.WINDOWS)
    assert {f"job:slo_predict_errors:ratio_rate{w}" for w in slo.WINDOWS} <= recorded
