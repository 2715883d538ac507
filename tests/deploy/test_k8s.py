"""deploy/k8s as kustomize renders it: valid against the Kubernetes OpenAPI schemas (strict),
and the policies and cross-references a reviewer would check by hand."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.helpers import ROOT, require_tool
from tools.local_server import POD_ADDRESSES, proxy_conf

LABEL = "app.kubernetes.io/name"
NGINX_CONF = ROOT / "deploy" / "k8s" / "app" / "nginx.conf"
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet"}
Doc = dict[str, Any]


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    kubectl = require_tool("kubectl")
    # No flags: Argo CD and Flux refuse LoadRestrictionsNone.
    out = subprocess.run(
        [kubectl, "kustomize", "deploy/k8s"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def workloads(docs: list[Doc]) -> Iterator[Doc]:
    return (d for d in docs if d["kind"] in WORKLOADS)


def containers(workload: Doc) -> list[Doc]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def container(workload: Doc, name: str) -> Doc:
    (found,) = [c for c in containers(workload) if c["name"] == name]
    return found


def pod_port(key: str) -> int:
    """The port of one of nginx.conf's addresses in the pod (tools/local_server.POD_ADDRESSES)."""
    return int(POD_ADDRESSES[key][1].rsplit(":", 1)[-1])


def configmap_by_prefix(docs: list[Doc], prefix: str) -> Doc:
    """A generated ConfigMap: kustomize's content-hash suffix, or none for the monitoring
    configuration, which is reloaded in place."""
    named = re.compile(prefix + r"(-[a-z0-9]{10})?")
    matches = [d for d in docs if d["kind"] == "ConfigMap" and named.fullmatch(d["metadata"]["name"])]
    assert len(matches) == 1, prefix
    return matches[0]


def kind_node_version() -> tuple[int, int, int]:
    """The Kubernetes version of kind-config.yaml's node image (every node runs the same one)."""
    kind = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    (image,) = {node["image"] for node in kind["nodes"]}
    found = re.fullmatch(r"kindest/node:v(\d+)\.(\d+)\.(\d+)@sha256:[0-9a-f]{64}", image)
    assert found, f"{image}: a kindest/node tag pinned by digest"
    major, minor, patch = map(int, found.groups())
    return major, minor, patch


@pytest.mark.parametrize("which", ["the Kind cluster's", "the latest"])
def test_everything_validates_strictly_against_kubernetes(docs: list[Doc], which: str) -> None:
    """Against the version Kind runs (kind-config.yaml) and the newest the schemas know."""
    major, minor, _ = kind_node_version()
    version = f"{major}.{minor}.0" if which == "the Kind cluster's" else kubernetes_validate.latest_version()
    assert len(docs) >= 35
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_kind_runs_the_node_image_of_the_kind_the_jenkins_agent_installs() -> None:
    """The cluster's version is pinned, new enough for the manifests, and within kubectl's skew."""
    config = (ROOT / "kind-config.yaml").read_text()
    agent = (ROOT / "deploy" / "jenkins" / "agent.Dockerfile").read_text()
    kind_version = re.search(r"^ARG KIND_VERSION=(v[\d.]+)$", agent, re.MULTILINE)
    kubectl = re.search(r"^ARG KUBECTL_VERSION=v(\d+)\.(\d+)\.\d+$", agent, re.MULTILINE)
    assert kind_version and kubectl
    assert f"kind {kind_version[1]} (KIND_VERSION" in config  # the release whose notes list the image
    major, minor, _ = kind_node_version()
    assert (major, minor) >= (1, 30)  # preStop's sleep action is on by default from 1.30
    assert int(kubectl[1]) == major and abs(int(kubectl[2]) - minor) <= 1  # kubectl's version skew


def test_the_schema_check_can_fail(docs: list[Doc]) -> None:
    bad = yaml.safe_load(yaml.safe_dump(find(docs, "Deployment", "pet-classifier")))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)


def test_the_api_deployment(docs: list[Doc]) -> None:
    dep = find(docs, "Deployment", "pet-classifier")
    assert dep["metadata"]["namespace"] == "mlops"
    assert "replicas" not in dep["spec"]  # the HPA's to set (test_the_first_deploy_...)
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = dep["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["api", "proxy", "proxy-metrics"]  # api first: exec's default
    api = container(dep, "api")
    assert api["image"].startswith("ghcr.io/") and api["image"].rsplit(":", 1)[1] not in {"", "latest"}
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api["startupProbe"]["httpGet"]["path"] == "/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    mounts = {m["mountPath"] for m in api["volumeMounts"]}
    settings = configmap_by_prefix(docs, "pet-classifier-config")["data"]
    assert {"/tmp", settings["PROMETHEUS_MULTIPROC_DIR"]} <= mounts  # writable places on a read-only root


def test_termination_grace_covers_prestop_and_gunicorn_drain(docs: list[Doc]) -> None:
    dep = find(docs, "Deployment", "pet-classifier")
    pod = dep["spec"]["template"]["spec"]
    graceful = int(configmap_by_prefix(docs, "pet-classifier-config")["data"]["GRACEFUL_TIMEOUT"])
    nginx_drain = re.search(r"^worker_shutdown_timeout (\d+)s;", NGINX_CONF.read_text(), re.MULTILINE)
    assert nginx_drain and int(nginx_drain[1]) <= graceful  # the proxy drains no longer than Gunicorn
    for c in containers(dep):
        # Kubernetes' sleep action, not `sleep` in the image: the exporter's image has no shell.
        pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pause >= 5, c["name"]  # the Service has dropped the pod before anything stops
        assert pod["terminationGracePeriodSeconds"] >= pause + graceful, c["name"]


def test_gunicorn_outlasts_the_proxy_it_stands_behind(docs: list[Doc]) -> None:
    # Kubernetes signals every container once its own preStop ends. Had Gunicorn stopped when
    # nginx did, requests nginx had accepted but not yet passed on (uploads still arriving, or
    # queued for a worker) met a closed port: 503s, found by stopping the real pod under load
    # (tests/deploy/test_pod.py). So the API's preStop outlasts nginx's preStop and its drain.
    dep = find(docs, "Deployment", "pet-classifier")
    pause = {c["name"]: c["lifecycle"]["preStop"]["sleep"]["seconds"] for c in containers(dep)}
    nginx_drain = re.search(r"^worker_shutdown_timeout (\d+)s;", NGINX_CONF.read_text(), re.MULTILINE)
    assert nginx_drain
    assert pause["api"] >= pause["proxy"] + int(nginx_drain[1])


def test_container_port_probes_and_gunicorn_bind_agree(docs: list[Doc]) -> None:
    settings = configmap_by_prefix(docs, "pet-classifier-config")["data"]
    env = {**settings, "PROMETHEUS_MULTIPROC_DIR": "/tmp/unused-multiproc"}
    code = "import runpy; print(runpy.run_path('gunicorn.conf.py')['bind'])"
    bind = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True
    )
    assert bind.returncode == 0, bind.stderr
    host, port = bind.stdout.strip().rsplit(":", 1)
    api = container(find(docs, "Deployment", "pet-classifier"), "api")
    (http,) = api["ports"]
    assert host == "0.0.0.0" and int(port) == http["containerPort"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert api[probe]["httpGet"]["port"] in (http["name"], http["containerPort"])


def test_the_pods_nginx_fronts_gunicorn_with_the_apis_limits(docs: list[Doc]) -> None:
    """The Service reaches the API through nginx.conf (tests/deploy/test_proxy.py runs it);
    Prometheus alone goes round it."""
    dep = find(docs, "Deployment", "pet-classifier")
    api, proxy = container(dep, "api"), container(dep, "proxy")
    conf = NGINX_CONF.read_text()
    assert configmap_by_prefix(docs, "pet-classifier-proxy")["data"] == {"nginx.conf": conf}
    cmd = proxy["command"]
    conf_path, prefix = Path(cmd[cmd.index("-c") + 1]), cmd[cmd.index("-p") + 1]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    mounted = {m["mountPath"]: volumes[m["name"]] for m in proxy["volumeMounts"]}
    assert conf_path.name == "nginx.conf"
    assert mounted[str(conf_path.parent)]["configMap"]["name"].startswith("pet-classifier-proxy-")
    assert "emptyDir" in mounted[prefix.rstrip("/")]  # pid and buffered bodies on a read-only root
    proxy_conf("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")  # refuses a file without POD_ADDRESSES
    ports = {c["name"]: {p["name"]: p["containerPort"] for p in c["ports"]} for c in (api, proxy)}
    assert ports == {"api": {"api": pod_port("upstream")}, "proxy": {"http": pod_port("listen")}}
    services = {d["metadata"]["name"]: d["spec"]["ports"][0]["targetPort"] for d in docs if d["kind"] == "Service"}
    assert services["pet-classifier"] == "http"  # clients reach nginx; Prometheus finds the pods itself
    limit = configmap_by_prefix(docs, "pet-classifier-config")["data"]["MAX_UPLOAD_BYTES"]
    assert f"client_max_body_size {limit};" in conf
    assert f"request bodies are limited to {limit} bytes" in conf  # nginx's 413, worded as the API's


def nginx_map(variable: str) -> dict[str, str]:
    """nginx.conf's ``map ... $variable`` block as {key: value}, quotes removed."""
    block = re.search(r"^    map \$\w+ \$" + variable + r" \{\n(.*?)\n    \}", NGINX_CONF.read_text(), re.M | re.S)
    assert block, variable
    pairs = (line.strip().removesuffix(";").split(None, 1) for line in block[1].splitlines())
    return {key: value.strip('"') for key, value in pairs}


def test_nginx_names_requests_in_its_log_as_the_api_does(tmp_path: Path) -> None:
    """nginx's own access lines name a request by the API's route or "<unknown>", and by a
    standard method or "<other>", as the API's lines do: never by the client's text."""
    from app import HTTP_METHODS, OTHER_METHOD, UNKNOWN_PATH, create_app

    app = create_app({"MODEL_DIR": str(tmp_path / "no-model"), "FEEDBACK_DIR": str(tmp_path)})
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    paths, methods = nginx_map("pet_log_path"), nginx_map("pet_log_method")
    assert paths.pop("default") == UNKNOWN_PATH and methods.pop("default") == OTHER_METHOD
    assert set(paths.values()) == routes
    for key, route in paths.items():  # an exact path names itself; a prefix, the route it starts
        assert route.startswith(key[2:]) and "<" in route if key.startswith("~^") else key == route
    assert methods == {method: method for method in HTTP_METHODS}
    assert '"method": "$pet_log_method", "path": "$pet_log_path"' in NGINX_CONF.read_text()


def test_the_exporter_reads_the_status_page_nginx_serves_on_the_pods_loopback(docs: list[Doc]) -> None:
    """proxy-metrics scrapes the stub_status that nginx.conf serves (tests/deploy/test_proxy.py
    runs both), and Prometheus scrapes the exporter's port by its name."""
    dep = find(docs, "Deployment", "pet-classifier")
    exporter = container(dep, "proxy-metrics")
    args = dict(a.removeprefix("--").split("=", 1) for a in exporter["args"])
    page = re.search(r"location = (/\S+) \{\s*stub_status;", NGINX_CONF.read_text())
    assert page and args["nginx.scrape-uri"] == f"http://{POD_ADDRESSES['status'][1]}{page[1]}"
    (port,) = exporter["ports"]
    assert args["web.listen-address"] == f":{port['containerPort']}"
    assert scraped_pods()["pet-classifier-proxy"] == ("pet-classifier", port["name"])


def test_every_container_has_resources_probes_and_a_locked_down_security_context(docs: list[Doc]) -> None:
    seen = 0
    for w in workloads(docs):
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, w["metadata"]["name"]
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert not pod.get("hostNetwork") and not pod.get("hostPID")
        for c in containers(w):
            seen += 1
            where = f"{w['metadata']['name']}/{c['name']}"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= c["resources"][kind].keys(), where
            assert "readinessProbe" in c and "livenessProbe" in c, where
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), where
            assert not sc.get("privileged"), where
            assert c["image"].split(":")[-1] not in {"latest", c["image"]}, f"{where}: unpinned image"
    assert seen == 11  # two of them the config-reloader sidecars


def test_service_selectors_and_target_ports_match_pods(docs: list[Doc]) -> None:
    for svc in (d for d in docs if d["kind"] == "Service"):
        ns = svc["metadata"].get("namespace")
        selector = svc["spec"]["selector"]
        pods = [
            w for w in workloads(docs)
            if w["metadata"].get("namespace") == ns
            and selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]  # fmt: skip
        assert pods, f"Service {svc['metadata']['name']} selects no pods"
        ports = {p.get("name") for w in pods for c in containers(w) for p in c.get("ports", [])}
        ports |= {p["containerPort"] for w in pods for c in containers(w) for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, f"{svc['metadata']['name']}: targetPort {p['targetPort']}"


def test_workload_selectors_match_their_templates(docs: list[Doc]) -> None:
    for w in workloads(docs):
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert w["spec"]["selector"]["matchLabels"].items() <= labels.items(), w["metadata"]["name"]


def test_hpa_pdb_and_network_policy_target_the_api(docs: list[Doc]) -> None:
    hpa = find(docs, "HorizontalPodAutoscaler", "pet-classifier")
    ref = hpa["spec"]["scaleTargetRef"]
    dep = find(docs, ref["kind"], ref["name"])
    assert ref["apiVersion"] == "apps/v1" and dep["metadata"]["namespace"] == hpa["metadata"]["namespace"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    labels = dep["spec"]["template"]["metadata"]["labels"]
    pdb = find(docs, "PodDisruptionBudget", "pet-classifier")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a drain can always proceed
    netpol = find(docs, "NetworkPolicy", "pet-classifier")
    assert netpol["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    public, scrape = netpol["spec"]["ingress"]
    assert "from" not in public and [p["port"] for p in public["ports"]] == [8080]  # the proxy
    assert scrape["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    assert [p["port"] for p in scrape["ports"]] == [8000, 9113]  # Gunicorn's /metrics, nginx's exporter


def test_metrics_server_is_set_up_for_kind(docs: list[Doc]) -> None:
    ms = find(docs, "Deployment", "metrics-server")
    assert ms["metadata"]["namespace"] == "kube-system"
    assert "--kubelet-insecure-tls" in ms["spec"]["template"]["spec"]["containers"][0]["args"]
    api = find(docs, "APIService", "v1beta1.metrics.k8s.io")
    assert api["spec"]["service"] == {"name": "metrics-server", "namespace": "kube-system"}


def test_deploy_refuses_a_feedback_secret_the_api_would_refuse_before_changing_anything() -> None:
    """Jenkins' FEEDBACK_SECRET goes into the cluster's Secret; a short one would leave every
    pod crash-looping until the rollout timed out. Deploy stops at once, naming it."""
    deployed = ROOT / "build" / "deploy.json"
    before = deployed.read_bytes() if deployed.exists() else None
    env = {**os.environ, "FEEDBACK_SECRET": "hunter2", "DEPLOY_TARGET": "local"}
    run = subprocess.run(
        ["bash", "deploy/cluster.sh", "deploy"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr.strip() == "FEEDBACK_SECRET has 7 characters; the API refuses fewer than 32", run.stderr
    assert (deployed.read_bytes() if deployed.exists() else None) == before


@pytest.mark.parametrize("password", ["", "unset", "   "])
def test_deploy_to_the_cluster_refuses_to_start_without_an_smtp_password(password: str) -> None:
    """No on-call email is worse than a failed deploy: with no real SMTP password, Deploy stops
    before it touches the cluster (it deployed with the literal 'unset' and a warning)."""
    deployed = ROOT / "build" / "deploy.json"
    before = deployed.read_bytes() if deployed.exists() else None
    env = {**os.environ, "SMTP_PASSWORD": password, "DEPLOY_TARGET": "kind", "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        ["bash", "deploy/cluster.sh", "deploy"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr.strip() == (
        "SMTP_PASSWORD is not set (Jenkins credential 'smtp-password'): alert emails could not be sent, "
        "so nothing was deployed"
    ), run.stderr
    assert run.stdout == ""
    assert (deployed.read_bytes() if deployed.exists() else None) == before


def secrets_created_by_deploy() -> dict[str, set[str]]:
    script = (ROOT / "deploy" / "cluster.sh").read_text()
    made: dict[str, set[str]] = {}
    for name, key in re.findall(r"create secret generic ([\w-]+) --from-literal=([\w-]+)=", script):
        made.setdefault(name, set()).add(key)
    for name, key in re.findall(r"^\s*secret_once ([\w-]+) ([\w-]+) ", script, re.MULTILINE):
        made.setdefault(name, set()).add(key)
    return made


def test_every_configmap_and_secret_reference_exists(docs: list[Doc]) -> None:
    configmaps = {d["metadata"]["name"]: set(d.get("data", {})) for d in docs if d["kind"] == "ConfigMap"}
    secrets = secrets_created_by_deploy()
    assert {"alertmanager-smtp", "pet-classifier-secrets", "grafana-admin"} <= secrets.keys()
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are created at deploy time, never committed"
    refs = 0
    for w in workloads(docs):
        spec = w["spec"]["template"]["spec"]
        for c in containers(w):
            for env in c.get("env", []):
                src = env.get("valueFrom", {})
                if "configMapKeyRef" in src:
                    refs += 1
                    assert src["configMapKeyRef"]["key"] in configmaps[src["configMapKeyRef"]["name"]]
                if "secretKeyRef" in src:
                    refs += 1
                    assert src["secretKeyRef"]["key"] in secrets[src["secretKeyRef"]["name"]]
            for env_from in c.get("envFrom", []):
                refs += 1
                assert env_from["configMapRef"]["name"] in configmaps
        for vol in spec.get("volumes", []):
            sources = [vol, *vol.get("projected", {}).get("sources", [])]
            for s in sources:
                if "configMap" in s:
                    refs += 1
                    cm = s["configMap"]
                    assert {i["key"] for i in cm.get("items", [])} <= configmaps[cm["name"]]
                if "secret" in s:
                    refs += 1
                    sec = s["secret"]
                    assert {i["key"] for i in sec.get("items", [])} <= secrets[sec.get("name", sec.get("secretName"))]
    assert refs >= 10


SOURCES = {
    "prometheus-config": {"prometheus.yml": "prometheus/prometheus.yml"},
    "prometheus-rules": {f"{n}.yml": f"prometheus/rules/{n}.yml" for n in ("recording", "alerts")},
    "alertmanager-config": {"alertmanager.yml": "alertmanager/alertmanager.yml"},
    "alertmanager-templates": {
        "email.tmpl": "alertmanager/templates/email.tmpl",
        "grafana.tmpl": "alertmanager/templates/grafana.tmpl",
    },
    "grafana-datasources": {"prometheus.yml": "grafana/provisioning/datasources/prometheus.yml"},
    "grafana-dashboard-provider": {"provider.yml": "grafana/provisioning/dashboards/provider.yml"},
    "grafana-dashboards": {
        p.name: f"grafana/dashboards/{p.name}" for p in (ROOT / "grafana/dashboards").glob("*.json")
    },
}


def test_the_copies_kustomize_reads_equal_their_sources() -> None:
    run = subprocess.run(
        [sys.executable, "deploy/k8s_config.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr


def test_in_cluster_monitoring_config_equals_the_sources(docs: list[Doc]) -> None:
    for prefix, files in SOURCES.items():
        data = configmap_by_prefix(docs, prefix)["data"]
        assert data.keys() == files.keys(), prefix
        for key, path in files.items():
            assert data[key] == (ROOT / path).read_text(), f"{prefix}/{key} differs from {path}"
    rules = {p.name for p in (ROOT / "prometheus" / "rules").glob("*.yml")}
    assert rules == SOURCES["prometheus-rules"].keys(), "a rule file is missing from the cluster"


def test_mounted_paths_are_where_the_configs_look(docs: list[Doc]) -> None:
    prom = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    am = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())

    def projected(name: str) -> tuple[str, set[str]]:
        pod = find(docs, "Deployment", name)["spec"]["template"]["spec"]
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "config")
        vol = next(v for v in pod["volumes"] if v["name"] == "config")
        paths = {i["path"] for s in vol["projected"]["sources"] for i in next(iter(s.values()))["items"]}
        return mount["mountPath"], paths

    base, paths = projected("prometheus")
    assert (
        f"--config.file={base}/prometheus.yml"
        in find(docs, "Deployment", "prometheus")["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert {f"rules/{r}" for r in SOURCES["prometheus-rules"]} <= paths
    assert prom["rule_files"] == ["rules/*.yml"]
    base, paths = projected("alertmanager")
    assert am["global"]["smtp_auth_password_file"] == f"{base}/secrets/smtp-password"
    assert "secrets/smtp-password" in paths and am["templates"] == ["templates/*.tmpl"]
    assert "templates/email.tmpl" in paths


def scraped_pods() -> dict[str, tuple[str, str]]:
    """Jobs that find pods through Kubernetes: job → (app.kubernetes.io/name, container port name)
    that their relabelling keeps."""
    prom = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    kept = {}
    for job in prom["scrape_configs"]:
        if any(sd["role"] == "pod" for sd in job.get("kubernetes_sd_configs", [])):
            (keep,) = [r for r in job["relabel_configs"] if "app_kubernetes_io_name" in r["source_labels"][0]]
            assert keep["action"] == "keep" and keep["source_labels"][1] == "__meta_kubernetes_pod_container_port_name"
            app, port = keep["regex"].split(";")
            kept[job["job_name"]] = (app, port)
    return kept


def test_prometheus_targets_resolve_to_services_in_the_manifests(docs: list[Doc]) -> None:
    prom = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    services = {(d["metadata"]["name"], d["metadata"]["namespace"]): d for d in docs if d["kind"] == "Service"}
    for job, (app, port_name) in scraped_pods().items():  # a named port of the app's pods
        pods = [w for w in workloads(docs) if w["spec"]["template"]["metadata"]["labels"].get(LABEL) == app]
        assert port_name in {p["name"] for w in pods for c in containers(w) for p in c.get("ports", [])}, job
    assert set(scraped_pods()) == {"pet-classifier", "pet-classifier-proxy"}
    targets: list[str] = []
    for job in prom["scrape_configs"]:
        targets += [f"{name}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for name in sd["names"]]
        targets += [t for sc in job.get("static_configs", []) for t in sc["targets"]]
    targets += [t for am in prom["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    checked = 0
    for target in targets:
        host, port = target.rsplit(":", 1)
        if host == "localhost":
            continue
        name, ns = host.split(".")[:2]
        svc = services[(name, ns)]
        if svc["spec"].get("clusterIP") == "None":  # headless: DNS gives pod IPs, so the container port
            selector = svc["spec"]["selector"].items()
            pods = [w for w in workloads(docs) if selector <= w["spec"]["template"]["metadata"]["labels"].items()]
            assert int(port) in {p["containerPort"] for w in pods for c in containers(w) for p in c.get("ports", [])}
        else:
            assert int(port) in {p["port"] for p in svc["spec"]["ports"]}, target
        checked += 1
    assert checked >= 3
    grafana = find(docs, "Deployment", "grafana")["spec"]["template"]["spec"]["containers"][0]
    url = next(e["value"] for e in grafana["env"] if e["name"] == "PROMETHEUS_URL")
    assert url == "http://prometheus.mlops.svc.cluster.local:9090"
    assert "${PROMETHEUS_URL}" in (ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text()


def test_kind_port_mappings_match_the_node_ports(docs: list[Doc]) -> None:
    kind = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert kind["name"] == "mlops"
    mappings = {m["containerPort"]: m["hostPort"] for n in kind["nodes"] for m in n.get("extraPortMappings", [])}
    node_ports = {
        d["metadata"]["name"]: p["nodePort"]
        for d in docs
        if d["kind"] == "Service" and d["spec"].get("type") == "NodePort"
        for p in d["spec"]["ports"]
    }
    assert set(node_ports) == {"pet-classifier", "prometheus", "grafana", "alertmanager"}
    assert set(mappings) == set(node_ports.values())
    assert len(set(mappings.values())) == len(mappings)  # no host port used twice
    assert mappings[node_ports["pet-classifier"]] == 8080
    assert mappings[node_ports["alertmanager"]] == 9093  # `make alerts` reads it there


def test_the_deploy_overlay_retags_the_api_image(tmp_path: Path) -> None:
    """cluster.sh deploys through an overlay that only sets the image this build made."""
    kubectl = require_tool("kubectl")
    script = (ROOT / "deploy" / "cluster.sh").read_text()
    assert "  - name: ghcr.io/pet-classifier/pet-classifier\n" in script
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(ROOT / "deploy" / "k8s", overlay)
    (overlay / "kustomization.yaml").write_text(
        f"resources:\n  - {base}\nimages:\n  - name: ghcr.io/pet-classifier/pet-classifier\n"
        "    newName: ghcr.io/acme/pet-classifier\n    newTag: 0123456789ab\n"
    )
    out = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    images = re.findall(r"image: (ghcr\.io/\S+/pet-classifier\S*)", out)
    assert images == ["ghcr.io/acme/pet-classifier:0123456789ab"]


def allowed(docs: list[Doc], account: str) -> set[tuple[str, str, str]]:
    """(scope, resource, verb) the service account may use, through its (Cluster)RoleBindings."""
    granted = set()
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == account for s in binding["subjects"]):
            continue
        role = find(docs, binding["roleRef"]["kind"], binding["roleRef"]["name"])
        scope = binding["metadata"].get("namespace", "cluster")
        for rule in role["rules"]:
            granted |= {(scope, r, v) for r in rule.get("resources", []) for v in rule["verbs"]}
    return granted


def test_prometheus_may_discover_the_api_pods_and_read_the_kubelets(docs: list[Doc]) -> None:
    # Pod discovery keeps not-ready pods scraped (prometheus.yml); cAdvisor gives each
    # container's CPU, throttling and memory. Both need the Kubernetes API.
    prometheus = find(docs, "Deployment", "prometheus")
    pod = prometheus["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "prometheus" and pod["automountServiceAccountToken"] is True
    granted = allowed(docs, "prometheus")
    assert {("mlops", "pods", v) for v in ("get", "list", "watch")} <= granted
    assert {("cluster", "nodes", "list"), ("cluster", "nodes", "watch"), ("cluster", "nodes/metrics", "get")} <= granted
    assert not {g for g in granted if g[2] not in ("get", "list", "watch")}  # read-only


@pytest.mark.parametrize("when", ["first", "again"])
def test_the_first_deploy_starts_the_hpas_minimum_and_later_ones_leave_the_count_alone(
    when: str, docs: list[Doc]
) -> None:
    # Applied with --server-side --force-conflicts, a replicas field reset a scaled-out
    # Deployment to 2 at every deploy; the HPA owns the count.
    require_tool("kubectl")
    run = subprocess.run(
        ["bash", "deploy/cluster.sh", "render", "ghcr.io/acme/pet-classifier:0123456789ab", when],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    rendered = [d for d in yaml.safe_load_all(run.stdout) if d]
    dep = find(rendered, "Deployment", "pet-classifier")
    least = find(docs, "HorizontalPodAutoscaler", "pet-classifier")["spec"]["minReplicas"]
    assert dep["spec"].get("replicas") == (least if when == "first" else None)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/pet-classifier:0123456789ab"


def test_the_deploy_sets_where_alert_emails_link_to_grafana(docs: list[Doc]) -> None:
    """GRAFANA_URL replaces the default in the Alertmanager templates the cluster gets."""
    require_tool("kubectl")
    env = {**os.environ, "GRAFANA_URL": "https://grafana.shelter.example/"}
    run = subprocess.run(
        ["bash", "deploy/cluster.sh", "render", "ghcr.io/acme/pet-classifier:0123456789ab", "again"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    rendered = [d for d in yaml.safe_load_all(run.stdout) if d]
    templates = configmap_by_prefix(rendered, "alertmanager-templates")["data"]
    assert templates["grafana.tmpl"] == '{{ define "pet.grafana_url" }}https://grafana.shelter.example{{ end }}'
    assert templates["email.tmpl"] == (ROOT / "alertmanager/templates/email.tmpl").read_text()
    default = configmap_by_prefix(docs, "alertmanager-templates")["data"]["grafana.tmpl"]
    assert "http://127.0.0.1:3000" in default  # Kind publishes Grafana there


@pytest.mark.parametrize(
    ("name", "storage_flag"), [("prometheus", "--storage.tsdb.path"), ("alertmanager", "--storage.path")]
)
def test_monitoring_data_survives_restarts_and_configuration_is_reloaded(
    name: str, storage_flag: str, docs: list[Doc]
) -> None:
    """Prometheus' series (the 3-day burn-rate window) and Alertmanager's silences outlive a
    restart; a configuration change is reloaded in place instead of rolling a new pod with
    empty storage (a hash-suffixed ConfigMap did that)."""
    dep = find(docs, "Deployment", name)
    pod = dep["spec"]["template"]["spec"]
    main = container(dep, name)
    args = dict(a.split("=", 1) for a in main["args"] if "=" in a)
    (data,) = [m for m in main["volumeMounts"] if m["mountPath"] == args[storage_flag]]
    (volume,) = [v for v in pod["volumes"] if v["name"] == data["name"]]
    claim = find(docs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert "storageClassName" not in claim["spec"]  # Kind's default StorageClass
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert dep["spec"]["strategy"]["type"] == "Recreate"  # one pod at a time holds the volume
    if name == "prometheus":
        retention = args["--storage.tsdb.retention.time"]
        assert retention.endswith("d") and int(retention[:-1]) >= 3 + 1  # the 3d window, and a day
        assert "--web.enable-lifecycle" in main["args"]  # /-/reload
    # The configuration's ConfigMaps keep their names, so a change updates the mounted files.
    config = next(v for v in pod["volumes"] if v["name"] == "config")
    for source in config["projected"]["sources"]:
        if "configMap" in source:
            assert source["configMap"]["name"] in {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
            assert not re.search(r"-[a-z0-9]{10}$", source["configMap"]["name"]), source
    # A sidecar watches the mounted files and asks for the reload.
    (reloader,) = [c for c in containers(dep) if c["name"] == "config-reloader"]
    port = main["ports"][0]["containerPort"]
    assert f"--webhook-url=http://127.0.0.1:{port}/-/reload" in reloader["args"]
    mount = next(m for m in main["volumeMounts"] if m["name"] == "config")["mountPath"]
    assert f"--volume-dir={mount}" in reloader["args"]
    assert {"name": "config", "mountPath": mount, "readOnly": True} in reloader["volumeMounts"]
