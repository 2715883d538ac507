"""Start the real Gunicorn server on a free loopback port, bounded in time, always stopped.

Used by `make bench-serve` and by the tests that need the real server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from app.gunicorn_worker import READY_MESSAGE

ROOT = Path(__file__).resolve().parents[1]
# Exactly what the Docker image runs (see the Dockerfile's CMD) and what `make serve` runs.
GUNICORN_CMD = ["gunicorn", "-c", "gunicorn.conf.py"]


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def ready_workers(self) -> int:
        """How many workers have reached their accept loop (gunicorn.conf.py's post_worker_init)."""
        return sum(READY_MESSAGE in line for line in self.log_lines())

    def worker_pids(self) -> list[int]:
        """The Gunicorn master's children, its workers, as they are now."""
        found = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in found.stdout.split()]


@contextmanager
def gunicorn(
    tmp: Path,
    model_dir: Path,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
    ready_timeout: float = 90,
    port: int | None = None,
) -> Iterator[Server]:
    port = port or free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "MODEL_DIR": str(model_dir),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prom"),
        "FEEDBACK_SECRET": "test-secret-" + "x" * 20,
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    (tmp / "prom").mkdir(exist_ok=True)
    log = tmp / "gunicorn.log"
    bin_dir = Path(sys.executable).parent
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(bin_dir / GUNICORN_CMD[0]), *GUNICORN_CMD[1:]], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n" + "\n".join(server.log_lines()[-30:]))
            if server.ready_workers() >= workers and _healthy(server.url):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"gunicorn did not start {workers} workers that answer /health in time:\n"
                    + "\n".join(server.log_lines()[-30:])
                )
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
