"""The pod that deploy/k8s renders for pet-classifier, run with podman from the rendered manifest.

    python deploy/pod.py up --image IMAGE     # make deploy, where podman runs and Kind does not
    python deploy/pod.py down                 # stopped as the kubelet stops it
    python deploy/pod.py status

podman 4.3's `kube play` cannot express this pod: it runs no startup or readiness probes and
no preStop hooks, takes no emptyDir size, and reads `secretKeyRef` only from podman's own
secrets. So each container's `podman run` is derived here from the rendered Deployment and
ConfigMaps (never from a second hand-written copy): image, command and args, env (envFrom the
ConfigMaps, secretKeyRef from values given here), the pod's and each container's security
context (user, group, read-only root, dropped capabilities, no privilege escalation, seccomp),
resource limits, restart policy, volumes (emptyDir: a tmpfs of its sizeLimit; configMap: its
files, read-only) and ports (published on loopback). The pod is ready when every startup and readiness probe
passes; it stops as the kubelet stops it: each container's preStop sleep, then its image's stop
signal, within terminationGracePeriodSeconds. Liveness probes are not run (no kubelet here).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "deploy" / "k8s" / "app"
CONTAINERS_CONF = ROOT / "deploy" / "podman" / "containers.conf"
DEPLOYMENT = "pet-classifier"
BUILT_IMAGE = "ghcr.io/pet-classifier/pet-classifier"  # the name kustomize gives the API's image
# Images the pod runs beside the API, and their stand-ins (deploy/podman/standin.sh) for hosts
# that reach no registry.
STANDINS = {"nginxinc/nginx-unprivileged": "nginx", "nginx/nginx-prometheus-exporter": "nginx-exporter"}


class PodError(RuntimeError):
    """The pod could not be started, or did not become ready."""


def render(app: Path = APP) -> list[dict[str, Any]]:
    """What `kubectl kustomize` renders for the API (Deployment, ConfigMaps, Services, ...)."""
    out = subprocess.run(["kubectl", "kustomize", str(app)], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@dataclass
class Pod:
    """The Deployment's pod template, with the objects it refers to."""

    name: str
    spec: dict[str, Any]
    configmaps: dict[str, dict[str, str]]
    secrets: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, docs: list[dict[str, Any]], image: str | None = None) -> Pod:
        (deployment,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == DEPLOYMENT]
        spec = json.loads(json.dumps(deployment["spec"]["template"]["spec"]))  # a copy to change
        if image:
            for c in spec["containers"]:
                if c["image"].split(":")[0] == BUILT_IMAGE:
                    c["image"] = image
        maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
        return cls(DEPLOYMENT, spec, maps)

    @property
    def containers(self) -> list[dict[str, Any]]:
        return list(self.spec["containers"])

    def ports(self) -> dict[str, int]:
        """Every named container port: name → port in the pod."""
        return {p["name"]: p["containerPort"] for c in self.containers for p in c.get("ports", [])}

    def env(self, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env.update(self.configmaps[source["configMapRef"]["name"]])
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = str(var["value"])
            else:
                ref = var["valueFrom"]["secretKeyRef"]
                env[var["name"]] = self.secrets[(ref["name"], ref["key"])]
        return env

    def run_args(self, container: dict[str, Any], volumes_dir: Path) -> list[str]:
        """`podman run` options for one container of the pod, from its spec alone."""
        pod_sc = self.spec.get("securityContext", {})
        sc = {**pod_sc, **container.get("securityContext", {})}
        args = ["--name", f"{self.name}-{container['name']}", "--pod", self.name]
        # The kubelet restarts a container that exits (a Deployment's pods are restartPolicy
        # Always); podman does the same, and leaves alone one that it was told to stop.
        policy = {"Always": "always", "OnFailure": "on-failure", "Never": "no"}
        args += ["--restart", policy[self.spec.get("restartPolicy", "Always")]]
        args.append("--no-healthcheck")  # the kubelet ignores an image's HEALTHCHECK: probes stand in
        if "runAsUser" in sc:
            args += ["--user", f"{sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}"]
        if "fsGroup" in pod_sc:
            args += ["--group-add", str(pod_sc["fsGroup"])]
        if sc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        for cap in sc.get("capabilities", {}).get("drop", []):
            args += ["--cap-drop", cap]
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        if sc.get("seccompProfile", {}).get("type") not in (None, "RuntimeDefault"):
            raise PodError(f"{container['name']}: only the RuntimeDefault seccomp profile is run here")
        limits = container.get("resources", {}).get("limits", {})
        if "cpu" in limits:
            args += ["--cpus", str(cpu_cores(limits["cpu"]))]
        if "memory" in limits:
            args += ["--memory", f"{memory_bytes(limits['memory'])}b"]
        for name, value in sorted(self.env(container).items()):
            args += ["--env", f"{name}={value}"]
        for mount in container.get("volumeMounts", []):
            args += self.volume_args(mount, volumes_dir)
        if "command" in container:
            args += ["--entrypoint", json.dumps(container["command"])]
        return args

    def volume_args(self, mount: dict[str, Any], volumes_dir: Path) -> list[str]:
        (volume,) = [v for v in self.spec.get("volumes", []) if v["name"] == mount["name"]]
        path = mount["mountPath"]
        if "emptyDir" in volume:
            size = volume["emptyDir"].get("sizeLimit")
            # A tmpfs of the volume's size: each emptyDir here is mounted in one container only.
            return ["--tmpfs", f"{path}:rw,mode=1777" + (f",size={memory_bytes(size)}" if size else "")]
        if "configMap" in volume:
            folder = volumes_dir / mount["name"]
            folder.mkdir(parents=True, exist_ok=True)
            for key, text in self.configmaps[volume["configMap"]["name"]].items():
                (folder / key).write_text(text)
            return ["--volume", f"{folder}:{path}:ro"]
        raise PodError(f"volume {volume['name']}: only emptyDir and configMap volumes are run here")


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_bytes(quantity: str | int) -> int:
    text = str(quantity)
    for suffix, factor in (("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("k", 1000), ("M", 10**6), ("G", 10**9)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


@dataclass
class Podman:
    env: dict[str, str] = field(default_factory=lambda: {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)})

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise PodError(f"podman {' '.join(args[:3])} ... exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        return done


@dataclass
class RunningPod:
    pod: Pod
    podman: Podman
    published: dict[str, int]  # port name → loopback port on this host

    def url(self, port_name: str) -> str:
        return f"http://127.0.0.1:{self.published[port_name]}"

    def container_names(self) -> list[str]:
        return [f"{self.pod.name}-{c['name']}" for c in self.pod.containers]

    def logs(self, container: str) -> str:
        done = self.podman("logs", f"{self.pod.name}-{container}", check=False)
        return done.stdout + done.stderr

    def wait_ready(self, timeout: float = 180) -> float:
        """Seconds until every container's startup and readiness probes pass."""
        start = time.monotonic()
        for container in self.pod.containers:
            for kind in ("startupProbe", "readinessProbe"):
                probe = container.get(kind)
                while probe and not self.probe(container, probe):
                    if time.monotonic() - start > timeout:
                        name = f"{self.pod.name}-{container['name']}"
                        raise PodError(
                            f"{container['name']}: {kind} not passing after {timeout:g} s:\n{self.logs_of(name)}"
                        )
                    self.check_running()
                    time.sleep(0.25)
        return time.monotonic() - start

    def probe(self, container: dict[str, Any], probe: dict[str, Any]) -> bool:
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = self.published[get["port"]] if isinstance(get["port"], str) else self.by_number(get["port"])
            try:
                return requests.get(f"http://127.0.0.1:{port}{get['path']}", timeout=2).status_code < 400
            except requests.RequestException:
                return False
        name = probe["tcpSocket"]["port"]
        port = self.published[name] if isinstance(name, str) else self.by_number(ports.get(name, name))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return True
        except OSError:
            return False

    def by_number(self, container_port: int) -> int:
        ports = self.pod.ports()
        return self.published[next(name for name, number in ports.items() if number == container_port)]

    def check_running(self) -> None:
        """A container that exited fails the start only where nothing restarts it: under
        restartPolicy Always (a Deployment's) the kubelet, and podman, start it again, and only
        the probes' deadline decides (Debian's exporter exits while nginx is not up yet)."""
        if self.pod.spec.get("restartPolicy", "Always") != "Never":
            return
        for name in self.container_names():
            state = json.loads(self.podman("inspect", name).stdout)[0]["State"]
            if state["Status"] != "running":
                raise PodError(f"{name} is {state['Status']} (exit {state['ExitCode']}):\n{self.logs_of(name)}")

    def logs_of(self, name: str) -> str:
        done = self.podman("logs", "--tail", "40", name, check=False)
        return (done.stdout + done.stderr)[-3000:]

    def stop(self) -> dict[str, int]:
        """As the kubelet: each container's preStop sleep, then its stop signal, all within the
        grace period; the exit codes."""
        grace = float(self.pod.spec.get("terminationGracePeriodSeconds", 30))
        start = time.monotonic()

        def stop_one(container: dict[str, Any]) -> None:
            hook = container.get("lifecycle", {}).get("preStop", {})
            time.sleep(min(float(hook.get("sleep", {}).get("seconds", 0)), grace))
            left = max(0, round(grace - (time.monotonic() - start)))
            self.podman("stop", "--time", str(left), f"{self.pod.name}-{container['name']}", timeout=grace + 30)

        with ThreadPoolExecutor(len(self.pod.containers)) as pool:
            list(pool.map(stop_one, self.pod.containers))
        return {
            name: json.loads(self.podman("inspect", name).stdout)[0]["State"]["ExitCode"]
            for name in self.container_names()
        }

    def remove(self) -> None:
        self.podman("pod", "rm", "--force", "--time", "0", self.pod.name, check=False)


def pull_or_stand_in(pod: Pod, podman: Podman) -> None:
    """Each container's image as podman has it, pulled if it can be; where no registry answers,
    the beside images are replaced by their stand-ins, said plainly."""
    for container in pod.containers:
        ref = container["image"]
        if podman("image", "exists", ref, check=False).returncode == 0:
            continue
        if podman("pull", "--quiet", ref, check=False, timeout=600).returncode == 0:
            continue
        repo = ref.rsplit(":", 1)[0]
        if repo not in STANDINS:
            raise PodError(f"{container['name']}: image {ref} is not here and cannot be pulled")
        built = subprocess.run(
            [str(ROOT / "deploy" / "podman" / "standin.sh"), STANDINS[repo]],
            env=podman.env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if built.returncode != 0:
            raise PodError(f"stand-in for {ref}: {built.stderr.strip()[-2000:]}")
        container["image"] = built.stdout.strip()
        print(f"image: {ref} cannot be pulled here → {container['image']}, a stand-in", file=sys.stderr)


def start(pod: Pod, podman: Podman, publish: dict[str, int], volumes_dir: Path) -> RunningPod:
    """Create the pod with its ports published on loopback, and start its containers."""
    ports = pod.ports()
    missing = set(ports) - set(publish)
    if missing:
        raise PodError(f"no host port given for {sorted(missing)}")
    podman("pod", "rm", "--force", "--time", "0", pod.name, check=False)
    args = ["pod", "create", "--name", pod.name]
    for name, port in ports.items():
        args += ["--publish", f"127.0.0.1:{publish[name]}:{port}"]
    podman(*args)
    running = RunningPod(pod, podman, dict(publish))
    try:
        for container in pod.containers:
            podman("create", *pod.run_args(container, volumes_dir), container["image"], *container.get("args", []))
        podman("pod", "start", pod.name)
    except BaseException:
        running.remove()
        raise
    return running


def secret_values() -> dict[tuple[str, str], str]:
    """The Secrets the pod reads, from the environment as `make deploy` takes them."""
    feedback = os.environ.get("FEEDBACK_SECRET") or secrets.token_hex(32)
    return {("pet-classifier-secrets", "feedback-secret"): feedback}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the pod and wait for its probes")
    up.add_argument("--image", required=True, help="the API's image (build/image.json)")
    up.add_argument("--publish", nargs="*", default=[], metavar="NAME=PORT", help="host ports (default: the pod's)")
    sub.add_parser("down", help="stop the pod as the kubelet does, and remove it")
    sub.add_parser("status", help="the pod's containers")
    args = ap.parse_args(argv)
    podman = Podman()
    pod = Pod.from_manifest(render(), getattr(args, "image", None))
    try:
        if args.command == "up":
            publish = pod.ports() | {k: int(v) for k, v in (p.split("=", 1) for p in args.publish)}
            pod.secrets = secret_values()
            volumes = Path(tempfile.mkdtemp(prefix="pet-classifier-pod-"))
            pull_or_stand_in(pod, podman)
            running = start(pod, podman, publish, volumes)
            seconds = running.wait_ready()
            print(f"pod {pod.name} ready in {seconds:.1f} s: API {running.url('http')} (through nginx)")
        elif args.command == "down":
            if podman("pod", "exists", pod.name, check=False).returncode != 0:
                print(f"no pod {pod.name} to stop")
                return 0
            running = RunningPod(pod, podman, {})
            codes = running.stop()
            running.remove()
            print(f"pod {pod.name} stopped: exit codes {codes}")
        else:
            print(podman("pod", "ps", "--filter", f"name={pod.name}").stdout, end="")
            print(podman("ps", "--all", "--filter", f"pod={pod.name}").stdout, end="")
    except (PodError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
