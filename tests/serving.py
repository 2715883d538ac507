"""Helpers for the tests that talk to the service: raw sockets, metrics, schemas, a Python
subprocess with the service's environment, encoded images."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from typing import Any

import requests
from PIL import Image

from tests.helpers import ROOT

RELEASE = ROOT / "models"
# The time in every JSON log line, the API's, Gunicorn's and the pod's nginx's: RFC 3339, milliseconds.
RFC3339_MS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)"


def schema_for(spec: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    """The JSON schema the OpenAPI document gives for one response."""
    response = spec["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    # Resolve "#/components/..." against the document itself.
    return {**schema, "components": spec["components"]}


def connect(url: str, timeout: float = 30) -> socket.socket:
    """A raw TCP connection to the server at ``url``, for clients requests cannot play."""
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection."""
    return b"".join(iter(lambda: sock.recv(65536), b""))


def exchange(url: str, raw: bytes, timeout: float = 30) -> bytes:
    """Send ``raw`` on a fresh connection; the whole reply, once the server has closed."""
    with connect(url, timeout) as sock:
        sock.sendall(raw)
        return read_all(sock)


def metric_sum(url: str, name: str) -> float:
    """``name`` on the server's /metrics, summed over its label sets (and so over workers)."""
    text = requests.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name)


def run_python(
    code: str, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter from the repository root, as a server process starts."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=check,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()
