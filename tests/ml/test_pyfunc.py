"""A registered version is a real MLflow model: pyfunc, signature, input example, requirements;
`mlflow.pyfunc.load_model` and `mlflow models serve` both answer with it."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
import torch
from mlflow import MlflowClient

from ml.artifact import load_release, predict_proba
from ml.images import load_tensor
from ml.registry import main as registry_main
from tests.conftest import jpeg_bytes
from tests.helpers import write_params
from tools.local_server import free_port

CHAMPION = "models:/CatsDogsClassifier@champion"
PHOTO = jpeg_bytes((200, 60, 50), size=(64, 48))


@pytest.fixture
def champion(tiny_model: Path, tmp_path: Path, mlflow_store: str) -> Path:
    """The tiny release registered as the pipeline registers it, and made @champion."""
    params = write_params(tmp_path / "params.yaml")
    assert registry_main(["register", "--model", str(tiny_model), "--params", str(params)]) == 0
    MlflowClient().set_registered_model_alias("CatsDogsClassifier", "champion", "1")
    return tiny_model


def expected(model_dir: Path, photo: bytes) -> list[float]:
    release = load_release(model_dir)
    with torch.inference_mode():
        return list(predict_proba(release, load_tensor(photo, release.image_size).unsqueeze(0))[0].tolist())


def test_a_notebook_loads_the_champion_and_gets_the_services_answers(champion: Path) -> None:
    info = mlflow.models.get_model_info(CHAMPION)
    assert info.signature.inputs.input_names() == ["image"]
    assert info.signature.outputs.input_names() == ["prediction", "confidence", "cat", "dog", "error"]
    assert info.saved_input_example_info is not None
    model = mlflow.pyfunc.load_model(CHAMPION)
    out = model.predict(pd.DataFrame({"image": [PHOTO, b"not a photo"]}))
    cat, dog = expected(champion, PHOTO)
    assert out.loc[0, "cat"] == pytest.approx(cat, abs=1e-6) and out.loc[0, "dog"] == pytest.approx(dog, abs=1e-6)
    assert out.loc[0, "prediction"] == ("cat" if cat >= dog else "dog") and out.loc[0, "error"] == ""
    assert out.loc[1, "error"] == "not_an_image" and out.loc[1, "prediction"] == ""
    requirements = Path(mlflow.artifacts.download_artifacts(f"{CHAMPION}/requirements.txt")).read_text()
    assert "torch==2.14.1" in requirements and "pillow-heif==1.9.0" in requirements


@pytest.mark.servers
def test_mlflow_models_serve_answers_on_loopback(champion: Path, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", CHAMPION, "--env-manager", "local"]
    proc = subprocess.Popen(
        [*cmd, "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        # as from an activated venv: MLflow runs its server as `uvicorn` from PATH
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
        start_new_session=True,  # its server's workers go with it
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
        body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(PHOTO).decode()]]}}
        resp = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        (answer,) = resp.json()["predictions"]
        cat, dog = expected(champion, PHOTO)
        assert answer["cat"] == pytest.approx(cat, abs=1e-6) and answer["prediction"] == (
            "cat" if cat >= dog else "dog"
        )
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have stopped itself: the assert says why
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
