"""The committed pipeline state agrees with itself: dvc.lock, params, the release model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from ml.artifact import load_release
from ml.config import load_params
from ml.download import main as download_main

ROOT = Path(__file__).resolve().parent.parent


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


def test_no_network_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"data: {{source: {tmp_path / 'absent'}}}\n")
    # Port 9 on loopback refuses at once: the same failure as having no network.
    code = download_main(
        ["--params", str(params), "--dest", str(tmp_path / "raw"), "--url", "http://127.0.0.1:9/x.zip"]
    )
    assert code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no network" in err[0] and "raw/cats" in err[0]
    assert not (tmp_path / "raw").exists()


def test_present_photos_are_not_downloaded_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "raw" / "cats").mkdir(parents=True)
    (tmp_path / "raw" / "cats" / "1.jpg").write_bytes(b"x")
    params = tmp_path / "params.yaml"
    params.write_text(f"data: {{source: {tmp_path / 'absent'}}}\n")
    assert (
        download_main(["--params", str(params), "--dest", str(tmp_path / "raw"), "--url", "http://127.0.0.1:9/"]) == 0
    )
    assert "nothing to download" in capsys.readouterr().out
