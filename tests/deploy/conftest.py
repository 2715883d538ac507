"""The real image, built once per session by deploy/image.sh with podman, in a storage of the
tests' own that is removed afterwards (the images, the build stage, the stand-ins)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.deploy.podman import Podman, isolated_podman
from tests.helpers import ROOT


@dataclass(frozen=True)
class Image:
    name: str
    build_seconds: float
    record: dict[str, str]


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    with isolated_podman(tmp_path_factory.mktemp("podman")) as engine:
        yield engine


@pytest.fixture(scope="session")
def image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> Image:
    """`make image`'s script, with podman; 5-7 minutes here (the base stand-in and torch included)."""
    record = tmp_path_factory.mktemp("record") / "image.json"
    tag = f"test-{os.getpid()}"
    env = {**podman.env, "CONTAINER_ENGINE": "podman", "IMAGE_TAG": tag, "IMAGE_RECORD": str(record)}
    start = time.monotonic()
    built = subprocess.run(
        ["deploy/image.sh", "build"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800
    )
    seconds = time.monotonic() - start
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    info = json.loads(record.read_text())
    assert info["target"] == "podman" and info["image"].endswith(f":{tag}")
    return Image(info["image"], seconds, info)
