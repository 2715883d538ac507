from __future__ import annotations

import io
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from app import create_app

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "models"


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


def encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()
