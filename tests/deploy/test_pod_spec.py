"""deploy/pod.py reads the pod from the manifest that `kubectl kustomize` renders: every option
podman is given comes from it (the pod itself runs in tests/deploy/test_pod.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from deploy import pod as pods
from tests.helpers import ROOT, require_tool

BUILT = "ghcr.io/pet-classifier/pet-classifier:test"


@pytest.fixture(autouse=True)
def _kubectl() -> None:
    require_tool("kubectl")


def test_the_pod_is_derived_from_the_rendered_manifest(tmp_path: Path) -> None:
    docs = pods.render()
    pod = pods.Pod.from_manifest(docs, BUILT)
    pod.secrets = {("pet-classifier-secrets", "feedback-secret"): "f" * 40}
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    api = pod.run_args(pod.containers[0], tmp_path)
    assert pod.containers[0]["image"] == BUILT
    user = spec["securityContext"]
    assert option(api, "--user") == f"{user['runAsUser']}:{user['runAsGroup']}"
    assert option(api, "--cap-drop") == "ALL" and "--read-only" in api and option(api, "--restart") == "always"
    limits = spec["containers"][0]["resources"]["limits"]
    assert option(api, "--memory") == f"{pods.memory_bytes(limits['memory'])}b"
    assert option(api, "--cpus") == str(pods.cpu_cores(limits["cpu"]))
    (tmp,) = [v for v in spec["volumes"] if v["name"] == "tmp"]
    assert [a for a in api if a.startswith("/tmp:")] == [
        f"/tmp:rw,mode=1777,size={pods.memory_bytes(tmp['emptyDir']['sizeLimit'])}"
    ]
    # Every container's env var, from the ConfigMap and the Secret, reaches podman.
    for var in ("WEB_CONCURRENCY=2", "MODEL_DIR=/srv/models", "FEEDBACK_SECRET=" + "f" * 40, "HOME=/tmp"):
        assert var in api
    proxy = pod.run_args(pod.containers[1], tmp_path)
    assert json.loads(option(proxy, "--entrypoint")) == spec["containers"][1]["command"]
    assert (tmp_path / "proxy-config" / "nginx.conf").read_text() == (ROOT / "deploy/k8s/app/nginx.conf").read_text()


def option(args: list[str], name: str) -> str:
    """The value given to a podman option (the first time it is given)."""
    return args[args.index(name) + 1]


@pytest.mark.parametrize(
    ("quantity", "expected"), [("256Mi", 256 * 2**20), ("1Gi", 2**30), ("500M", 500 * 10**6), ("64", 64)]
)
def test_memory_quantities(quantity: str, expected: int) -> None:
    assert pods.memory_bytes(quantity) == expected


@pytest.mark.parametrize(("quantity", "expected"), [("500m", 0.5), ("2", 2.0), (1, 1.0), ("1.5", 1.5)])
def test_cpu_quantities(quantity: str | int, expected: float) -> None:
    assert pods.cpu_cores(quantity) == expected


def test_a_volume_of_a_kind_not_run_here_is_a_clear_error(tmp_path: Path) -> None:
    pod = pods.Pod.from_manifest(pods.render(), BUILT)
    pod.spec["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": "x"}})
    with pytest.raises(pods.PodError, match="only emptyDir and configMap volumes"):
        pod.volume_args({"name": "data", "mountPath": "/data"}, tmp_path)


class ExitedPodman(pods.Podman):
    """podman as it answers while a container has just exited (before its restart)."""

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        state = {"Status": "exited", "ExitCode": 1}
        return subprocess.CompletedProcess(args, 0, json.dumps([{"State": state}]), "")


@pytest.mark.parametrize(("policy", "fails"), [("Always", False), ("Never", True)])
def test_a_container_that_exits_fails_the_start_only_where_nothing_restarts_it(policy: str, fails: bool) -> None:
    # Debian's exporter exits when nginx is not up yet and is started again; a start that
    # gave up on that first exit failed the pod tests under load.
    pod = pods.Pod.from_manifest(pods.render(), BUILT)
    pod.spec["restartPolicy"] = policy
    running = pods.RunningPod(pod, ExitedPodman(), {})
    if fails:
        with pytest.raises(pods.PodError, match="is exited"):
            running.check_running()
    else:
        running.check_running()
