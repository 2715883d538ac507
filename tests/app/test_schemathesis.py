"""The OpenAPI document against the real server: schemathesis generates requests from it (valid
and invalid ones, every operation) and checks each answer: no 5xx, a documented status and
content type, a body that matches its schema, invalid input refused with a 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from app.pages import load_openapi
from tools.local_server import Server, gunicorn

pytestmark = pytest.mark.servers

# Every check schemathesis has, but that a request the schema allows is accepted: a schema
# cannot say "bytes that decode as a photo" or "a token this server signed", so random ones
# are refused with their documented 4xx, as they must be. A batch of more photos than its
# maxItems is refused with 413 (too_many_files), beside the statuses schemathesis expects.
CHECKS = {
    "positive_data_acceptance": {"enabled": False},
    "negative_data_rejection": {"expected-statuses": [400, 404, 405, 406, 413, 415, 422]},
}
# The document the service serves, as written: the test below proves the server keeps to it.
SCHEMA = schemathesis.openapi.from_dict(load_openapi("test"), config=SchemathesisConfig.from_dict({"checks": CHECKS}))


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    with gunicorn(tmp, tiny_model, workers=1) as running:
        yield running


@SCHEMA.parametrize()
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_every_answer_keeps_to_the_document(case: schemathesis.Case, server: Server) -> None:
    case.call_and_validate(base_url=server.url, timeout=30)
