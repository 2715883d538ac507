from __future__ import annotations

import io
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from app import create_app
from tests.helpers import save_tiny_release

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "models"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (untrained) release model, for tests that need a model but not a good one."""
    out = tmp_path_factory.mktemp("tiny-model")
    save_tiny_release(out, test_metrics={"accuracy": 0.5, "n": 0}, mlflow_run_id="test")
    return out


@pytest.fixture(scope="session")
def tiny_package(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_model compiled with AOTInductor, as `make export-model` compiles the release (~10 s)."""
    from ml.artifact import load_release
    from ml.export import export_package

    return export_package(load_release(tiny_model), tmp_path_factory.mktemp("tiny-package") / "model.pt2")


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
