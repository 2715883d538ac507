"""End to end with the real binaries: the service under Gunicorn, Prometheus with the project's
rules, Alertmanager with the project's config sending to an SMTP sink on loopback. The service
stops, the on-call email for PetClassifierApiDown arrives with its runbook link; the service
comes back, the resolved email arrives.

To fit in a test, the real files are transformed here (shorter `for` and Alertmanager
intervals, the sink as smarthost, no TLS or auth for the sink), never copied by hand."""

from __future__ import annotations

import email
import importlib.util
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from aiosmtpd.controller import Controller

from app.local_server import ROOT, free_port, gunicorn
from tests.helpers import require_tool as tool

pytestmark = pytest.mark.integration


class Sink:
    """An SMTP server that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd calls it by this name
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def process(cmd: list[str], log: Path, ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            assert proc.poll() is None, f"{cmd[0]} exited:\n{log.read_text()[-2000:]}"
            try:
                return requests.get(ready_url, timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(f"{cmd[0]} to start", ready, 30)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def fast_rules(out: Path) -> Path:
    out.mkdir()
    shutil.copy(ROOT / "prometheus" / "rules" / "recording.yml", out)
    alerts = yaml.safe_load((ROOT / "prometheus" / "rules" / "alerts.yml").read_text())
    for group in alerts["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["for"] = "3s"
    (out / "alerts.yml").write_text(yaml.safe_dump(alerts, sort_keys=False))
    return out


def fast_alertmanager(out: Path, smtp_port: int) -> Path:
    config = load_script(ROOT / "alertmanager" / "render_local.py").render(f"127.0.0.1:{smtp_port}", fast=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def load_script(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.parent.name + "_" + path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render_local() -> Any:
    return load_script(ROOT / "prometheus" / "render_local.py").render


def prometheus(stack: ExitStack, tmp: Path, api_port: int, port: int, alertmanager: str = "127.0.0.1:9") -> None:
    """Real Prometheus on loopback with the project's rules (made fast), scraping the service."""
    targets = {"pet-classifier": [f"127.0.0.1:{api_port}"]}
    config = render_local()(targets, alertmanager, "1s", fast_rules(tmp / "rules"))
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    command = [
        tool("prometheus"),
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    stack.enter_context(process(command, tmp / "prometheus.log", f"http://127.0.0.1:{port}/-/ready"))


def mails(sink: Sink, status: str) -> list[Message]:
    return [
        m for m in sink.messages if f"[{status}" in str(m["Subject"]) and "PetClassifierApiDown" in str(m["Subject"])
    ]


def body(message: Message) -> str:
    parts = message.walk() if message.is_multipart() else [message]
    return "\n".join(p.get_payload(decode=True).decode() for p in parts if not p.is_multipart())  # type: ignore[union-attr]


def test_api_down_email_and_resolved_email(tiny_model: Path, tmp_path: Path) -> None:
    alertmanager_bin = tool("/usr/bin/prometheus-alertmanager")
    sink = Sink()
    smtp_port, am_port, prom_port, api_port = free_port(), free_port(), free_port(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        with ExitStack() as stack:
            am_config = fast_alertmanager(tmp_path / "alertmanager.yml", smtp_port)
            stack.enter_context(
                process(
                    [
                        alertmanager_bin,
                        f"--config.file={am_config}",
                        f"--storage.path={tmp_path / 'am'}",
                        f"--web.listen-address=127.0.0.1:{am_port}",
                        "--cluster.listen-address=",
                    ],
                    tmp_path / "alertmanager.log",
                    f"http://127.0.0.1:{am_port}/-/ready",
                )
            )
            prometheus(stack, tmp_path, api_port, prom_port, alertmanager=f"127.0.0.1:{am_port}")

            def target_up() -> bool:
                result = requests.get(
                    f"http://127.0.0.1:{prom_port}/api/v1/query",
                    params={"query": 'up{job="pet-classifier"}'},
                    timeout=2,
                ).json()
                return any(r["value"][1] == "1" for r in result["data"]["result"])

            for run in ("svc1", "svc2"):
                (tmp_path / run).mkdir()
            with gunicorn(tmp_path / "svc1", tiny_model, workers=1, port=api_port):
                wait_for("Prometheus to scrape the service", target_up, 30)
            # The service has stopped: the page must arrive.
            firing = wait_for("the FIRING email", lambda: mails(sink, "FIRING"), 90)[0]
            text = body(firing)
            assert "PetClassifierApiDown" in text and "critical" in text
            assert "docs/runbooks.md#petclassifierapidown" in text
            assert firing["To"] == "oncall@example.org"
            with gunicorn(tmp_path / "svc2", tiny_model, workers=1, port=api_port):
                wait_for("Prometheus to see the service again", target_up, 30)
                resolved = wait_for("the RESOLVED email", lambda: mails(sink, "RESOLVED"), 90)[0]
            assert "[RESOLVED] PetClassifierApiDown" in body(resolved) and "Resolved:" in body(resolved)
    finally:
        controller.stop()
