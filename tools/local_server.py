"""Start the real Gunicorn server, and the pod's nginx in front of it, on free loopback ports,
bounded in time, always stopped.

Used by `make bench-serve`, the local stack (tools/render_proxy.py) and the tests that need the
real server."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from app.gunicorn_worker import READY_MESSAGE
from tools import ROOT

# Exactly what the Docker image runs (see the Dockerfile's CMD) and what `make serve` runs.
GUNICORN_CMD = ["gunicorn", "-c", "gunicorn.conf.py"]
# The pod's nginx (deployment.yaml's proxy container): the one source of its configuration.
PROXY_CONF = ROOT / "deploy" / "k8s" / "app" / "nginx.conf"


def answers(url: str, timeout: float = 2) -> bool:
    """Whether ``url`` answers 200 now (a refused connection is a no, not an error)."""
    try:
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.ConnectionError:
        return False


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float, what: str, log: Callable[[], str]
) -> None:
    """Poll ``ready`` until it holds; a RuntimeError with the end of ``log`` if ``proc`` exits
    first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}:\n{log()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready within {timeout:g} s:\n{log()}")
        time.sleep(0.1)


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
        wait_until(
            lambda: server.ready_workers() >= workers and answers(f"{server.url}/health"),
            proc,
            ready_timeout,
            f"gunicorn with {workers} workers that answer /health",
            lambda: "\n".join(server.log_lines()[-30:]),
        )
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


# nginx.conf's three addresses as the pod has them: (directive, address). proxy_conf swaps
# them for loopback ones; tests/deploy/test_k8s.py checks the containers' ports against them.
POD_ADDRESSES = {
    "listen": ("listen", "8080"),  # the public port
    "upstream": ("server", "127.0.0.1:8000"),  # Gunicorn
    "status": ("listen", "127.0.0.1:8081"),  # stub_status, for the exporter
}


def proxy_conf(listen: str, upstream: str, status: str, source: Path = PROXY_CONF) -> str:
    """The pod's nginx.conf with only its three addresses changed: where nginx listens, where
    Gunicorn is, and where nginx serves its counters (stub_status)."""
    conf = source.read_text()
    for key, local in (("listen", listen), ("upstream", upstream), ("status", status)):
        directive, pod = POD_ADDRESSES[key]
        line = f"{directive} {pod};"
        conf, found = re.subn(rf"^(\s*){re.escape(line)}", rf"\g<1>{directive} {local};", conf, flags=re.MULTILINE)
        if found != 1:
            raise ValueError(f"{source} should have one '{line}' ({key}), not {found}")
    return conf


def nginx_binary() -> str | None:
    """Debian's nginx, which lives in /usr/sbin, a folder a user's PATH may lack."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.isfile("/usr/sbin/nginx") else None)


def nginx_globals() -> str:
    """nginx's -g directives: in the foreground and, as root, with workers that can reach a private
    folder (nginx would hand them to 'nobody'). The pod runs it as a non-root user."""
    return "daemon off;" + (" user root;" if os.geteuid() == 0 else "")


@dataclass
class Proxy:
    url: str
    process: subprocess.Popen[bytes]
    stdout: Path  # its JSON access lines, for the requests nginx answers itself
    status_url: str  # stub_status, what the pod's exporter reads


@contextmanager
def nginx_in_front(tmp: Path, upstream: str, binary: str = "nginx") -> Iterator[Proxy]:
    """The pod's nginx on a free loopback port in front of ``upstream`` (host:port), with its
    prefix (pid file, buffered bodies) in ``tmp``/nginx, as the pod has /tmp."""
    port, status = free_port(), free_port()
    prefix = tmp / "nginx"
    prefix.mkdir()
    (prefix / "nginx.conf").write_text(proxy_conf(f"127.0.0.1:{port}", upstream, f"127.0.0.1:{status}"))
    cmd = [binary, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-e", "stderr", "-g", nginx_globals()]
    stdout, stderr = prefix / "stdout.log", prefix / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
    try:
        wait_until(lambda: _listening(port), proc, 10, "nginx listening", stderr.read_text)
        yield Proxy(f"http://127.0.0.1:{port}", proc, stdout, f"http://127.0.0.1:{status}/stub_status")
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
