"""Real binaries on loopback for the end-to-end tests: Prometheus with the project's rules (made
fast), the pod's nginx and its exporter. The real files are transformed here (shorter `for` and
evaluation intervals, loopback addresses), never copied by hand."""

from __future__ import annotations

import importlib.util
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.helpers import require_tool as tool
from tools import local_server
from tools.local_server import ROOT, Proxy, free_port


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
        local_server.wait_until(
            lambda: local_server.answers(ready_url, timeout=1),
            proc,
            30,
            f"{cmd[0]} to start",
            lambda: log.read_text()[-2000:],
        )
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def fast_rules(out: Path) -> Path:
    """The project's rule files with every group evaluated each second and every `for` 3 s."""
    out.mkdir()
    for name in ("recording.yml", "alerts.yml"):
        rules = yaml.safe_load((ROOT / "prometheus" / "rules" / name).read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["for"] = "3s"
        (out / name).write_text(yaml.safe_dump(rules, sort_keys=False))
    return out


def load_script(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.parent.name + "_" + path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prometheus(
    stack: ExitStack, tmp: Path, targets: dict[str, list[str]], port: int, alertmanager: str = "127.0.0.1:9"
) -> str:
    """Real Prometheus on loopback with the project's rules (made fast), scraping ``targets``
    (job name: host:port list) each second; its URL."""
    render = load_script(ROOT / "prometheus" / "render_local.py").render
    config = render(targets, alertmanager, "1s", fast_rules(tmp / "rules"))
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    command = [
        tool("prometheus"),
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    stack.enter_context(process(command, tmp / "prometheus.log", f"http://127.0.0.1:{port}/-/ready"))
    return f"http://127.0.0.1:{port}"


def query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]  # type: ignore[no-any-return]


@contextmanager
def nginx_in_front(tmp: Path, upstream_url: str) -> Iterator[Proxy]:
    """The pod's nginx.conf run by Debian's nginx in front of the server at ``upstream_url``."""
    nginx = tool(local_server.nginx_binary() or "nginx")
    with local_server.nginx_in_front(tmp, upstream_url.removeprefix("http://"), nginx) as proxy:
        yield proxy


@contextmanager
def nginx_exporter(tmp: Path, proxy: Proxy) -> Iterator[str]:
    """Debian's nginx-prometheus-exporter reading ``proxy``'s stub_status, as the pod's
    proxy-metrics container does; its host:port."""
    exporter = tool("prometheus-nginx-exporter")
    address = f"127.0.0.1:{free_port()}"
    command = [exporter, f"--nginx.scrape-uri={proxy.status_url}", f"--web.listen-address={address}"]
    with process(command, tmp / "nginx-exporter.log", f"http://{address}/metrics"):
        yield address
