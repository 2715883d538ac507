"""The pod that deploy/k8s renders, run with podman from the rendered manifest (deploy/pod.py):
the API's real image, nginx and its exporter (stand-ins from Debian's packages where no registry
answers), the same security context, volumes, ports and probes. The smoke tests run through its
nginx, a local Prometheus with the project's rules scrapes it, and the two behaviours the pod
exists for are proven under load: a stop as Kubernetes stops it fails no accepted request, and
slow uploads do not hold up a normal one."""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from deploy import pod as pods
from tests.deploy.conftest import Image
from tests.deploy.podman import Podman
from tests.helpers import ROOT
from tests.stack import prometheus, query, wait_for
from tools.local_server import free_port
from tools.smoke import known_photos
from tools.smoke import main as smoke_main

pytestmark = pytest.mark.container


@pytest.fixture
def running(podman: Podman, image: Image, tmp_path: Path) -> Iterator[pods.RunningPod]:
    pod = pods.Pod.from_manifest(pods.render(), image.name)
    pod.secrets = {("pet-classifier-secrets", "feedback-secret"): "f" * 40}
    pods.pull_or_stand_in(pod, podman)
    started = pods.start(pod, podman, {name: free_port() for name in pod.ports()}, tmp_path / "volumes")
    try:
        started.wait_ready(timeout=180)
        yield started
    finally:
        started.remove()


def photo(real_photos: Path) -> bytes:
    return known_photos(ROOT / "reports" / "test_predictions.csv", real_photos)["cat"].read_bytes()


def post_predict(url: str, body: bytes, timeout: float = 60, request_id: str = "") -> str:
    """One upload on a fresh connection: 'refused' when nothing took the connection, the status
    code otherwise, or what broke after the kernel completed the handshake."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.connect()
    except ConnectionRefusedError:
        return "refused"
    boundary = "pet-classifier-test"
    payload = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + body
        + f"\r\n--{boundary}--\r\n".encode()
    )
    try:
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if request_id:
            headers["X-Request-ID"] = request_id
        conn.request("POST", "/predict", payload, headers)
        resp = conn.getresponse()
        resp.read()
        return str(resp.status)
    except OSError as exc:
        return type(exc).__name__
    finally:
        conn.close()


def test_the_pod_serves_through_its_nginx_and_prometheus_scrapes_it(
    running: pods.RunningPod, real_photos: Path, tmp_path: Path
) -> None:
    assert smoke_main(["--url", running.url("http"), "--source", str(real_photos), "--wait", "10"]) == 0
    for container in ("api", "proxy", "proxy-metrics"):
        logs = running.logs(container)
        assert '"level": "ERROR"' not in logs and "Traceback" not in logs, logs[-3000:]
    with ExitStack() as stack:
        targets = {
            "pet-classifier": [f"127.0.0.1:{running.published['api']}"],
            "pet-classifier-proxy": [f"127.0.0.1:{running.published['proxy-metrics']}"],
        }
        url = prometheus(stack, tmp_path, targets, free_port())
        for job in targets:
            wait_for(
                f"{job} up", lambda job=job: [r for r in query(url, f'up{{job="{job}"}}') if r["value"][1] == "1"], 60
            )
        # The API's own series and nginx's, through the project's rules.
        wait_for("model_ready 1", lambda: [r for r in query(url, "model_ready") if r["value"][1] == "1"], 30)
        wait_for("nginx_up 1", lambda: [r for r in query(url, "nginx_up") if r["value"][1] == "1"], 30)
        assert [r for r in query(url, "predictions_total") if float(r["value"][1]) >= 1]


def test_a_stop_as_kubernetes_does_fails_no_request_nginx_accepted(running: pods.RunningPod, real_photos: Path) -> None:
    # Clients keep sending through the stop, as they would while the endpoint's removal spreads:
    # a refused connection was never accepted; every accepted request must get its answer.
    body, outcomes, stop = photo(real_photos), dict[str, str](), threading.Event()
    lock = threading.Lock()

    def client(worker: int) -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            request_id = f"stop-{worker}-{n}"
            outcome = post_predict(running.url("http"), body, request_id=request_id)
            with lock:
                outcomes[request_id] = outcome
            if outcome == "refused":
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(3)
    with lock:
        before = Counter(outcomes.values())
    codes = running.stop()
    stop.set()
    for t in threads:
        t.join(timeout=90)
    after = Counter(outcomes.values())
    assert set(before) == {"200"} and after["200"] > before["200"], (before, after)
    # The API's access lines say which requests nginx accepted and passed on: each got its 200.
    answered = {
        line["request_id"]: line["status"]
        for line in json_lines(running.logs("api"))
        if line.get("event") == "access" and line.get("path") == "/predict"
    }
    lost = {rid: (status, outcomes.get(rid)) for rid, status in answered.items() if outcomes.get(rid) != "200"}
    assert not lost, lost
    assert all(status == 200 for status in answered.values()), Counter(answered.values())
    # A handshake the kernel completed for a connection nginx had not yet taken is reset when
    # nginx closes its listening socket: a stop cannot avoid it (hence the preStop sleeps), and
    # such a request reached nothing. Anything else a client saw is a failure.
    unanswered = {rid: outcome for rid, outcome in outcomes.items() if outcome not in {"200", "refused"}}
    assert all(o == "ConnectionResetError" and rid not in answered for rid, o in unanswered.items()), unanswered
    assert {rid for rid, o in outcomes.items() if o == "200"} <= set(answered), "a 200 the API never logged"
    # Gunicorn and nginx exit cleanly. (Debian's exporter, the stand-in, exits 1 on SIGTERM.)
    assert codes["pet-classifier-api"] == codes["pet-classifier-proxy"] == 0, codes


def json_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def trickle(url: str, stop: threading.Event, answered: list[float]) -> None:
    """An upload that sends one byte a second until told to stop; when it got an answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(
            f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: 100000\r\nConnection: close\r\n\r\n".encode()
        )
        sock.settimeout(1)
        while not stop.is_set():
            try:
                if sock.recv(1024):
                    answered.append(time.monotonic())
                    return
            except TimeoutError:
                pass
            sock.sendall(b"x")


def test_slow_uploads_do_not_hold_up_a_normal_request(running: pods.RunningPod, real_photos: Path) -> None:
    # Two sync workers: on bare Gunicorn two trickling clients hold both until their 408 (20 s),
    # and a normal request waits behind them. nginx reads each body in full before Gunicorn sees it.
    stop, answered = threading.Event(), list[float]()
    slow = [threading.Thread(target=trickle, args=(running.url("http"), stop, answered)) for _ in range(2)]
    for t in slow:
        t.start()
    try:
        time.sleep(3)  # both are mid-upload, a byte a second
        assert post_predict(running.url("http"), photo(real_photos)) == "200"
        normal_done = time.monotonic()
        assert answered == [] or min(answered) > normal_done, "a slow upload was answered before the normal one"
    finally:
        stop.set()
        for t in slow:
            t.join(timeout=30)
