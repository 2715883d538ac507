"""Small builders shared by tests: a trained tiny model and a manifest over synthetic photos."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ml.config import SplitParams
from ml.prepare import prepare

# The repository root, for every test module.
ROOT = Path(__file__).resolve().parents[1]

TINY_PARAMS: dict[str, Any] = {
    "model": {"name": "tiny_cnn", "image_size": 32, "freeze_backbone": False},
    "train": {"epochs": 4, "batch_size": 16, "lr": 0.01, "threads": 1, "augment": {"crop_scale": 0.9}},
    "gate": {"min_accuracy": 0.5},
    "mlflow": {"experiment": "tests"},
}


def save_tiny_release(
    out: Path, image_size: int = 32, seed: int = 0, not_a_pet_threshold: float | None = None, **card: Any
) -> dict[str, Any]:
    """A real (untrained) tiny_cnn release in ``out``; ``card`` adds to or overrides its card.
    With ``not_a_pet_threshold`` it carries a not-a-pet detector of 4 random centroids: -1 flags
    every photo (a distance is at least 0), 3 none (at most 2)."""
    import torch
    from torch.nn import functional as F

    from ml.artifact import save_release
    from ml.models import build_model
    from ml.not_a_pet import METHOD, NotAPetDetector

    torch.manual_seed(seed)
    model = build_model("tiny_cnn")
    if not_a_pet_threshold is not None:
        model.detector = NotAPetDetector(model.classifier.in_features, 4)
        model.detector.centroids.copy_(F.normalize(torch.randn(4, model.classifier.in_features), dim=1))
        card["not_a_pet"] = {"method": METHOD, "centroids": 4, "threshold": not_a_pet_threshold}
    base = {
        "architecture": "tiny_cnn",
        "image_size": image_size,
        "classes": ["cat", "dog"],
        "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
        "test_metrics": {"accuracy": 0.5},
    }
    return save_release(model, base | card, out)


def write_params(path: Path, overrides: dict[str, Any] | None = None, source: Path | None = None) -> Path:
    params: dict[str, Any] = {k: dict(v) for k, v in TINY_PARAMS.items()}
    for section, values in (overrides or {}).items():
        params.setdefault(section, {}).update(values)
    if source is not None:
        params["data"] = {"source": str(source)}
    path.write_text(yaml.safe_dump(params))
    return path


def prepared(source: Path, out: Path) -> Path:
    prepare(source, out, 42, SplitParams(), workers=1)
    return out / "manifest.csv"


def nginx_connection_limit() -> int:
    """limit_conn in the pod's nginx.conf: requests at once per pod, past which it answers 429."""
    from tools.local_server import PROXY_CONF

    conf = PROXY_CONF.read_text()
    found = re.search(r"^\s*limit_conn pod (\d+);", conf, re.MULTILINE)
    assert found, "no 'limit_conn pod N;' in nginx.conf"
    return int(found[1])


def require_tool(name: str, installer: str = "make system-deps") -> str:
    """A binary or file the test drives: skipped on a laptop without it, a failure under CI=true."""
    found = shutil.which(name) or (name if Path(name).is_file() else None)
    if found:
        return found
    message = f"{name} is needed ({installer} installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def make_variable(name: str) -> list[str]:
    """The words of a Makefile variable, as make expands it."""
    out = subprocess.run(
        ["make", "-s", "--eval", f"print-var: ; @echo $({name})", "print-var"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split()
