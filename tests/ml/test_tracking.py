"""ml/tracking.py: where runs and their artifacts live."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from ml import tracking


def test_a_store_elsewhere_keeps_its_artifacts_beside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Jenkins points MLFLOW_TRACKING_URI at a database that outlives the workspace; the
    # artifacts (the registered models) must outlive it too, not land in the build's folder.
    store, workspace = tmp_path / "jenkins_home" / "mlflow", tmp_path / "workspace"
    store.mkdir(parents=True)
    workspace.mkdir()
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    experiment = tracking.configure("tests")
    location = mlflow.get_experiment(experiment).artifact_location
    assert location == (store / "mlartifacts").as_uri()


def test_the_laptop_default_is_a_database_and_artifacts_in_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    experiment = tracking.configure("tests")
    assert (tmp_path / "mlflow.db").is_file()
    assert mlflow.get_experiment(experiment).artifact_location == (tmp_path / "mlartifacts").as_uri()
