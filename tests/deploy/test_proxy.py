"""The pod's nginx (deploy/k8s/app/nginx.conf), run as written with Debian's nginx in front of the
real Gunicorn on loopback: only its addresses change (tools/local_server.proxy_conf). Gunicorn
here has one worker and a 2 s upload deadline, so a slow client would hold the worker and then
time out without the proxy."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from openapi_schema_validator import OAS30Validator

from app.settings import Settings
from tests.conftest import jpeg_bytes
from tests.serving import RFC3339_MS, ROOT, connect, exchange, read_all, schema_for
from tests.stack import nginx_exporter, nginx_in_front, prometheus, query, wait_for
from tools import local_server
from tools.local_server import Proxy, Server, free_port, gunicorn

pytestmark = pytest.mark.servers

PHOTO = jpeg_bytes((200, 60, 50), size=(320, 240))
UPLOAD_HEAD = (
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n" % len(PHOTO)
)


@functools.cache
def openapi() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "app" / "openapi.yaml").read_text())  # type: ignore[no-any-return]


def assert_documented(path: str, method: str, status: int, body: object) -> None:
    """An answer of nginx's is one the API's OpenAPI document promises clients."""
    OAS30Validator(schema_for(openapi(), path, method, status)).validate(body)


def own_answers(proxy: Proxy, expected: int) -> list[dict[str, object]]:
    """nginx's JSON access lines, one per request it answered itself, once ``expected`` are
    written (nginx logs a request after its client may have read the answer) or 5 s passed."""
    deadline = time.monotonic() + 5
    while len(proxy.stdout.read_text().splitlines()) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # room for a line too many to show up
    return [json.loads(line) for line in proxy.stdout.read_text().splitlines()]


@pytest.fixture(scope="module")
def api(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"UPLOAD_IDLE_SECONDS": "1", "UPLOAD_DEADLINE_SECONDS": "2", "GUNICORN_TIMEOUT": "6"}
    with gunicorn(tmp_path_factory.mktemp("api"), tiny_model, workers=1, extra_env=env) as server:
        yield server


@pytest.fixture
def proxy(api: Server, tmp_path: Path) -> Iterator[Proxy]:
    with nginx_in_front(tmp_path, api.url) as p:
        yield p


def slow_upload(url: str, seconds: float, started: threading.Event | None = None) -> bytes:
    """PHOTO in 20 pieces spread over ``seconds`` (more than the API's 2 s deadline); the reply."""
    step = len(PHOTO) // 20 + 1
    with connect(url) as sock:
        sock.sendall(UPLOAD_HEAD)
        try:
            for i in range(0, len(PHOTO), step):
                sock.sendall(PHOTO[i : i + step])
                if started:
                    started.set()
                time.sleep(seconds / 20)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed: read its answer
        return read_all(sock)


def status_and_json(reply: bytes) -> tuple[int, dict[str, object]]:
    head, body = reply.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def predict(url: str, **kw: object) -> requests.Response:
    return requests.post(f"{url}/predict", files={"file": ("p.jpg", PHOTO)}, timeout=30, **kw)  # type: ignore[arg-type]


def test_a_slow_upload_reaches_the_api_whole_while_the_worker_serves_others(api: Server, proxy: Proxy) -> None:
    # Without the proxy: the one worker reads the slow upload itself and gives up at its deadline.
    assert status_and_json(slow_upload(api.url, seconds=4))[0] == 408

    started, done, replies = threading.Event(), threading.Event(), []

    def upload() -> None:
        replies.append(slow_upload(proxy.url, seconds=4, started=started))
        done.set()

    sender = threading.Thread(target=upload)
    sender.start()
    assert started.wait(10)
    others = predict(proxy.url)  # the only worker is free: nginx holds the slow one
    still_uploading = not done.is_set()
    sender.join(30)
    assert others.status_code == 200 and still_uploading
    status, body = status_and_json(replies[0])
    assert status == 200 and body["prediction"] in ("cat", "dog"), body


def test_a_chunked_upload_is_buffered_and_classified(proxy: Proxy) -> None:
    pieces = (PHOTO[i : i + 1000] for i in range(0, len(PHOTO), 1000))
    resp = requests.post(f"{proxy.url}/predict", data=pieces, headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert resp.status_code == 200 and resp.json()["prediction"] in ("cat", "dog"), resp.text


def test_the_proxy_refuses_exactly_what_the_api_refuses_with_the_same_json(api: Server, proxy: Proxy) -> None:
    too_big = b"x" * (Settings.max_upload_bytes + 1)  # the API's default limit (as in settings.env), plus one

    def send(url: str, body: bytes) -> requests.Response:
        headers = {"Content-Type": "image/jpeg", "X-Request-ID": "big-1"}
        return requests.post(f"{url}/predict", data=body, headers=headers, timeout=30)

    direct, proxied = send(api.url, too_big), send(proxy.url, too_big)
    assert direct.status_code == proxied.status_code == 413
    assert proxied.json() == direct.json(), "nginx's 413 should read as the API's"
    assert_documented("/predict", "post", 413, proxied.json())
    assert proxied.headers["X-Request-ID"] == "big-1"
    assert proxied.headers["X-Content-Type-Options"] == direct.headers["X-Content-Type-Options"] == "nosniff"
    # One byte less is the API's to judge: it gets through and is found not to be an image.
    at_limit = send(proxy.url, too_big[:-1])
    assert at_limit.status_code == 415 and at_limit.json()["error"] == "not_an_image", at_limit.text
    assert [(a["status"], a["request_id"]) for a in own_answers(proxy, 1)] == [(413, "big-1")]


def test_the_proxys_own_errors_are_json(proxy: Proxy) -> None:
    reply = exchange(proxy.url, b"NOT HTTP AT ALL\r\n\r\n")
    assert status_and_json(reply)[0] == 400 and status_and_json(reply)[1]["error"] == "bad_request"
    assert b"X-Content-Type-Options: nosniff" in reply.split(b"\r\n\r\n")[0].split(b"\r\n")
    hidden = requests.get(f"{proxy.url}/.proxy/bad_request", timeout=10)  # nginx's internal page
    assert hidden.status_code == 404 and set(hidden.json()) == {"error", "detail"}
    assert hidden.headers["X-Content-Type-Options"] == "nosniff"
    # nginx's own codes for these are 505 and 501, in HTML (tests/app/test_http_fuzz.py found them).
    version = exchange(proxy.url, b"GET /health HTTP/2.0\r\nHost: a\r\n\r\n")
    assert status_and_json(version) == (400, status_and_json(reply)[1])
    coding = exchange(proxy.url, b"POST /predict HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n")
    assert status_and_json(coding)[0] == 400 and "send chunked" in status_and_json(coding)[1]["detail"]
    assert [a["status"] for a in own_answers(proxy, 4)] == [400, 404, 400, 400]


def test_the_proxys_own_lines_never_hold_a_clients_text(proxy: Proxy) -> None:
    """nginx answers these itself (413 past its body limit, 400 for what is not HTTP) and logs
    each as the API would: by route or "<unknown>", and by method or "<other>"."""
    too_big = b"x" * (Settings.max_upload_bytes + 1)
    assert requests.post(f"{proxy.url}/predict?owner=Jane", data=too_big, timeout=30).status_code == 413
    assert requests.post(f"{proxy.url}/shelter/Jane-Doe", data=too_big, timeout=30).status_code == 413
    assert requests.request("JANE", f"{proxy.url}/predict", data=too_big, timeout=30).status_code == 413
    assert exchange(proxy.url, b"GET /Jane Doe HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")
    lines = own_answers(proxy, 4)  # in the order nginx finished them, once it had read the bodies
    assert "Jane" not in proxy.stdout.read_text()
    assert "Jane" not in (proxy.stdout.parent / "stderr.log").read_text()  # nginx's error log
    assert sorted((a["method"], a["path"], a["status"]) for a in lines) == [
        ("<other>", "/predict", 413),
        ("GET", "<unknown>", 400),
        ("POST", "/predict", 413),
        ("POST", "<unknown>", 413),
    ]


def test_the_proxys_lines_have_the_apis_fields_time_and_latency_in_milliseconds(api: Server, proxy: Proxy) -> None:
    """One parser reads both: the same fields (and upstream_status), the same RFC 3339 time
    with milliseconds, and a query for slow requests (latency_ms > 1000) finds nginx's lines as
    well as the API's: nginx turns its "1.234" seconds into 1234 milliseconds."""
    request_id = "shape-check"
    assert requests.get(f"{proxy.url}/health", headers={"X-Request-ID": request_id}, timeout=10).ok
    wait_for("the API's line", lambda: any(request_id in line for line in api.log_lines()), 5)
    apis = next(json.loads(line) for line in api.log_lines() if request_id in line)
    with connect(proxy.url) as sock:  # a header line without a colon, after a pause: nginx's 400
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        time.sleep(1.2)
        sock.sendall(b"no colon here\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 400")
    assert requests.get(f"{proxy.url}/.proxy/bad_request", timeout=10).status_code == 404
    slow, quick = own_answers(proxy, 2)
    assert set(slow) == set(apis) | {"upstream_status"}, (slow, apis)
    assert (slow["status"], slow["upstream_status"], quick["upstream_status"]) == (400, "", "")
    assert isinstance(slow["latency_ms"], int) and 1200 <= slow["latency_ms"] < 5000, slow
    assert isinstance(quick["latency_ms"], int) and 0 <= quick["latency_ms"] < 1000, quick
    times = [datetime.fromisoformat(line["asctime"]) for line in (apis, slow, quick)]
    assert all(re.fullmatch(RFC3339_MS, line["asctime"]) for line in (apis, slow, quick)), (apis, slow, quick)
    assert times == sorted(times) and (times[-1] - times[0]).total_seconds() < 10, times


def test_request_ids_follow_the_apis_rule_on_either_side(proxy: Proxy) -> None:
    assert predict(proxy.url, headers={"X-Request-ID": "staff-upload-7"}).headers["X-Request-ID"] == "staff-upload-7"
    bad_id = {"X-Request-ID": "not allowed: spaces"}
    hidden = requests.get(f"{proxy.url}/.proxy/bad_request", headers=bad_id, timeout=10)
    made = hidden.headers["X-Request-ID"]  # nginx answered: it applies the API's rule itself
    assert hidden.status_code == 404 and re.fullmatch(r"[0-9a-f]{32}", made), made
    assert [a["request_id"] for a in own_answers(proxy, 1)] == [made]


def test_past_64_requests_at_once_the_next_is_told_to_retry(proxy: Proxy) -> None:
    held = hold_uploads(proxy, 64)
    try:
        deadline = time.monotonic() + 10
        while (busy := predict(proxy.url)).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)  # nginx has yet to read every header
        assert busy.status_code == 429 and busy.json()["error"] == "too_many_requests", busy.text
        assert busy.headers["Retry-After"] == "2" and busy.headers["X-Content-Type-Options"] == "nosniff"
        assert_documented("/predict", "post", 429, busy.json())
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while (resp := predict(proxy.url)).status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.1)  # nginx notices the closed connections
    assert resp.status_code == 200, resp.text


def test_with_the_api_down_clients_get_503_json_and_retry_after(tmp_path: Path) -> None:
    with nginx_in_front(tmp_path, f"127.0.0.1:{free_port()}") as proxy:  # nothing listens upstream
        resp = requests.post(f"{proxy.url}/predict", files={"file": ("p.jpg", PHOTO)}, timeout=10)
        line = own_answers(proxy, 1)
    assert resp.status_code == 503 and resp.json()["error"] == "service_unavailable", resp.text
    assert_documented("/predict", "post", 503, resp.json())
    assert resp.headers["Retry-After"] == "5" and resp.headers["X-Request-ID"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    # The why, which nginx's error log no longer holds (nginx.conf): the API refused the connection.
    assert [(a["status"], a["upstream_status"]) for a in line] == [(503, "502")]


def buffering_to_disk(proxy: Proxy) -> bool:
    """Whether an nginx worker holds a body in a temporary file (unlinked at once, so seen in /proc)."""
    workers = subprocess.run(["pgrep", "-P", str(proxy.process.pid)], capture_output=True, text=True).stdout.split()
    for pid in workers:
        with contextlib.suppress(FileNotFoundError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if "/client_body/" in os.readlink(fd):
                        return True
    return False


def test_sigquit_lets_the_upload_in_flight_finish_and_takes_no_new_ones(proxy: Proxy) -> None:
    """The image's stop signal (SIGQUIT): what Kubernetes sends when the pod goes."""
    body = b"x" * (1536 * 1024)  # over nginx's 1 MiB in memory: its temporary file shows it is reading
    with connect(proxy.url) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nConnection: close\r\n")
        sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body[:-1000])
        deadline = time.monotonic() + 10
        while not buffering_to_disk(proxy):
            assert time.monotonic() < deadline, "nginx did not start buffering the body"
            time.sleep(0.05)
        proxy.process.send_signal(signal.SIGQUIT)
        while time.monotonic() < deadline:  # the listening socket closes at once
            try:
                connect(proxy.url).close()
            except OSError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("nginx still takes connections after SIGQUIT")
        sock.sendall(body[-1000:])
        status, answer = status_and_json(read_all(sock))
    assert (status, answer["error"]) == (415, "not_an_image")  # the API's verdict: the body got through
    assert proxy.process.wait(timeout=10) == 0


def hold_uploads(proxy: Proxy, n: int) -> list[socket.socket]:
    """``n`` uploads that have sent their headers and part of their body: nginx holds each."""
    held = []
    for _ in range(n):
        sock = connect(proxy.url)
        sock.sendall(UPLOAD_HEAD + PHOTO[:100])
        held.append(sock)
    return held


def test_prometheus_counts_the_requests_nginx_holds_and_pages_when_it_goes(api: Server, tmp_path: Path) -> None:
    """The pod's exporter, Prometheus and the project's rules, with the real nginx: the recording
    rule counts exactly the requests limit_conn counts, and PetClassifierProxyDown fires when
    nginx stops while Gunicorn still serves."""
    with ExitStack() as stack:
        proxy = stack.enter_context(nginx_in_front(tmp_path, api.url))
        exporter = stack.enter_context(nginx_exporter(tmp_path, proxy))
        targets = {"pet-classifier": [api.url.removeprefix("http://")], "pet-classifier-proxy": [exporter]}
        prom = prometheus(stack, tmp_path, targets, free_port())

        def in_flight() -> list[float]:
            return [float(r["value"][1]) for r in query(prom, "instance:pet_proxy_requests_in_flight:count")]

        wait_for("the proxy counted idle", lambda: in_flight() == [0.0], 30)
        held = hold_uploads(proxy, 5)
        try:
            wait_for("5 requests held", lambda: in_flight() == [5.0], 30)
            assert predict(proxy.url).status_code == 200  # one more passes through and is gone
        finally:
            for sock in held:
                sock.close()
        wait_for("the held requests let go", lambda: in_flight() == [0.0], 30)

        def proxy_down() -> list[dict[str, Any]]:
            return query(prom, 'ALERTS{alertname="PetClassifierProxyDown",alertstate="firing"}')

        assert proxy_down() == []
        proxy.process.terminate()
        proxy.process.wait(timeout=10)
        (alert,) = wait_for("PetClassifierProxyDown to fire", proxy_down, 30)
        assert alert["metric"]["severity"] == "critical"
        assert query(prom, 'up{job="pet-classifier"}')[0]["value"][1] == "1"  # Gunicorn still up
        assert query(prom, 'ALERTS{alertname="PetClassifierApiDown"}') == []


@pytest.mark.parametrize(
    ("pod", "moved"),
    [("listen 8080;", "listen 9090;"), ("server 127.0.0.1:8000;", "server 127.0.0.1:8001;"),
     ("listen 127.0.0.1:8081;", "listen 127.0.0.1:9113;")],
)  # fmt: skip
def test_a_config_whose_ports_moved_is_refused_rather_than_run_half_changed(
    tmp_path: Path, pod: str, moved: str
) -> None:
    changed = tmp_path / "nginx.conf"
    changed.write_text(local_server.PROXY_CONF.read_text().replace(pod, moved))
    with pytest.raises(ValueError, match=f"one '{re.escape(pod)}'"):
        local_server.proxy_conf("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", source=changed)
    conf = local_server.proxy_conf("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
    assert "listen 127.0.0.1:1;" in conf and "server 127.0.0.1:2;" in conf and "listen 127.0.0.1:3;" in conf
