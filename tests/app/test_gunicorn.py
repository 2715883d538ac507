"""The real server: Gunicorn with 2 workers, metrics summed across them, feedback across them,
and SIGTERM draining a request in flight."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from app import SECURITY_HEADERS
from tests.conftest import jpeg_bytes
from tests.serving import RFC3339_MS, ROOT, connect, exchange, metric_sum, read_all, run_python
from tests.stack import wait_for
from tools import local_server
from tools.local_server import PROXY_CONF, Server, gunicorn

pytestmark = pytest.mark.servers

N = 24
BAD_REQUEST = {"error": "bad_request", "detail": "the request could not be read as HTTP"}


def header_fields(head: bytes) -> dict[str, str]:
    """The fields of a response head, after its status line."""
    lines = head.decode("latin-1").split("\r\n")[1:]
    return dict(line.split(": ", 1) for line in lines)


def predict(url: str, i: int) -> dict[str, object]:
    resp = requests.post(
        f"{url}/predict",
        files={"file": ("p.jpg", jpeg_bytes((200, 60, 50) if i % 2 else (40, 70, 210), seed=i))},
        headers={"Connection": "close", "X-Request-ID": f"req-{i}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def test_metrics_and_feedback_across_workers(tiny_model: Path, tiny_package: Path, tmp_path: Path) -> None:
    # As `make serve` and the image run it: the ONNX graph, loaded before the fork.
    env = {"MODEL_PACKAGE": str(tiny_package)}
    with gunicorn(tmp_path, tiny_model, workers=2, extra_env=env) as server, ThreadPoolExecutor(4) as pool:
        assert requests.get(f"{server.url}/ready", timeout=10).json()["engine"] == "onnxruntime"
        # Set in the master before the fork, published again by each worker: it read 0 before.
        assert [metric_sum(server.url, "model_ready") for _ in range(4)] == [1.0] * 4
        # One series, the card's figure, not one per process (tiny_model's card says 0.5).
        assert [metric_sum(server.url, "model_test_accuracy") for _ in range(4)] == [0.5] * 4
        # The scrape is not a request in flight (it read 1 when idle); an upload on its way is,
        # whichever worker holds it and whichever answers /metrics.
        assert [metric_sum(server.url, "http_requests_in_flight") for _ in range(4)] == [0.0] * 4
        photo = jpeg_bytes((200, 60, 50))
        with connect(server.url) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                b"Content-Length: %d\r\n\r\n" % len(photo) + photo[:100]
            )
            wait_for("the upload in flight", lambda: metric_sum(server.url, "http_requests_in_flight") == 1.0, 10)
        wait_for("no request in flight", lambda: metric_sum(server.url, "http_requests_in_flight") == 0.0, 10)
        bodies = list(pool.map(lambda i: predict(server.url, i), range(N)))
        # Whichever worker answers /metrics, it reports every worker's predictions.
        assert [metric_sum(server.url, "predictions_total") for _ in range(6)] == [N] * 6

        def send_feedback(body: dict[str, object]) -> int:
            resp = requests.post(
                f"{server.url}/feedback",
                json={"feedback_token": body["feedback_token"], "label": "cat"},
                headers={"Connection": "close"},
                timeout=10,
            )
            return resp.status_code

        assert list(pool.map(send_feedback, bodies)) == [200] * N
        assert [metric_sum(server.url, "feedback_total") for _ in range(4)] == [N] * 4
        # The same token again is refused on this replica, whichever worker gets it.
        assert list(pool.map(send_feedback, bodies[:4])) == [409] * 4

        events = [json.loads(line) for line in server.log_lines() if line.startswith("{")]
        # Gunicorn's own lines and the app's share one formatter (app/observability.py).
        assert {"gunicorn.error", "app.access"} <= {e["name"] for e in events}
        assert all(re.fullmatch(RFC3339_MS, e["asctime"]) for e in events), events[0]
        served_by = {e["request_id"]: e["process"] for e in events if e.get("event") == "prediction"}
        judged_by = {e["request_id"]: e["process"] for e in events if e.get("event") == "feedback"}
        assert len(set(served_by.values())) == 2, "both workers should have served predictions"
        crossed = [rid for rid, pid in judged_by.items() if served_by[rid] != pid]
        assert crossed, "no feedback reached a worker other than the one that made its prediction"


def test_sigterm_drains_the_request_in_flight(tiny_model: Path, tmp_path: Path) -> None:
    body = jpeg_bytes((200, 60, 50), size=(64, 64))
    boundary = "----pet"
    payload = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + body
        + f"\r\n--{boundary}--\r\n".encode()
    )
    with gunicorn(tmp_path, tiny_model, workers=1) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(
                f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload[:100]
            )
            time.sleep(0.5)  # the worker is now reading this request
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            conn.sendall(payload[100:])
            response = b""
            while chunk := conn.recv(65536):
                response += chunk
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        assert b'"prediction"' in response
        server.process.wait(timeout=30)
        assert server.process.returncode == 0


def test_a_worker_that_replaces_another_reports_the_model_ready_too(tiny_model: Path, tmp_path: Path) -> None:
    """model_ready on /metrics is the minimum over live processes. A replacement worker (after a
    crash, or past max_requests) publishes its own 1, and the dead worker's sample goes."""
    with gunicorn(tmp_path, tiny_model, workers=2) as server:
        before = server.worker_pids()
        os.kill(before[0], signal.SIGKILL)
        wait_for("a third worker ready", lambda: server.ready_workers() >= 3, 60)
        after = server.worker_pids()
        assert len(after) == 2 and before[0] not in after, (before, after)
        assert [metric_sum(server.url, "model_ready") for _ in range(4)] == [1.0] * 4


def test_a_worker_past_max_requests_skips_the_teardown_and_loses_no_record(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """worker_exit ends a clean exit at once (the interpreter's teardown of a torch process held
    the replacement back about 350 ms): no teardown runs, yet every access line is in the log,
    the master sees exit code 0, and the replacement serves."""
    probe = tmp_path / "teardown_probe.conf.py"
    probe.write_text(
        f"exec(open({str(ROOT / 'gunicorn.conf.py')!r}).read())\n"
        "_post_fork = post_fork\n"
        "def post_fork(server, worker):\n"
        "    _post_fork(server, worker)\n"
        "    import atexit\n"
        "    atexit.register(lambda: print('interpreter teardown ran', flush=True))\n"
    )
    monkeypatch.setattr(local_server, "GUNICORN_CMD", ["gunicorn", "-c", str(probe)])
    env = {"GUNICORN_MAX_REQUESTS": "3", "GUNICORN_MAX_REQUESTS_JITTER": "0"}
    with local_server.gunicorn(tmp_path, tiny_model, workers=1, extra_env=env) as server:
        ids = [predict(server.url, i)["request_id"] for i in range(10)]
        lines = server.log_lines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    logged = [e["request_id"] for e in events if e.get("event") == "access" and e["path"] == "/predict"]
    assert logged == ids
    assert sum("Autorestarting worker" in line for line in lines) >= 3
    assert not [line for line in lines if "exited with code" in line or "was sent SIG" in line]
    # No worker tore down: neither those restarted nor the last, stopped with the server.
    assert sum("interpreter teardown ran" in line for line in lines) == 0


def test_a_chunked_upload_over_the_limit_is_refused_not_cut_short(tiny_model: Path, tmp_path: Path) -> None:
    # Chunked bodies carry no Content-Length; Werkzeug would hand over the first LIMIT bytes.
    limit, photo = 50_000, jpeg_bytes((200, 60, 50), size=(64, 64))
    with gunicorn(tmp_path, tiny_model, workers=1, extra_env={"MAX_UPLOAD_BYTES": str(limit)}) as server:

        def send_chunked(size: int) -> requests.Response:
            body = photo + b"\0" * (size - len(photo))  # Pillow ignores bytes after the image
            chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
            headers = {"Content-Type": "image/jpeg", "Connection": "close"}
            return requests.post(f"{server.url}/predict", data=chunks, headers=headers, timeout=30)

        over = send_chunked(limit + 30_000)
        assert over.status_code == 413 and over.json()["error"] == "file_too_large", over.text
        assert send_chunked(limit).status_code == 200  # exactly the limit is allowed
        assert send_chunked(len(photo)).status_code == 200

        # The same for JSON: cut at the limit, it used to read as malformed (400 invalid_json).
        token = json.dumps("x" * (limit + 30_000)).encode()
        body = b'{"label": "cat", "feedback_token": ' + token + b"}"
        chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
        headers = {"Content-Type": "application/json", "Connection": "close"}
        big = requests.post(f"{server.url}/feedback", data=chunks, headers=headers, timeout=30)
        assert big.status_code == 413 and big.json()["error"] == "file_too_large", big.text


def assert_the_worker_shrugged_it_off(server: Server, worker: list[int]) -> None:
    """After clients that timed out: the same worker, one INFO line for the headers that never
    ended, no error logged, and the next photo served."""
    assert server.worker_pids() == worker  # not killed at GUNICORN_TIMEOUT
    events = [json.loads(line) for line in server.log_lines() if line.startswith("{")]
    assert [e["level"] for e in events if e["message"].startswith("client_timeout")] == ["INFO"]
    assert not [e for e in events if e["level"] in ("ERROR", "CRITICAL")], "a silent client is not an error"
    assert requests.post(f"{server.url}/predict", files={"file": ("p.jpg", jpeg_bytes((1, 2, 3)))}, timeout=10).ok


def test_a_stalled_upload_gets_408_and_the_worker_lives_on(tiny_model: Path, tmp_path: Path) -> None:
    env = {
        "UPLOAD_IDLE_SECONDS": "1",
        "UPLOAD_DEADLINE_SECONDS": "5",
        "GUNICORN_TIMEOUT": "6",
        "MAX_UPLOAD_BYTES": "4000",
    }
    with gunicorn(tmp_path, tiny_model, workers=1, extra_env=env) as server:
        worker = server.worker_pids()
        boundary = "stall"
        part = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n\r\n'
        stalls = [
            ("image/jpeg", "Content-Length: 3000", b"\xff\xd8" * 500),
            (f"multipart/form-data; boundary={boundary}", "Content-Length: 3000", part.encode() + b"\xff" * 900),
            # chunked: one chunk of exactly the limit (0xfa0 = 4000 bytes), then nothing
            ("image/jpeg", "Transfer-Encoding: chunked", b"fa0\r\n" + b"\xff" * 4000 + b"\r\n"),
        ]
        for content_type, length, sent in stalls:
            with connect(server.url, timeout=10) as sock:
                head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{length}\r\n\r\n"
                sock.sendall(head.encode() + sent)
                reply = read_all(sock).decode()  # and it sends no more
            assert reply.startswith("HTTP/1.1 408"), reply
            assert json.loads(reply.split("\r\n\r\n", 1)[1])["error"] == "upload_timeout"
        with connect(server.url, timeout=10) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # and the headers never end
            assert read_all(sock) == b""  # closed, no HTML 500
        assert_the_worker_shrugged_it_off(server, worker)


def test_requests_gunicorn_cannot_parse_get_json_and_leave_no_client_text_in_the_log(
    tiny_model: Path, tmp_path: Path
) -> None:
    """Gunicorn answers these itself with an HTML page and quotes their bytes in its warning: the
    client gets the API's JSON error (nginx's words for the same case), the log Gunicorn's words."""
    assert f"return 400 '{json.dumps(BAD_REQUEST)}" in PROXY_CONF.read_text()  # the pod's nginx says the same
    sent = [
        b"GET /x Jane-Doe\r\n\r\n",  # not an HTTP version
        b"jane /x HTTP/1.1\r\n\r\n",  # not a method
        b"GET /x HTTP/1.1\r\nJane Doe: 1\r\n\r\n",  # not a header name
        b"GET /x HTTP/1.1\r\nHost: a\r\nX: Jane\r\n Doe\r\n\r\n",  # obsolete line folding
    ]
    with gunicorn(tmp_path, tiny_model, workers=1) as server:
        for raw in sent:
            head, body = exchange(server.url, raw, timeout=10).split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 400 ") and b"Content-Type: application/json" in head
            assert int(re.search(rb"Content-Length: (\d+)", head)[1]) == len(body)  # type: ignore[index]
            assert SECURITY_HEADERS.items() <= header_fields(head).items(), head
            assert json.loads(body) == BAD_REQUEST
        # Gunicorn's own answer was "501 Bad Request" (tests/app/test_http_fuzz.py found it).
        coding = b"POST /predict HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Jane-Doe\r\n\r\n"
        head, body = exchange(server.url, coding, timeout=10).split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), head
        assert json.loads(body)["error"] == "bad_request" and "send chunked" in json.loads(body)["detail"]
        assert json.loads(body)["detail"].replace("'", "\\'") in PROXY_CONF.read_text()  # nginx's words too
        sent.append(coding)
        wait_for("the warnings", lambda: sum("Invalid request" in line for line in server.log_lines()) == len(sent), 5)
        lines = server.log_lines()
    assert not [line for line in lines if "Jane" in line or "jane" in line]
    warned = [json.loads(line)["message"] for line in lines if "Invalid request" in line]
    assert warned == [
        "Invalid request from ip=127.0.0.1: Invalid HTTP Version",
        "Invalid request from ip=127.0.0.1: Invalid HTTP method",
        "Invalid request from ip=127.0.0.1: Invalid HTTP header name",
        "Invalid request from ip=127.0.0.1: Obsolete line folding is unacceptable",
        "Invalid request from ip=127.0.0.1: Unsupported transfer coding",
    ]


def test_a_trailer_field_a_chunked_body_may_not_hold_is_a_400_not_a_500(tiny_model: Path, tmp_path: Path) -> None:
    """Gunicorn parses trailer fields as the app reads the body, and raises inside the app
    (tests/app/test_http_fuzz.py found it: an ERROR with a traceback, and a 500)."""
    head = b"POST /predict HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Type: image/jpeg\r\n\r\n"
    with gunicorn(tmp_path, tiny_model, workers=1) as server:
        (worker,) = server.worker_pids()
        for trailer in (b"Trailer: x", b"Content-Length: 5", b"Jane Doe: x"):
            head_, body = exchange(server.url, head + b"1\r\n\x00\r\n0\r\n" + trailer + b"\r\n\r\n").split(
                b"\r\n\r\n", 1
            )
            assert head_.startswith(b"HTTP/1.1 400 "), head_
            assert json.loads(body) == BAD_REQUEST
        assert server.worker_pids() == [worker]
        lines = server.log_lines()
    assert not [line for line in lines if '"level": "ERROR"' in line]


def test_a_request_gunicorn_failed_on_is_logged_without_its_uri() -> None:
    """Gunicorn logs "Error handling request GET /path?query" with the traceback; the traceback stays."""
    import logging

    from app.gunicorn_worker import ClientTextFilter

    record = logging.LogRecord("gunicorn.error", logging.ERROR, __file__, 1, "Error handling request %s %s", None, None)
    record.args = ("GET", "/shelter/Jane-Doe?pet=Whiskers")
    record.exc_info = (RuntimeError, RuntimeError("boom"), None)
    assert ClientTextFilter().filter(record)
    assert record.getMessage() == "Error handling request (its method and URI are not logged)"
    assert record.exc_info[1] is not None and record.levelno == logging.ERROR


def test_gunicorns_own_500_reads_as_the_apis(tiny_model: Path, tmp_path: Path) -> None:
    """A request Gunicorn fails on outside the app gets the app's own 500 body, in JSON."""
    from gunicorn import util

    from app import create_app
    from app.gunicorn_worker import JsonErrorSocket
    from tests.app.test_api import post_file

    class Wire:
        sent = b""

        def sendall(self, data: bytes) -> None:
            self.sent += data

        def gettimeout(self) -> float:
            return 0.0

    wire = Wire()
    util.write_error(JsonErrorSocket(wire), 500, "Internal Server Error", "GET /Jane-Doe")
    head, body = wire.sent.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n") and b"application/json" in head
    assert SECURITY_HEADERS.items() <= header_fields(head).items(), head
    app = create_app({"MODEL_DIR": str(tiny_model), "FAULT_INJECTION": True, "FEEDBACK_DIR": str(tmp_path)})
    assert json.loads(body) == post_file(app.test_client(), b"x").get_json()  # the app's own 500


def trickle(url: str, head: bytes, seconds: float = 12) -> bytes:
    """Send ``head``, then a byte every 0.3 s (never silent for long) until the server answers or
    closes; what it sent back."""
    reply, give_up = b"", time.monotonic() + seconds
    with connect(url, timeout=10) as sock:
        sock.sendall(head)
        sock.settimeout(0.3)
        while time.monotonic() < give_up:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                sock.sendall(b"a")
                continue
            except OSError:  # reset: the worker was killed
                break
            if not chunk:
                break
            reply += chunk
    return reply


def test_a_trickling_client_gets_408_at_the_deadline_and_the_worker_lives_on(tiny_model: Path, tmp_path: Path) -> None:
    """A byte now and then defeats the idle timeout: the stock worker read on until Gunicorn's
    timeout killed it, and the client got nothing."""
    env = {"UPLOAD_IDLE_SECONDS": "1", "UPLOAD_DEADLINE_SECONDS": "2", "GUNICORN_TIMEOUT": "6"}
    with gunicorn(tmp_path, tiny_model, workers=1, extra_env=env) as server:
        worker = server.worker_pids()
        upload = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 3000\r\n\r\n"
        reply = trickle(server.url, upload).decode()
        assert reply.startswith("HTTP/1.1 408"), reply
        assert json.loads(reply.split("\r\n\r\n", 1)[1])["error"] == "upload_timeout"
        assert trickle(server.url, b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: ") == b""  # closed
        assert_the_worker_shrugged_it_off(server, worker)


def test_a_deadline_past_the_worker_timeout_is_refused_at_start(tmp_path: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "UPLOAD_DEADLINE_SECONDS": "30"}
    run = run_python("import runpy; runpy.run_path('gunicorn.conf.py')", env=env, check=False)
    assert run.returncode != 0
    assert "UPLOAD_DEADLINE_SECONDS (30) must be below GUNICORN_TIMEOUT (30)" in run.stderr


# As the Gunicorn master does with preload_app: load the app, run the pre_fork hook, fork; the
# worker then runs a full collection, as Python does now and then on its own.
_COLLECT_AFTER_FORK = """
import gc, os, re, runpy, sys
config = runpy.run_path("gunicorn.conf.py")
from app import create_app
create_app({"MODEL_DIR": sys.argv[1], "FEEDBACK_DIR": sys.argv[2]})
config["pre_fork"](None, None)

def private_mib():
    rollup = open("/proc/self/smaps_rollup").read()
    return sum(int(kib) for kib in re.findall(r"Private_(?:Dirty|Clean):\\s+(\\d+)", rollup)) // 1024

pid = os.fork()
if pid == 0:
    before = private_mib()
    gc.collect()
    print(private_mib() - before, flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_workers_garbage_collection_leaves_the_preloaded_pages_shared(tiny_model: Path, tmp_path: Path) -> None:
    """Without gc.freeze in pre_fork a worker's first full collection copied 112 MiB of the
    master's objects (it writes to every object's header) and paused it for 240 ms."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    run = run_python(_COLLECT_AFTER_FORK, str(tiny_model), str(tmp_path / "seen"), env=env)
    copied_mib = int(run.stdout.split()[-1])
    assert copied_mib < 16, f"a full collection in the worker copied {copied_mib} MiB of shared pages"


def test_the_server_is_handed_over_once_every_worker_takes_requests(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first /health used to be enough: a test or benchmark then ran on one worker while
    the second still booted (CI saw 24 of 24 predictions on one worker)."""
    slow = tmp_path / "slow_second_worker.conf.py"
    slow.write_text(
        "import time\n"
        f"exec(open({str(ROOT / 'gunicorn.conf.py')!r}).read())\n"
        "_post_fork = post_fork\n"
        "def post_fork(server, worker):\n"
        "    _post_fork(server, worker)\n"
        "    if worker.age == 2:\n"
        "        time.sleep(2)\n"
    )
    monkeypatch.setattr(local_server, "GUNICORN_CMD", ["gunicorn", "-c", str(slow)])
    with local_server.gunicorn(tmp_path, tiny_model, workers=2) as server, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: predict(server.url, i), range(N)))
        events = [json.loads(line) for line in server.log_lines() if line.startswith("{")]
    assert len({e["process"] for e in events if e.get("event") == "prediction"}) == 2


def test_gunicorn_opens_no_control_socket_in_home(tiny_model: Path, tmp_path: Path) -> None:
    # Gunicorn 25.1+ opens a control socket at $HOME/.gunicorn/gunicorn.ctl by default: under the
    # image's read-only root it logged an ERROR at every start, and on a host every instance of
    # one user shared the one socket. The service never uses it.
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": ""}
    with gunicorn(tmp_path, tiny_model, workers=1, extra_env=env) as server:
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
        assert list(home.iterdir()) == []
        assert not [line for line in server.log_lines() if '"ERROR"' in line or "Control server" in line]
