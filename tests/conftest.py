"""Shared fixtures: synthetic photo trees, the real photo folder, an isolated MLflow store."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from PIL import Image

from tests.helpers import ROOT, save_tiny_release

REAL_PHOTOS = Path(os.environ.get("PETS_DIR", ROOT.parent / "shared" / "pets" / "PetImages"))

# Property tests (Hypothesis): CI runs a fixed set of cases, the same on every run, so that a
# red build is a finding and not bad luck; HYPOTHESIS_PROFILE=long searches far wider.
_QUIET = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("ci", _QUIET, max_examples=300, derandomize=True)
settings.register_profile("long", _QUIET, max_examples=20_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def jpeg_bytes(color: tuple[int, int, int], size: tuple[int, int] = (48, 40), seed: int = 0, **save: object) -> bytes:
    """A small photo-like JPEG: a colour with noise, so each seed gives different bytes."""
    rng = random.Random(seed)
    im = Image.new("RGB", size, color)
    px = im.load()
    assert px is not None
    for _ in range(size[0] * size[1] // 4):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        px[x, y] = tuple(max(0, min(255, c + rng.randint(-60, 60))) for c in color)  # type: ignore[index]
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, **save)
    return buf.getvalue()


def many_scans_jpeg(scans: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small progressive JPEG holding ``scans`` scans (its last one repeated)."""
    from tools.jpeg_samples import with_scans

    return with_scans(jpeg_bytes((90, 120, 150), size=size, progressive=True), scans)


CAT_COLOUR, DOG_COLOUR = (200, 60, 50), (40, 70, 210)


def write_tree(root: Path, layout: str, n_per_class: int = 20, seed: int = 0) -> Path:
    """A labelled tree in one of the supported layouts; reddish cats, bluish dogs."""
    for label, colour in (("cat", CAT_COLOUR), ("dog", DOG_COLOUR)):
        for i in range(n_per_class):
            data = jpeg_bytes(colour, seed=seed * 100_000 + i * 2 + (label == "dog"))
            if layout == "petimages":
                path = root / "PetImages" / label.capitalize() / f"{i}.jpg"
            elif layout == "plural":
                path = root / f"{label}s" / f"{i}.jpg"
            elif layout == "train_plural":
                path = root / "train" / f"{label}s" / f"{i}.jpg"
            elif layout == "flat":
                path = root / f"{label}.{i}.jpg"
            else:
                raise ValueError(layout)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return root / "PetImages" if layout == "petimages" else root


@pytest.fixture
def synthetic_tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "photos", "plural", n_per_class=30)


@pytest.fixture
def real_photos() -> Path:
    """The shared PetImages folder; a clear failure (never a skip) when it is missing."""
    if not (REAL_PHOTOS / "Cat").is_dir() or not (REAL_PHOTOS / "Dog").is_dir():
        pytest.fail(f"real photos not found at {REAL_PHOTOS} (expected Cat/ and Dog/ inside; set PETS_DIR)")
    return REAL_PHOTOS


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite tracking store and artifact folder under tmp_path, as the current dir."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (untrained) release model, for tests that need a model but not a good one."""
    out = tmp_path_factory.mktemp("tiny-model")
    save_tiny_release(out, test_metrics={"accuracy": 0.5, "n": 0}, mlflow_run_id="test")
    return out


@pytest.fixture(scope="session")
def tiny_package(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_model's ONNX graph, as `make export-model` exports the release."""
    from ml.artifact import load_release
    from ml.export import export_graph

    return export_graph(load_release(tiny_model), tmp_path_factory.mktemp("tiny-package") / "model.onnx")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that takes the real photos is marked `photos`, so that the marker cannot drift
    from what the test needs (`make test-unit` deselects it)."""
    for item in items:
        if "real_photos" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.photos)
