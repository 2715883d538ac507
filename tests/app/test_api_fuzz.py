"""Requests of every shape a client could send (Hypothesis): none gets a 5xx, and every refusal
says why in the API's JSON, with the security headers and a usable request id.

The hand-written cases in test_api.py name the bad inputs we thought of; this draws methods,
paths, headers, multipart forms (field names, file names, part types), raw bodies and JSON of
any shape, feedback tokens real, forged and odd, and shrinks a failure to the smallest request.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

from flask.testing import FlaskClient
from hypothesis import event, given
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from app import SECURITY_HEADERS
from tests.conftest import jpeg_bytes

ROUTES = ("/", "/predict", "/feedback", "/version", "/health", "/ready", "/metrics", "/openapi.json", "/docs")
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
PHOTO = jpeg_bytes((120, 90, 60))
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# What a header can carry: WSGI gives them to the app as Latin-1 text, without control characters.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)
# A path of the client's choosing (a query is drawn apart from it; "//" would read as a host).
path_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="?#\x7f"), max_size=40)
# Any text a URL or a form can carry (UTF-8); JSON can hold lone surrogates ("\ud800") too,
# which no UTF-8 encoder takes.
any_text = st.text(max_size=40)
json_text = st.text(st.characters(exclude_categories=()), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | json_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(json_text, inner, max_size=3),
    max_leaves=8,
)
content_types = (
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=latin-1",
            "text/plain",
            "image/jpeg",
            "image/x-anything",
            "application/octet-stream",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "",
        ]
    )
    | header_text
)
bodies = st.sampled_from([b"", PHOTO, PHOTO[:200], b"{}", b"\xff\xd8\xff"]) | st.binary(max_size=300)


@st.composite
def forms(draw: st.DrawFn) -> dict[str, Any]:
    """A multipart form: mostly a part named file, and others, files or text, under any names.
    A file part is (bytes, file name, type); send() opens it afresh for each request."""
    names = draw(st.lists(header_text, max_size=2))
    if draw(st.integers(0, 3)):
        names.append("file")
    form: dict[str, Any] = {}
    for name in names:
        if name == "file" or draw(st.booleans()):
            form[name] = (draw(bodies), draw(st.none() | header_text | any_text), draw(content_types))
        else:
            form[name] = draw(any_text)
    return form


@st.composite
def feedback_bodies(draw: st.DrawFn, token: str) -> bytes:
    """JSON for /feedback: the two fields with values of any type, beside others, or not an object."""
    if draw(st.integers(0, 4)) == 0:
        return json.dumps(draw(json_values)).encode()
    payload: dict[str, Any] = draw(st.dictionaries(json_text, json_values, max_size=2))
    if draw(st.integers(0, 3)):
        forged = token[:-4] + "AAAA"
        payload["feedback_token"] = draw(st.sampled_from([token, token, forged, token + "\ud800"]) | json_values)
    if draw(st.integers(0, 3)):
        payload["label"] = draw(st.sampled_from(["cat", "dog", "Cat", "cat "]) | json_values)
    return json.dumps(payload).encode()  # ensure_ascii: lone surrogates travel as \ud800 escapes


def requests_for(token: str) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments for FlaskClient.open: a third each to /predict, to /feedback, and to
    any method and path."""
    headers = st.dictionaries(
        st.sampled_from(["X-Request-ID", "Accept", "Content-Encoding", "Transfer-Encoding"]), header_text
    )
    extras = {"headers": headers, "query_string": st.dictionaries(header_text, any_text, max_size=2)}
    raw = {"data": bodies, "content_type": content_types}
    predict = st.one_of(
        st.fixed_dictionaries({"data": forms(), "content_type": st.just("multipart/form-data")}),
        st.fixed_dictionaries(raw),
    ).map(lambda body: {"path": "/predict", "method": "POST", **body})
    feedback = st.one_of(
        st.fixed_dictionaries({"data": feedback_bodies(token), "content_type": st.just("application/json")}),
        st.fixed_dictionaries(raw),
    ).map(lambda body: {"path": "/feedback", "method": "POST", **body})
    anything = st.fixed_dictionaries(
        {
            "path": st.sampled_from(ROUTES) | path_text.map(lambda s: "/" + s.lstrip("/")),
            "method": st.sampled_from(METHODS),
            **raw,
        }
    )
    return st.builds(
        lambda target, more: {**target, **more}, predict | feedback | anything, st.fixed_dictionaries(extras)
    )


def send(client: FlaskClient, request: dict[str, Any]) -> TestResponse:
    data = request["data"]
    if isinstance(data, dict):  # a form: each file part as a fresh stream
        data = {k: (io.BytesIO(v[0]), *v[1:]) if isinstance(v, tuple) else v for k, v in data.items()}
    return client.open(**{**request, "data": data})


@given(data=st.data())
def test_no_request_gets_a_5xx_and_every_refusal_says_why(client: FlaskClient, data: st.DataObject) -> None:
    token = client.post("/predict", data=PHOTO, content_type="image/jpeg").get_json()["feedback_token"]
    request = data.draw(requests_for(token))
    # Sent twice where drawn so: a second feedback with one token, a form read twice.
    for resp in [send(client, request) for _ in range(data.draw(st.integers(1, 2)))]:
        route = request["path"] if request["path"] in ROUTES else "<other>"
        event(f"{request['method']} {route} {resp.status_code} {(resp.get_json(silent=True) or {}).get('error')}")
        assert resp.status_code < 500, (resp.status_code, resp.get_data()[:300])
        assert SECURITY_HEADERS.items() <= dict(resp.headers).items()
        assert _REQUEST_ID.fullmatch(resp.headers["X-Request-ID"])
        if resp.status_code >= 400 and request["method"] != "HEAD":
            body = resp.get_json(silent=True)
            assert isinstance(body, dict) and set(body) == {"error", "detail"}, resp.get_data()[:300]
            assert isinstance(body["error"], str) and isinstance(body["detail"], str) and body["detail"]
