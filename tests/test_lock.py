"""requirements.lock (`make lock`, pip-tools): every pin agrees with it, and what `make setup`
installed is what it says, so a rebuild next month installs the same set."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from tests.helpers import ROOT

LOCK = ROOT / "requirements.lock"
PINNED = ("requirements.txt", "requirements-serve.txt", "requirements-model.txt", "requirements-dev.txt")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    found = (re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line) for line in path.read_text().splitlines())
    return {canonical(m.group(1)): m.group(2) for m in found if m}


def test_every_pin_is_the_locks_version() -> None:
    lock = pins(LOCK)
    assert len(lock) > 100, "requirements.lock holds the whole set, not only the direct pins"
    for name in PINNED:
        for package, version in pins(ROOT / name).items():
            assert lock.get(package) == version, (
                f"{name} pins {package}=={version}, the lock {lock.get(package)}: make lock"
            )


def installed_closure(names: list[str]) -> dict[str, str]:
    """Each installed distribution the pins pull in, by the markers of this interpreter; its version."""
    seen: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        dist = importlib.metadata.distribution(name)
        seen[name] = Version(dist.version).public  # torch from PyTorch's CPU index is 2.14.1+cpu
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonical(req.name))
    return seen


def test_what_setup_installed_is_the_lock() -> None:
    lock = pins(LOCK)
    direct = [p for name in PINNED for p in pins(ROOT / name)]
    installed = installed_closure(direct)
    assert {"torch", "flask", "jinja2", "werkzeug", "mlflow-skinny"} <= set(installed)  # the walk went deep
    unlocked = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pip-tools"]["unsafe-package"])
    assert unlocked == {"pip"}  # the venv's own pip, which the lock leaves out on purpose
    drift = {
        name: (version, lock.get(name))
        for name, version in installed.items()
        if lock.get(name) != version and name not in unlocked
    }
    assert not drift, f"installed (left) is not the lock (right): run make setup, or make lock: {drift}"
