"""The real entry points on a few hundred real photos: prepare → train → register → evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ml.evaluate import main as evaluate_main
from ml.prepare import main as prepare_main
from ml.registry import main as registry_main
from ml.train import main as train_main
from tests.helpers import write_params


def test_pipeline_on_real_photos(
    real_photos: Path, tmp_path: Path, mlflow_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "pets"
    for folder in ("Cat", "Dog"):
        (source / folder).mkdir(parents=True)
        for photo in sorted((real_photos / folder).glob("*.jpg"))[:150]:
            (source / folder / photo.name).symlink_to(photo)  # links, never copies of the data set
    params = write_params(
        tmp_path / "params.yaml",
        {
            "model": {"name": "tiny_cnn", "image_size": 64, "freeze_backbone": False},
            "train": {"epochs": 1, "batch_size": 32, "threads": 2},
            "gate": {"min_accuracy": 0.0},
        },
        source,
    )
    assert prepare_main(["--params", str(params), "--out", "prepared"]) == 0
    assert train_main(["--params", str(params), "--manifest", "prepared/manifest.csv", "--out", "models"]) == 0
    card = json.loads(Path("models/model.json").read_text())
    assert card["test_metrics"]["n"] == 30

    assert registry_main(["promote", "--params", str(params), "--manifest", "prepared/manifest.csv"]) == 0
    assert registry_main(["release", "--params", str(params)]) == 0  # as passed smoke tests do
    client = MlflowClient()
    champion = client.get_model_version_by_alias("CatsDogsClassifier", "champion")
    assert champion.run_id == card["mlflow_run_id"]
    run = client.get_run(card["mlflow_run_id"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(card["test_metrics"]["accuracy"])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "data")}
    assert "data/data_report.json" in logged

    capsys.readouterr()
    assert evaluate_main(["--manifest", "prepared/manifest.csv", "--source", str(source), "--model", "models"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["n"] == 30
    assert figures["accuracy"] == pytest.approx(card["test_metrics"]["accuracy"])  # the same model, end to end
