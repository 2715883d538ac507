"""deploy/local-stack.sh (`make monitor-up`, the local target of Deploy): it refuses to start over
a port another process holds, which would otherwise answer in its place (on a Debian machine
with systemd, apt starts its own Prometheus, Alertmanager and nginx exporter on install)."""

from __future__ import annotations

import os
import re
import socket
import subprocess

import pytest

from tests.helpers import ROOT

SCRIPT = ROOT / "deploy" / "local-stack.sh"


def stack_ports() -> dict[int, str]:
    block = re.search(r'^PORTS="([^"]*)"', SCRIPT.read_text(), re.MULTILINE)
    assert block, "PORTS not found in local-stack.sh"
    return {int(port): name for name, port, _ in (entry.split(":") for entry in block[1].split())}


def test_every_port_the_stack_serves_is_checked() -> None:
    ports = stack_ports()
    text = SCRIPT.read_text()
    served = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)}
    assert served <= ports.keys(), f"not checked before start: {served - ports.keys()}"
    assert {8000, 8080, 8081, 9090, 9093, 9113} <= ports.keys()


def hold_a_stack_port() -> tuple[socket.socket, int]:
    """A listening socket on the first of the stack's ports that is free here."""
    for port in stack_ports():
        holder = socket.socket()
        try:
            holder.bind(("127.0.0.1", port))
        except OSError:
            holder.close()
            continue
        holder.listen()
        return holder, port
    message = "every port of the local stack is in use here (is it running?)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def test_up_refuses_a_taken_port_and_starts_nothing() -> None:
    holder, port = hold_a_stack_port()
    pids = set((ROOT / ".monitor").glob("*.pid"))
    try:
        result = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"port {port} ({stack_ports()[port]}) is taken by another process" in result.stderr
    assert set((ROOT / ".monitor").glob("*.pid")) == pids  # nothing was started
