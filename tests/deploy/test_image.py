"""The serving image, built from the real Dockerfile by a real container engine (podman) and run
as the pod runs it: read-only root, tmpfs /tmp, uid 10001, published on a loopback port.

The image is built once per session (tests/deploy/conftest.py)."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import pytest
import requests

from tests.deploy.conftest import Image
from tests.deploy.podman import Podman
from tests.helpers import ROOT
from tools.local_server import free_port
from tools.smoke import main as smoke_main

pytestmark = pytest.mark.container


def test_the_image_keeps_its_healthcheck_and_runs_as_a_non_root_user(podman: Podman, image: Image) -> None:
    inspected = json.loads(podman("image", "inspect", image.name).stdout)[0]
    config = inspected["Config"]
    # The OCI format drops HEALTHCHECK without a word: the build must use the Docker format.
    assert "/health" in " ".join(inspected["Healthcheck"]["Test"])
    assert config["User"] == "10001:10001"
    assert config["Cmd"] == ["gunicorn", "-c", "gunicorn.conf.py"]
    labels = config["Labels"]
    assert labels["io.pet-classifier.model-version"] == image.record["model_version"]
    assert labels["org.opencontainers.image.revision"] == image.record["commit"]


def test_the_image_serves_as_the_pod_runs_it_and_stops_gracefully(
    podman: Podman, image: Image, real_photos: Path
) -> None:
    name = f"pet-classifier-test-{os.getpid()}"
    url, started = run_as_the_pod(podman, image, name)
    try:
        wait_ready(podman, name, url, timeout=120)
        ready_seconds = time.monotonic() - started
        # The model runs in ONNX Runtime; the image has no PyTorch to fall back on.
        assert requests.get(f"{url}/ready", timeout=5).json()["engine"] == "onnxruntime"
        no_torch = podman("exec", name, "python", "-c", "import torch", check=False)
        assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr, no_torch.stderr
        code = smoke_main(["--url", url, "--source", str(real_photos), "--wait", "5"])
        assert code == 0
        health = podman("healthcheck", "run", name, check=False)
        assert health.returncode == 0, health.stdout + health.stderr
        started_logs = podman("logs", name).stdout + podman("logs", name).stderr
        errors = [line for line in started_logs.splitlines() if '"level": "ERROR"' in line or "Traceback" in line]
        assert errors == [], errors
        assert [line for line in started_logs.splitlines() if not line.startswith("{")] == []  # JSON lines only
        # As the kubelet stops it: SIGTERM, then the grace period (30 s) before SIGKILL.
        stop_start = time.monotonic()
        podman("stop", "--time", "30", name)
        stop_seconds = time.monotonic() - stop_start
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, podman("logs", name).stdout[-3000:]
        assert stop_seconds < 30
        restarts = [start_to_ready(podman, image, f"{name}-{i}") for i in range(4)]
        figures = {
            "build_seconds": round(image.build_seconds, 1),
            "image_bytes": json.loads(podman("image", "inspect", image.name).stdout)[0]["Size"],
            "start_to_ready_seconds": round(ready_seconds, 1),
            "start_to_ready_rounds": [round(s, 2) for s in [ready_seconds, *restarts]],
            "start_to_ready_median": round(statistics.median([ready_seconds, *restarts]), 2),
            "stop_seconds": round(stop_seconds, 1),
        }
        (ROOT / "build").mkdir(exist_ok=True)
        (ROOT / "build" / "image-test.json").write_text(json.dumps(figures))
        print("image figures:", json.dumps(figures))
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def run_as_the_pod(podman: Podman, image: Image, name: str) -> tuple[str, float]:
    """Start the image as the pod runs it: read-only root, tmpfs /tmp, uid 10001, no
    capabilities, published on a loopback port; its URL and when it was started."""
    port = free_port()
    started = time.monotonic()
    podman(
        "run", "--detach", "--name", name,
        "--read-only", "--tmpfs", "/tmp:rw,size=256m", "--user", "10001:10001", "--health-interval", "disable",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--env", "FEEDBACK_SECRET=" + "s" * 40, "--publish", f"127.0.0.1:{port}:8000",
        image.name,
    )  # fmt: skip
    return f"http://127.0.0.1:{port}", started


def start_to_ready(podman: Podman, image: Image, name: str) -> float:
    """Seconds from `podman run` to /ready answering 200, in a container removed afterwards."""
    url, started = run_as_the_pod(podman, image, name)
    try:
        wait_ready(podman, name, url, timeout=120)
        return time.monotonic() - started
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def wait_ready(podman: Podman, name: str, url: str, timeout: float) -> float:
    """Seconds until /ready answers 200; a failure with the container's logs if it never does."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if requests.get(f"{url}/ready", timeout=2).status_code == 200:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        if json.loads(podman("inspect", name).stdout)[0]["State"]["Status"] != "running":
            break
        time.sleep(0.25)
    logs = podman("logs", name, check=False)
    pytest.fail(f"{name} was not ready within {timeout:g} s:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
