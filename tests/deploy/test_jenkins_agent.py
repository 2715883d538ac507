"""The Jenkins build agent's image, built from deploy/jenkins/agent.Dockerfile by podman and
reached as the controller reaches it: over SSH, as `jenkins`, with a login environment.

No registry answers here, so the build stops at the `agent-base` stage (the docker CLI, Trivy,
kind and kubectl come from other images and the internet; test_jenkinsfile.py checks those
lines), on stand-ins for the Python and Java images (deploy/podman/standin.sh)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.deploy.podman import Podman
from tests.helpers import ROOT, make_variable
from tools.local_server import free_port

JENKINS = ROOT / "deploy" / "jenkins"

pytestmark = pytest.mark.container


@pytest.fixture(scope="module")
def agent_image(podman: Podman) -> str:
    def standin(kind: str) -> str:
        made = subprocess.run(
            [str(ROOT / "deploy" / "podman" / "standin.sh"), kind],
            env=podman.env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr[-3000:]
        return made.stdout.strip()

    tag = f"localhost/pet-jenkins-agent:test-{os.getpid()}"
    built = podman(
        "build", "--format", "docker", "--pull=never", "--target", "agent-base",
        "--build-arg", f"PYTHON_IMAGE={standin('python')}", "--build-arg", f"JAVA_IMAGE={standin('java')}",
        "-f", str(JENKINS / "agent.Dockerfile"), "-t", tag, str(JENKINS),
        check=False, timeout=1800,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    return tag


def ssh(port: int, key: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "jenkins@127.0.0.1", command,
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_controller_reaches_the_agent_over_ssh_and_finds_every_tool(
    podman: Podman, agent_image: str, tmp_path: Path
) -> None:
    key = tmp_path / "agent-key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    port, name = free_port(), f"jenkins-agent-test-{os.getpid()}"
    podman(
        "run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:2222",
        "--env", f"JENKINS_AGENT_SSH_PUBKEY={key.with_suffix('.pub').read_text().strip()}", agent_image,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while (probe := ssh(port, key, "true")).returncode != 0 and time.monotonic() < deadline:
            time.sleep(1)
        assert probe.returncode == 0, probe.stderr + podman("logs", name).stderr
        # What the SSH launcher and the stages run, in the session's own environment.
        tools = [*make_variable("APT_BINARIES"), "java", "python3.11", "make", "git", "node", "npm", "nginx"]
        found = ssh(port, key, f"for t in {' '.join(tools)}; do command -v $t || echo missing: $t; done")
        assert found.returncode == 0 and "missing" not in found.stdout, found.stdout + found.stderr
        java = ssh(port, key, 'java -version 2>&1 && echo "$JAVA_HOME" && id -un && pwd')
        assert java.returncode == 0 and "/opt/java/openjdk" in java.stdout, java.stdout + java.stderr
        assert java.stdout.split()[-2:] == ["jenkins", "/home/jenkins"]
        # A key the agent was not given gets no session, nor does a password.
        other = tmp_path / "other-key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        assert ssh(port, other, "true").returncode == 255
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def test_the_agent_refuses_to_start_without_the_controller_key(podman: Podman, agent_image: str) -> None:
    run = podman("run", "--rm", "--env", "JENKINS_AGENT_SSH_PUBKEY=not-a-key", agent_image, check=False)
    assert run.returncode == 2
    assert "JENKINS_AGENT_SSH_PUBKEY must hold the controller's SSH public key" in run.stderr
