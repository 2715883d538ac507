"""podman for the tests: a storage of the test's own (its images, containers and layers are
removed with it), the project's containers.conf, and a clear failure under CI=true when podman
cannot run here."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from deploy.pod import CONTAINERS_CONF, Podman
from tests.helpers import require_tool


@contextmanager
def isolated_podman(folder: Path) -> Iterator[Podman]:
    require_tool("podman")
    require_tool("runc")
    require_tool("debootstrap")
    conf = folder / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{folder}/graph"\nrunroot = "{folder}/run"\n')
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF), "CONTAINERS_STORAGE_CONF": str(conf)}
    engine = Podman(env)
    info = engine("info", check=False)
    if info.returncode != 0:
        message = f"podman cannot run here: {info.stderr.strip()[-500:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield engine
    finally:
        engine("rm", "--all", "--force", "--time", "0", check=False)
        engine("rmi", "--all", "--force", check=False, timeout=600)
        subprocess.run(["umount", "--recursive", "--lazy", str(folder / "graph" / "overlay")], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
