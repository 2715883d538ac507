"""End to end with the real binaries: the service under Gunicorn, Prometheus with the project's
rules, Alertmanager with the project's config sending to an SMTP sink on loopback. The service
stops, the on-call email for PetClassifierApiDown arrives with its runbook link; the service
comes back, the resolved email arrives.

To fit in a test, the real files are transformed (tests/stack.py; here the Alertmanager
intervals, the sink as smarthost, no TLS or auth for the sink), never copied by hand."""

from __future__ import annotations

import email
from contextlib import ExitStack
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller

from tests.helpers import require_tool as tool
from tests.stack import load_script, process, prometheus, query, wait_for
from tools.local_server import ROOT, free_port, gunicorn

pytestmark = pytest.mark.servers


class Sink:
    """An SMTP server that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd calls it by this name
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def fast_alertmanager(out: Path, smtp_port: int) -> Path:
    config = load_script(ROOT / "alertmanager" / "render_local.py").render(f"127.0.0.1:{smtp_port}", fast=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


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
            targets = {"pet-classifier": [f"127.0.0.1:{api_port}"]}
            prom = prometheus(stack, tmp_path, targets, prom_port, alertmanager=f"127.0.0.1:{am_port}")

            def target_up() -> bool:
                return any(r["value"][1] == "1" for r in query(prom, 'up{job="pet-classifier"}'))

            for run in ("svc1", "svc2"):
                (tmp_path / run).mkdir()
            with gunicorn(tmp_path / "svc1", tiny_model, workers=1, port=api_port):
                wait_for("Prometheus to scrape the service", target_up, 30)
            # The service has stopped: the page must arrive.
            firing = wait_for("the FIRING email", lambda: mails(sink, "FIRING"), 90)[0]
            text = body(firing)
            assert "PetClassifierApiDown" in text and "critical" in text
            assert "docs/runbooks.md#petclassifierapidown" in text
            assert "Dashboard:   http://127.0.0.1:3000/d/pet-api\r\n" in text  # the alert's own dashboard
            assert firing["To"] == "oncall@example.org"
            with gunicorn(tmp_path / "svc2", tiny_model, workers=1, port=api_port):
                wait_for("Prometheus to see the service again", target_up, 30)
                resolved = wait_for("the RESOLVED email", lambda: mails(sink, "RESOLVED"), 90)[0]
            assert "[RESOLVED] PetClassifierApiDown" in body(resolved) and "Resolved:" in body(resolved)
    finally:
        controller.stop()
