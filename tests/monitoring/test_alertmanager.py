"""Alertmanager checked by the real binaries: amtool validates the config and the templates,
routes send each kind of alert to the right receiver, and a running Alertmanager shows each
inhibition rule silencing what it should and nothing else."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Iterator

import pytest
import requests
import yaml

from tests.helpers import ROOT
from tests.helpers import require_tool as tool
from tools.local_server import free_port

CONFIG = ROOT / "alertmanager" / "alertmanager.yml"


def test_amtool_accepts_the_config_and_templates() -> None:
    result = subprocess.run([tool("amtool"), "check-config", str(CONFIG)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 templates" in result.stdout  # one glob: email.tmpl and grafana.tmpl


def test_no_secret_in_the_config() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert "smtp_auth_password" not in config["global"]
    assert config["global"]["smtp_auth_password_file"].startswith("/")


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=PetClassifierApiDown", "severity=critical", "service=pet-classifier"], "oncall-page"),
        (["alertname=PetClassifierErrorBudgetBurn", "severity=critical", "slo=availability"], "oncall-page"),
        (["alertname=NodeDiskSpaceLow", "severity=critical"], "oncall-page"),
        (["alertname=PetClassifierHighLatencyP95", "severity=warning", "service=pet-classifier"], "oncall-digest"),
        (["alertname=PetClassifierLiveAccuracyLow", "severity=warning"], "oncall-digest"),
        (["alertname=SomethingUnlabelled"], "oncall-digest"),
        # The dead man's switch goes to its own receiver, never to a person.
        (["alertname=Watchdog", "severity=none"], "deadmans-switch"),
        (["alertname=TargetDown", "severity=warning", "job=kube-state-metrics"], "oncall-digest"),
        (["alertname=PrometheusRuleFailures", "severity=critical"], "oncall-page"),
    ],
)
def test_routes(labels: list[str], receiver: str) -> None:
    result = subprocess.run(
        [
            tool("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={CONFIG}",
            f"--verify.receivers={receiver}",
            *labels,
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = tool("/usr/bin/prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("alertmanager")
    (tmp / "smtp-password").write_text("not-used")
    config = CONFIG.read_text().replace("/etc/alertmanager/secrets/smtp-password", str(tmp / "smtp-password"))
    config = config.replace("templates/*.tmpl", str(ROOT / "alertmanager" / "templates" / "*.tmpl"))
    (tmp / "alertmanager.yml").write_text(config)
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'alertmanager.yml'}",
            f"--storage.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "alertmanager did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def post(url: str, *alerts: dict[str, str]) -> None:
    now = dt.datetime.now(dt.UTC)
    body = [
        {"labels": labels, "startsAt": now.isoformat(), "endsAt": (now + dt.timedelta(hours=1)).isoformat()}
        for labels in alerts
    ]
    requests.post(f"{url}/api/v2/alerts", json=body, timeout=5).raise_for_status()


def inhibited(url: str, **match: str) -> bool:
    for _ in range(50):
        found = [
            a
            for a in requests.get(f"{url}/api/v2/alerts", timeout=5).json()
            if all(a["labels"].get(k) == v for k, v in match.items())
        ]
        if found and (found[0]["status"]["state"] != "unprocessed"):
            return bool(found[0]["status"]["inhibitedBy"])
        time.sleep(0.1)
    raise AssertionError(f"alert {match} never processed")


@pytest.mark.servers
def test_critical_suppresses_its_warning_twin_only(alertmanager: str) -> None:
    twin = {"alertname": "NodeHighCpu", "instance": "node-1"}
    post(
        alertmanager,
        {**twin, "severity": "critical"},
        {**twin, "severity": "warning"},
        {"alertname": "NodeHighCpu", "instance": "node-2", "severity": "warning"},
        {"alertname": "NodeHighMemory", "instance": "node-1", "severity": "warning"},
    )
    assert inhibited(alertmanager, alertname="NodeHighCpu", instance="node-1", severity="warning")
    assert not inhibited(alertmanager, alertname="NodeHighCpu", instance="node-1", severity="critical")
    assert not inhibited(alertmanager, alertname="NodeHighCpu", instance="node-2", severity="warning")  # other node
    assert not inhibited(alertmanager, alertname="NodeHighMemory", instance="node-1", severity="warning")  # other alert


@pytest.mark.servers
def test_api_down_suppresses_its_own_symptoms_only(alertmanager: str) -> None:
    job = {"job": "pet-classifier", "service": "pet-classifier"}
    post(
        alertmanager,
        {**job, "alertname": "PetClassifierApiDown", "severity": "critical"},
        {**job, "alertname": "PetClassifierHighLatencyP95", "severity": "warning", "endpoint": "api.predict"},
        {**job, "alertname": "PetClassifierHighErrorRatio", "severity": "critical"},
        {**job, "alertname": "PetClassifierLiveAccuracyLow", "severity": "warning"},
        {"job": "other-api", "alertname": "PetClassifierHighLatencyP95", "severity": "warning"},
    )
    assert inhibited(alertmanager, alertname="PetClassifierHighLatencyP95", job="pet-classifier")
    assert inhibited(alertmanager, alertname="PetClassifierHighErrorRatio", job="pet-classifier")
    assert not inhibited(alertmanager, alertname="PetClassifierApiDown")
    assert not inhibited(alertmanager, alertname="PetClassifierLiveAccuracyLow")  # not a symptom of being down
    assert not inhibited(alertmanager, alertname="PetClassifierHighLatencyP95", job="other-api")  # other job
