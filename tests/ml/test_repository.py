"""The committed pipeline state agrees with itself: dvc.lock, params, the release model."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import yaml

from ml.artifact import load_release
from ml.config import load_params
from tests.helpers import ROOT


def lock() -> dict[str, object]:
    return yaml.safe_load((ROOT / "dvc.lock").read_text())


def test_committed_outputs_match_dvc_lock() -> None:
    stages = lock()["stages"]  # type: ignore[index]
    checked = 0
    for name in ("train", "evaluate"):
        for out in stages[name]["outs"]:
            path = ROOT / out["path"]
            if path.is_file() and out["path"].startswith(("models/", "metrics.json")):
                assert hashlib.md5(path.read_bytes()).hexdigest() == out["md5"], f"{out['path']} differs from dvc.lock"
                checked += 1
    assert checked == 3  # models/model.safetensors, models/model.json, metrics.json


def test_dvc_lock_has_the_code_every_stage_ran() -> None:
    """A code dependency edited without `dvc repro` or `dvc commit` (a reformat too) makes a
    fresh clone's `make pipeline` retrain from scratch: CI has no photos to see it by."""
    stages = lock()["stages"]  # type: ignore[index]
    stale = [
        f"{name}: {dep['path']}"
        for name, stage in stages.items()
        for dep in stage["deps"]
        if dep["path"].endswith(".py") and hashlib.md5((ROOT / dep["path"]).read_bytes()).hexdigest() != dep["md5"]
    ]
    assert stale == [], f"changed since dvc.lock (dvc repro, or dvc commit when outputs stay): {stale}"


def test_dvc_lock_params_are_the_current_params() -> None:
    stages = lock()["stages"]  # type: ignore[index]
    load_params(ROOT / "params.yaml")  # valid, and what DVC tracks is the file as written:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, section in (("prepare", "data"), ("train", "model"), ("train", "train")):
        assert stages[name]["params"]["params.yaml"][section] == params[section], f"{name}: params.yaml changed"


def test_release_model_loads_and_its_card_is_complete() -> None:
    release = load_release(ROOT / "models")
    card = release.card
    params = load_params(ROOT / "params.yaml")
    assert card["architecture"] == params.model.name and card["image_size"] == params.model.image_size
    for key in ("test_metrics", "training", "data", "git_commit", "mlflow_run_id", "weights", "normalization"):
        assert key in card
    assert card["training"]["seconds"] > 0 and card["training"]["images_per_second"] > 0
    metrics = json.loads((ROOT / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(card["test_metrics"]["accuracy"])
    assert card["test_metrics"]["accuracy"] >= params.gate.min_accuracy


def test_the_manifest_path_is_one_setting() -> None:
    """The CLIs default to ml.data.MANIFEST; dvc.yaml and the Makefile, which must name files,
    name that one."""
    from ml.data import MANIFEST

    dvc = (ROOT / "dvc.yaml").read_text()
    named = set(re.findall(r"[\w/]+/manifest\.csv", dvc + (ROOT / "Makefile").read_text()))
    assert named == {MANIFEST.as_posix()}
    stages = yaml.safe_load(dvc)["stages"]
    assert f"{MANIFEST.parent.as_posix()}" in " ".join(map(str, stages["prepare"]["outs"]))
