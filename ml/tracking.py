"""MLflow set-up shared by training and the registry.

Default: a local SQLite store (``sqlite:///mlflow.db``) with artifacts in ``mlartifacts/`` beside
it; ``MLFLOW_TRACKING_URI`` points everything elsewhere: a SQLite file that outlives a Jenkins
workspace (artifacts beside it too), or a team server, unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ARTIFACT_FOLDER = "mlartifacts"


def artifact_root(uri: str) -> Path | None:
    """Where a local store keeps the artifacts its registry points at: beside the database, so
    both outlive the build that wrote them. None for a server, which has its own."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).resolve().parent / ARTIFACT_FOLDER
    if uri.startswith("file:"):
        return Path(ARTIFACT_FOLDER).resolve()
    return None


def tracking_uri() -> str:
    """The store every command uses: MLFLOW_TRACKING_URI, else the local default."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def configure(experiment: str) -> str:
    """Point MLflow at the tracking store and make sure the experiment exists; returns its id."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        mlflow.set_experiment(experiment_id=found.experiment_id)
        return str(found.experiment_id)
    root = artifact_root(uri)
    location = root.as_uri() if root else None
    experiment_id = mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


# What decides a model: a change here makes the recorded commit "-dirty". DVC's own outputs
# (models/, dvc.lock, metrics.json) are rewritten by the run itself, so they never count.
SOURCE_PATHS = ("ml", "params.yaml", "dvc.yaml", "requirements.txt")


def git_commit() -> str:
    """The commit the code ran at, with ``-dirty`` when the model's sources had changes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *SOURCE_PATHS], capture_output=True, text=True)
        return sha + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def log_to_run(run_id: object, experiment: str, metrics: dict[str, float], files: list[Path], folder: str) -> bool:
    """Attach later results (evaluation, robustness) to the run that trained the model, when
    this store has that run; says so and returns False when it does not."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not run_id:
        return False
    configure(experiment)
    client = MlflowClient()
    try:
        client.get_run(str(run_id))
    except MlflowException:
        print(f"note: run {run_id} is not in this MLflow store; results not logged there", file=sys.stderr)
        return False
    for key, value in metrics.items():
        client.log_metric(str(run_id), key, value)
    for file in files:
        client.log_artifact(str(run_id), str(file), folder)
    return True


if __name__ == "__main__":  # `python -m ml.tracking`: the store's URI, for `mlflow ui` and scripts
    print(tracking_uri())
