"""The service in-process: the Flask app on the tiny release, and its test client."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app


@pytest.fixture
def app(tiny_model: Path, tmp_path: Path) -> Flask:
    return create_app(
        {
            "TESTING": True,
            "MODEL_DIR": str(tiny_model),
            "FEEDBACK_DIR": str(tmp_path / "seen"),
            "MAX_UPLOAD_BYTES": 2_000_000,
        }
    )


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
