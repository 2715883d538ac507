"""Raw HTTP/1.x of every framing a client could send, to the real Gunicorn and through the
pod's nginx in front of it (Hypothesis).

test_api_fuzz.py sends well-framed requests through Flask's test client; here the bytes on the
wire vary: request line, header names and values, Content-Length and Transfer-Encoding alone,
both, repeated or malformed, chunked bodies cut short or mis-sized, bodies shorter or longer than
declared (the rest reads as a second request). Whatever comes back must be HTTP with no 5xx and
a JSON error for each refusal, and the one worker must live through all of it: no restart, no
traceback in the log.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections import Counter
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import jpeg_bytes
from tests.serving import connect
from tests.stack import nginx_in_front
from tools.local_server import gunicorn

pytestmark = pytest.mark.servers

PHOTO = jpeg_bytes((60, 120, 90))
T = TypeVar("T")
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3}) ", re.MULTILINE)
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length: *(\d+)")


def mostly(common: st.SearchStrategy[T], odd: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``common`` five times in six, else ``odd``: most requests get far enough to reach the app."""
    return st.integers(0, 5).flatmap(lambda n: odd if n == 0 else common)


def crlf_free(data: bytes) -> bytes:
    return data.replace(b"\r", b"").replace(b"\n", b"")


tokens = st.text("abcdefghijklmnopqrstuvwxyz-_.~!#$%&'*+^`|0123456789", min_size=1, max_size=12).map(str.encode)
# What the API's clients send, in the main: a photo, feedback, a probe.
USUAL = [
    (b"POST", b"/predict", b"image/jpeg"),
    (b"POST", b"/predict", b"multipart/form-data; boundary=x"),
    (b"POST", b"/feedback", b"application/json"),
    (b"GET", b"/health", None),
]
odd_requests = st.tuples(
    st.sampled_from([b"GET", b"HEAD", b"PUT", b"OPTIONS"]) | tokens,
    st.sampled_from([b"/", b"/predict?x=1", b"*", b"http://a/predict", b"//predict"])
    | st.binary(max_size=20).map(lambda b: b"/" + b),
    st.none() | st.sampled_from([b"text/plain", b"image/jpeg", b"application/json"]),
)
versions = mostly(
    st.just(b"HTTP/1.1") | st.just(b"HTTP/1.0"), st.sampled_from([b"HTTP/2.0", b"HTTP/1.10", b"http/1.1", b"HTTP/1"])
)
# Header values: printable ASCII mostly, now and then any byte but CR and LF.
values = mostly(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(str.encode),
    st.binary(max_size=30).map(crlf_free),
)
bodies = mostly(st.sampled_from([PHOTO, PHOTO, PHOTO[:300], b"", b'{"label": "cat"}']), st.binary(max_size=64))
odd_lengths = st.sampled_from([b"-1", b"+5", b"0x10", b"5 ", b"1e3", b"99999999999999999999", b"5, 5", b""])
transfer_codings = mostly(
    st.just(b"chunked"), st.sampled_from([b"Chunked", b"gzip, chunked", b"chunked, gzip", b" chunked", b"identity"])
)


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` in chunks, its sizes and ending right or (now and then) wrong."""
    out, at = b"", 0
    while at < len(body):
        size = draw(st.integers(1, len(body) - at))
        declared = draw(mostly(st.just(b"%x" % size), st.sampled_from([b"%X;ext=1" % size, b"zz", b"%x" % (size + 1)])))
        out, at = out + declared + b"\r\n" + body[at : at + size] + b"\r\n", at + size
    return out + draw(mostly(st.just(b"0\r\n\r\n"), st.sampled_from([b"0\r\nTrailer: x\r\n\r\n", b"", b"0\r\n"])))


@st.composite
def framed(draw: st.DrawFn, body: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers that say how long ``body`` is, and ``body`` as sent."""
    framing = draw(mostly(st.just("length"), st.sampled_from(["chunked", "both", "none", "odd length"])))
    headers = []
    if framing in ("length", "both"):
        off_by = draw(mostly(st.just(0), st.sampled_from([-1, 1, 7])))
        headers.append((b"Content-Length", b"%d" % (len(body) + off_by)))
    if framing == "odd length":
        headers.append((b"Content-Length", draw(odd_lengths)))
    if framing in ("chunked", "both"):
        headers.append((b"Transfer-Encoding", draw(transfer_codings)))
        return headers, draw(chunked(body))
    return headers, body


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    method, target, content_type = draw(mostly(st.sampled_from(USUAL), odd_requests))
    headers, body = draw(framed(draw(bodies)))
    if draw(mostly(st.just(True), st.just(False))):
        headers.append((b"Host", b"127.0.0.1"))
    if content_type:
        headers.append((b"Content-Type", content_type))
    names = mostly(tokens, st.sampled_from([b"Expect", b"Connection", b"Content-Length", b"Transfer-Encoding"]))
    headers += draw(st.lists(st.tuples(names, values), max_size=2))
    eol = draw(mostly(st.just(b"\r\n"), st.just(b"\n")))
    head = b" ".join([method, target, draw(versions)]) + eol
    head += b"".join(name + b": " + value + eol for name, value in draw(st.permutations(headers)))
    return head + eol + body


def statuses(reply: bytes) -> list[int]:
    return [int(code) for code in _STATUS_LINE.findall(reply)]


def check_reply(raw: bytes, reply: bytes) -> None:
    """Every response in ``reply`` is below 500; the first, if a refusal, is the API's JSON."""
    codes = statuses(reply)
    assert all(code < 500 for code in codes), reply[:500]
    if codes and codes[0] >= 400 and not raw.startswith(b"HEAD "):  # a HEAD's answer has no body
        head, rest = reply.split(b"\r\n\r\n", 1)
        length = _CONTENT_LENGTH.search(head)
        assert length, head
        body = json.loads(rest[: int(length[1])])
        assert set(body) == {"error", "detail"} and body["detail"], body


def first_answer(url: str, raw: bytes, half_close: bool, wait: float = 1) -> bytes:
    """Send ``raw``; the first response, read as far as its Content-Length says, or what came
    before the server closed or ``wait`` seconds passed (a request it still waits on the rest of).
    ``half_close`` ends our side after the request, so that Gunicorn reads an end instead of
    waiting for more; nginx takes that for a client that gave up, and never answers it."""
    reply = b""
    with connect(url, timeout=wait) as sock, contextlib.suppress(TimeoutError, ConnectionError):
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        while b"\r\n\r\n" not in reply and (data := sock.recv(65536)):
            reply += data
        head = reply.split(b"\r\n\r\n", 1)[0]
        length = _CONTENT_LENGTH.search(head)
        body = int(length[1]) if length and not raw.startswith(b"HEAD ") else 0
        while len(reply) < len(head) + 4 + body and (data := sock.recv(65536)):
            reply += data
    return reply


@pytest.mark.parametrize("front", ["gunicorn", "nginx"])
def test_no_framing_gets_a_5xx_or_costs_the_worker(front: str, tiny_model: Path, tmp_path: Path) -> None:
    """Straight to Gunicorn (`make serve`) and through the pod's nginx (what a pod's clients get)."""
    limits = {"UPLOAD_IDLE_SECONDS": "1", "UPLOAD_DEADLINE_SECONDS": "3"}  # an unfinished body costs 1 s, not 10
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(gunicorn(tmp_path, tiny_model, workers=1, extra_env=limits))
        url = server.url if front == "gunicorn" else stack.enter_context(nginx_in_front(tmp_path, server.url)).url
        (worker,) = server.worker_pids()
        seen: Counter[int] = Counter()

        @given(raw=raw_requests())
        def property_(raw: bytes) -> None:
            reply = first_answer(url, raw, front == "gunicorn")
            seen.update(statuses(reply)[:1] or [0])
            check_reply(raw, reply)

        property_()
        print("answers (0: none):", dict(sorted(seen.items())))
        assert seen[200] and seen[400] and seen[413] + seen[415] + seen[422], seen  # reaches the app, and its refusals
        assert server.worker_pids() == [worker], "the worker was replaced"
        assert statuses(first_answer(url, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n", False)) == [200]
        lines = server.log_lines()
    assert not [line for line in lines if "Traceback" in line or '"level": "ERROR"' in line], lines[-20:]
