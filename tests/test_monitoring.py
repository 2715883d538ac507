"""Prometheus rules checked by the real promtool: syntax, unit tests, and the house rules
(every alert has severity, summary, description, a runbook section, a firing test case and a
silent one)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import nginx_connection_limit
from tests.helpers import require_tool as tool

ROOT = Path(__file__).resolve().parent.parent
RULES = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = sorted((ROOT / "prometheus" / "tests").glob("*_test.yml"))


def alerts() -> list[dict[str, object]]:
    rules = yaml.safe_load((ROOT / "prometheus" / "rules" / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


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
    anchors = {
        re.sub(r"[^a-z0-9-]", "", line[3:].strip().lower()) for line in runbook.splitlines() if line.startswith("## ")
    }
    names = set()
    for rule in alerts():
        names.add(rule["alert"])
        labels, notes = rule["labels"], rule["annotations"]
        if rule["alert"] == "Watchdog":  # always firing, for a dead man's switch: no person reads it
            assert labels["severity"] == "none" and str(rule["expr"]) == "vector(1)"  # type: ignore[index]
            continue
        assert labels["severity"] in ("critical", "warning"), rule["alert"]  # type: ignore[index]
        assert notes["summary"] and "$value" in notes["description"], rule["alert"]  # type: ignore[index]
        anchor = notes["runbook_url"].split("#", 1)[1]  # type: ignore[index]
        assert anchor == str(rule["alert"]).lower() and anchor in anchors, f"{rule['alert']}: no runbook section"
        assert rule.get("for"), f"{rule['alert']} must not fire on a single evaluation"
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


def test_promtool_checks_both_configs_from_the_one_source(tmp_path: Path) -> None:
    promtool = tool("promtool")
    in_cluster = subprocess.run(
        [promtool, "check", "config", str(ROOT / "prometheus" / "prometheus.yml")], capture_output=True, text=True
    )
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
    assert derived["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:8000"]}]
    assert derived["global"]["scrape_interval"] == source["global"]["scrape_interval"]
