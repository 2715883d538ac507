"""Gunicorn's sync worker with time limits on reading each request (gunicorn.conf.py names it
as ``worker_class``).

The stock worker reads with no timeout. A client that goes silent mid-headers or mid-upload
then holds the worker until Gunicorn's ``timeout`` kills it, and that client gets an HTML 500;
so does one that trickles a byte every few seconds. Here each read waits at most
``UPLOAD_IDLE_SECONDS``, and the whole request must arrive within ``UPLOAD_DEADLINE_SECONDS``
of the connection being accepted. Past either limit during the headers the connection is
closed; during the upload the app answers 408 (app/errors.py). Either way the worker lives on.

Requests Gunicorn cannot parse get the API's JSON error instead of its HTML page, and the
filters below keep a client's own text out of Gunicorn's log lines (gunicorn.conf.py).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.workers.sync import SyncWorker

from app import SECURITY_HEADERS
from app.errors import INTERNAL_ERROR, NOT_HTTP, error_name
from app.settings import ServerSettings

# Logged by each worker as it enters its accept loop (gunicorn.conf.py's post_worker_init);
# tools/local_server.py waits for one per worker.
READY_MESSAGE = "Worker ready with pid"


class DeadlineSocket:
    """A client socket whose reads each wait at most the timeout set on it and, together,
    end at a deadline. Everything else is the socket's own (Gunicorn duck-types on ``recv``)."""

    def __init__(self, sock: socket.socket, timeout: float, seconds: float) -> None:
        self._sock = sock
        self._timeout: float | None = timeout
        self._deadline = time.monotonic() + seconds
        sock.settimeout(timeout)

    def settimeout(self, value: float | None) -> None:  # Gunicorn sets one to drain at close
        self._timeout = value
        self._sock.settimeout(value)

    def recv(self, size: int) -> bytes:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive within UPLOAD_DEADLINE_SECONDS")
        self._sock.settimeout(left if self._timeout is None else min(self._timeout, left))
        try:
            return self._sock.recv(size)
        finally:  # the deadline is for the request: sending the reply keeps the plain timeout
            self._sock.settimeout(self._timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


# What Gunicorn's own error pages say, in the API's JSON shape: for 400 nginx's words for the
# same case (deploy/k8s/app/nginx.conf), for 500 the app's; never the client's bytes, which
# Gunicorn's page quotes. Gunicorn answers a Transfer-Encoding it does not read (anything but
# chunked, and gzip, deflate or compress before it) with "501 Bad Request": a client's error
# reported as the server's. RFC 9112 section 6.3 asks for 400 wherever chunked is not the final
# coding, all of those but "x, chunked", so it is 400 here, as for every bad request.
_OWN_ERRORS = {
    400: (400, *NOT_HTTP),
    500: (500, *INTERNAL_ERROR),
    501: (400, "bad_request", "the request's Transfer-Encoding is not one this server reads: send chunked"),
}


class JsonErrorSocket:
    """The client socket, as Gunicorn's ``handle_error`` writes its HTML error page to it: the
    page goes out as the API's JSON error ``{"error", "detail"}`` with the same status, and
    with the security headers every answer of the API carries."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def sendall(self, data: bytes) -> None:
        status_line = data.split(b"\r\n", 1)[0].decode("latin-1")  # "HTTP/1.1 400 Bad Request"
        version, code, reason = status_line.split(" ", 2)
        status, error, detail = _OWN_ERRORS.get(int(code), (int(code), error_name(reason), reason))
        body = json.dumps({"error": error, "detail": detail}).encode() + b"\n"
        fields = {
            "Connection": "close",
            "Content-Type": "application/json",
            **SECURITY_HEADERS,
            "Content-Length": len(body),
        }
        head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        self._sock.sendall(f"{version} {status} {HTTPStatus(status).phrase}\r\n{head}\r\n".encode("latin-1") + body)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class TimeLimitedSyncWorker(SyncWorker):  # type: ignore[misc]
    def init_process(self) -> None:
        # Read once per worker, before its accept loop, not on every accepted connection.
        limits = ServerSettings.from_env()
        self.idle_seconds, self.deadline_seconds = limits.upload_idle_seconds, limits.upload_deadline_seconds
        super().init_process()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        # Bad input gets JSON here too: requests Gunicorn cannot parse, when it faces clients
        # itself (`make serve`; in the pod nginx answers those first, in the same words).
        super().handle_error(req, JsonErrorSocket(client), addr, exc)

    def accept(self, listener: Any) -> None:
        client: socket.socket
        client, addr = listener.accept()
        util.close_on_exec(client)
        if self.cfg.is_ssl:  # ssl wraps only a real socket: the idle limit alone
            client.settimeout(self.idle_seconds)
            self.handle(listener, client, addr)
        else:
            self.handle(listener, DeadlineSocket(client, self.idle_seconds, self.deadline_seconds), addr)


class ClientTimeoutFilter(logging.Filter):
    """Gunicorn logs a client that timed out mid-headers as an ERROR with a traceback. The
    client caused it, so it becomes one INFO line that says so (gunicorn.conf.py's logging)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TimeoutError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = "client_timeout: headers not received within UPLOAD_IDLE_SECONDS or UPLOAD_DEADLINE_SECONDS"
            record.args = ()
            record.exc_info = record.exc_text = None
        return True


# Gunicorn's words for a request it could not parse, before it quotes the client's bytes.
_INVALID_REQUEST = re.compile(r"(Invalid request from ip=\S+: [^:'\"(]*[^:'\"( ])")


class ClientTextFilter(logging.Filter):
    """Gunicorn quotes what a client sent when it refuses a request it cannot parse ("Invalid
    HTTP Version: 'whatever the client wrote'") and the URI of a request it failed on. The logs
    never hold a client's own text, so only Gunicorn's words are kept (gunicorn.conf.py's
    logging). In the pod nginx refuses such requests first; `make serve` faces them itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if found := _INVALID_REQUEST.match(message):
            record.msg, record.args = found[1], ()
        elif message.startswith("Error handling request"):
            record.msg, record.args = "Error handling request (its method and URI are not logged)", ()
        return True
