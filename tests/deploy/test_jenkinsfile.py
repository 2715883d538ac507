"""The Jenkinsfile against the one stage list (deploy/pipeline.py), the Makefile, the Jenkins
setup in deploy/jenkins, and npm-groovy-lint; and `make pipeline`'s runner itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, make_variable, require_tool

JENKINS = ROOT / "deploy" / "jenkins"
GROOVY_LINT = ROOT / "deploy" / "jenkins" / "node_modules" / ".bin" / "npm-groovy-lint"  # make node-tools
JENKINSFILE = (ROOT / "Jenkinsfile").read_text()
CASC = yaml.safe_load((ROOT / "deploy" / "jenkins" / "casc.yaml").read_text())
sys.path.insert(0, str(ROOT / "deploy"))
import pipeline  # noqa: E402  (deploy/pipeline.py: a script folder, not a package)

SPEC = [
    "Checkout",
    "Setup Python",
    "Lint",
    "Unit Tests",
    "Download Data",
    "Train",
    "Validate",
    "Docker Build",
    "Push",
    "Deploy",
    "Smoke Tests",
]


def stage_blocks() -> dict[str, str]:
    """Stage name → the text of its block, found by brace matching."""
    blocks: dict[str, str] = {}
    for m in re.finditer(r"stage\('([^']+)'\)\s*\{", JENKINSFILE):
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(JENKINSFILE[i], 0)
            i += 1
        blocks[m.group(1)] = JENKINSFILE[m.end() : i - 1]
    return blocks


def make_targets() -> set[str]:
    out = subprocess.run(["make", "-pRrq", "-f", "Makefile", ":"], cwd=ROOT, capture_output=True, text=True).stdout
    return set(re.findall(r"^([a-z][a-z0-9-]*):", out, re.MULTILINE))


def test_stages_are_the_spec_in_order() -> None:
    assert list(stage_blocks()) == SPEC
    assert [s.name for s in pipeline.STAGES] == SPEC


def test_each_stage_is_one_make_target_and_the_same_as_make_pipeline() -> None:
    blocks = stage_blocks()
    for stage in pipeline.STAGES:
        shells = re.findall(r"\bsh\s+'([^']*)'", blocks[stage.name])
        assert shells == [f"make {stage.target}"], f"{stage.name}: {shells}"
        guarded = "expression { params." + stage.when + " }" if stage.when else None
        assert (guarded in blocks[stage.name]) if guarded else ("when" not in blocks[stage.name]), stage.name
    # No logic in Groovy: the only shell steps are the stages' make calls.
    assert len(re.findall(r"\bsh\s", JENKINSFILE)) == len(pipeline.STAGES)


def test_every_make_target_a_stage_calls_exists() -> None:
    targets = make_targets()
    assert {"checkout", "lint", "test-unit", "data"} <= targets  # the parse found the Makefile's targets
    missing = [s.target for s in pipeline.STAGES if s.target not in targets]
    assert not missing
    for t in ("status", "logs", "port-forward", "alerts", "kind-down", "smoke", "pipeline"):
        assert t in targets


def test_options_parameters_and_post() -> None:
    for option in ("timeout(", "timestamps()", "buildDiscarder(", "disableConcurrentBuilds()"):
        assert option in JENKINSFILE
    params = re.findall(r"(booleanParam|string)\(name: '(\w+)', defaultValue: ('[^']*'|true|false)", JENKINSFILE)
    assert [(kind, name) for kind, name, _ in params] == [
        ("booleanParam", "SKIP_TRAINING"),
        ("booleanParam", "DEPLOY"),
        ("string", "IMAGE_TAG"),
    ]
    post = JENKINSFILE[JENKINSFILE.rindex("post {") :]
    for step in ("archiveArtifacts", "metrics.json", "models/model.json", "reports/*.png", "currentBuild.description"):
        assert step in post
    unit = stage_blocks()["Unit Tests"]
    assert "junit" in unit and "recordCoverage" in unit


def test_the_job_dsl_offers_the_same_build_buttons() -> None:
    dsl = CASC["jobs"][0]["script"]
    jf = re.findall(r"(booleanParam|string)\(name: '(\w+)', defaultValue: ('[^']*'|true|false)", JENKINSFILE)
    job = re.findall(r"(booleanParam|stringParam)\('(\w+)', ('[^']*'|true|false)", dsl)
    assert [(n, d) for _, n, d in jf] == [(n, d) for _, n, d in job]
    assert "scriptPath('Jenkinsfile')" in dsl and "pipelineJob('pet-classifier')" in dsl


def test_credentials_come_from_casc_placeholders_only() -> None:
    used = set(re.findall(r"credentialsId: '([\w-]+)'", JENKINSFILE))
    assert used == {"ghcr-credentials", "smtp-password"}  # the Kaggle key was bound and never used
    creds = CASC["credentials"]["system"]["domainCredentials"][0]["credentials"]
    defined = {next(iter(c.values()))["id"]: next(iter(c.values())) for c in creds}
    assert used <= defined.keys()
    for cid, cred in defined.items():
        for field in ("password", "secret"):
            if field in cred:
                assert re.fullmatch(r"\$\{[A-Z_]+(:-[\w]*)?\}", cred[field]), f"{cid}.{field} is not a placeholder"
    assert re.fullmatch(r"\$\{[A-Z_]+\}", CASC["jenkins"]["securityRealm"]["local"]["users"][0]["password"])


def test_plugins_cover_the_steps_the_jenkinsfile_uses() -> None:
    plugins = {
        line.split(":")[0].strip()
        for line in (ROOT / "deploy" / "jenkins" / "plugins.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    needs = {
        "readJSON": "pipeline-utility-steps",
        "recordCoverage": "coverage",
        "junit": "junit",
        "timestamps()": "timestamper",
        "withCredentials": "credentials-binding",
        "checkout scm": "git",
    }
    for step, plugin in needs.items():
        assert step in JENKINSFILE and plugin in plugins, step
    assert {"configuration-as-code", "job-dsl", "workflow-aggregator"} <= plugins


def test_npm_groovy_lint_passes() -> None:
    lint = require_tool(str(GROOVY_LINT), "make node-tools")
    require_tool("java")
    result = subprocess.run(
        [lint, "--noserver", "--config", "deploy/jenkins/groovylintrc.json", "--failon", "info", "--output", "txt",
         "Jenkinsfile"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"results in \S*1\S* linted files", result.stdout)  # it did lint the file


def test_npm_groovy_lint_catches_a_broken_jenkinsfile(tmp_path: Path) -> None:
    lint = require_tool(str(GROOVY_LINT), "make node-tools")
    broken = tmp_path / "Jenkinsfile"
    broken.write_text(JENKINSFILE.replace("stage('Lint') {", "stage('Lint') {{", 1))
    result = subprocess.run(
        [lint, "--noserver", "--config", str(ROOT / "deploy/jenkins/groovylintrc.json"), "--failon", "error",
         "--output", "txt", str(broken)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0


# --- `make pipeline`'s runner, with a stand-in for make -------------------------------------

FAKE_MAKE = """#!/bin/sh
echo "$2" >> "$LOG"
[ "$2" != "$FAIL_AT" ]
"""


@pytest.fixture
def fake_make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    make = tmp_path / "make"
    make.write_text(FAKE_MAKE)
    make.chmod(0o755)
    log = tmp_path / "targets.log"
    monkeypatch.setenv("LOG", str(log))
    monkeypatch.setattr(pipeline, "BUILD", tmp_path / "build")
    return str(make), log


def test_runner_runs_every_stage_in_order(
    fake_make: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make, log = fake_make
    monkeypatch.setenv("DEPLOY", "true")
    assert pipeline.run(make=make) == 0
    assert log.read_text().split() == [s.target for s in pipeline.STAGES]
    out = capsys.readouterr().out
    assert "[11/11] Smoke Tests: make smoke" in out and "pipeline passed" in out
    assert re.search(r"Docker Build\s+ok\s+\d+\.\d s", out)


def test_runner_skips_deploy_and_smoke_without_deploy(
    fake_make: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make, log = fake_make
    monkeypatch.setenv("DEPLOY", "false")
    assert pipeline.run(make=make) == 0
    assert log.read_text().split()[-1] == "push"
    assert "Deploy: make deploy — skipped (DEPLOY=0)" in capsys.readouterr().out


def test_runner_stops_at_the_failing_stage(
    fake_make: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make, log = fake_make
    monkeypatch.setenv("FAIL_AT", "validate")
    assert pipeline.run(make=make) == 1
    assert log.read_text().split()[-1] == "validate"
    captured = capsys.readouterr()
    assert "pipeline FAILED at stage Validate" in captured.err
    assert re.search(r"Validate\s+FAILED", captured.out)


def test_runner_refuses_a_bad_flag(fake_make: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    make, _ = fake_make
    monkeypatch.setenv("DEPLOY", "maybe")
    with pytest.raises(SystemExit, match="DEPLOY='maybe'"):
        pipeline.run(make=make)


def test_skip_training_switches_the_train_target() -> None:
    env = {**os.environ, "SKIP_TRAINING": "true"}
    dry = subprocess.run(["make", "-n", "train"], cwd=ROOT, env=env, capture_output=True, text=True).stdout
    assert "ml.registry export-champion" in dry and "dvc repro" not in dry.split("export-champion")[1]
    env["SKIP_TRAINING"] = "false"
    dry = subprocess.run(["make", "-n", "train"], cwd=ROOT, env=env, capture_output=True, text=True).stdout
    assert "export-champion" not in dry and "ml.registry register" in dry


def test_jenkins_builds_on_a_push_with_a_lasting_registry_cpu_torch_and_strict_tests() -> None:
    assert re.search(r"triggers \{\s*pollSCM\('H/5 \* \* \* \*'\)", JENKINSFILE)
    env = {e["key"]: e["value"] for e in CASC["jenkins"]["globalNodeProperties"][0]["envVars"]["env"]}
    assert env["CI"] == "true"
    uri = re.fullmatch(r"\$\{MLFLOW_TRACKING_URI:-(.+)\}", env["MLFLOW_TRACKING_URI"])
    # Not the workspace's mlflow.db: the agent's home, a volume that outlives every workspace.
    assert uri and uri[1].startswith("sqlite:////home/jenkins/mlflow/")
    compose = yaml.safe_load((JENKINS / "compose.yaml").read_text())
    assert "agent_home:/home/jenkins" in compose["services"]["agent"]["volumes"]
    assert env["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    dockerfile_index = re.search(r"^ARG TORCH_INDEX_URL=(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert dockerfile_index and dockerfile_index[1] == env["TORCH_INDEX_URL"]  # the same CPU build as the image


def test_setup_installs_torch_from_torch_index_url_first() -> None:
    dry = subprocess.run(
        ["make", "-n", "-B", ".venv/.installed", "TORCH_INDEX_URL=https://example.invalid/whl/cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    torch_line = next(line for line in dry.splitlines() if "--index-url https://example.invalid/whl/cpu" in line)
    assert "torch(vision)?==" in torch_line
    assert dry.index(torch_line) < dry.index("-r requirements.txt")


def test_builds_run_on_the_agent_never_on_the_controller() -> None:
    jenkins = CASC["jenkins"]
    assert jenkins["numExecutors"] == 0
    label = re.search(r"^    agent \{\s+label '([\w-]+)'\s+\}", JENKINSFILE, re.MULTILINE)
    assert label and "agent any" not in JENKINSFILE
    [node] = [n["permanent"] for n in jenkins["nodes"]]
    assert node["labelString"] == label[1] and node["numExecutors"] >= 1
    ssh = node["launcher"]["ssh"]
    creds = CASC["credentials"]["system"]["domainCredentials"][0]["credentials"]
    [key] = [c["basicSSHUserPrivateKey"] for c in creds if "basicSSHUserPrivateKey" in c]
    assert key["id"] == ssh["credentialsId"] and key["username"] == "jenkins"
    assert re.fullmatch(r"\$\{[A-Z_]+\}", key["privateKeySource"]["directEntry"]["privateKey"])
    # The agent's sshd listens where the launcher connects.
    assert f"AGENT_SSH_PORT:-{ssh['port']}" in (JENKINS / "agent-sshd.sh").read_text()
    assert f"EXPOSE {ssh['port']}" in (JENKINS / "agent.Dockerfile").read_text()
    compose = yaml.safe_load((JENKINS / "compose.yaml").read_text())
    assert {s["build"]["dockerfile"] for s in compose["services"].values()} == {"Dockerfile", "agent.Dockerfile"}


def test_the_agent_image_holds_every_tool_the_tests_drive() -> None:
    """Jenkins runs the tests with CI=true: a tool missing on the agent would fail the stage."""
    agent = (JENKINS / "agent.Dockerfile").read_text()
    apt = re.search(r"apt-get install -y --no-install-recommends \\\n\s+(.+?) \\\n\s+(.+?) \\", agent)
    assert apt, "the agent's apt-get line"
    assert apt[1].split() == make_variable("APT_PACKAGES")  # the packages `make system-deps` installs
    provided = set(make_variable("APT_BINARIES")) | {"java", "kubectl", "kind", "docker", "node", "npm", "make", "git"}
    assert {"nodejs", "npm", "make", "git", "openssh-server"} <= set(apt[2].split())
    assert "COPY --from=java /opt/java/openjdk" in agent and "--from=docker-cli" in agent
    assert all(f"/usr/local/bin/{tool}" in agent for tool in ("kind", "kubectl"))
    named = {
        m[1]
        for path in (ROOT / "tests").rglob("*.py")
        for m in re.finditer(r"(?:require_tool|tool)\(\"([\w.-]+)\"", path.read_text())
    }
    assert named and named <= provided, named - provided
    # The same Python as the serving image, so `make setup` resolves the same wheels.
    python = re.compile(r"^ARG PYTHON_IMAGE=(\S+)", re.MULTILINE)
    assert python.findall(agent) == python.findall((ROOT / "Dockerfile").read_text())
    assert re.search(r"^test-unit: .*\bsystem-deps\b.*\bnode-tools\b", (ROOT / "Makefile").read_text(), re.M)


def test_plugins_are_pinned_and_installed_as_pinned() -> None:
    lines = [ln for ln in (JENKINS / "plugins.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9_-]*:\d[\w.-]*", ln) for ln in lines), lines
    ids = [ln.split(":")[0] for ln in lines]
    assert len(ids) == len(set(ids))
    # What casc.yaml configures needs its plugin: the matrix, the SSH launcher and its key.
    assert {"matrix-auth", "ssh-slaves", "ssh-credentials"} <= set(ids)
    assert re.search(r"jenkins-plugin-cli --latest=false --plugin-file", (JENKINS / "Dockerfile").read_text())


def test_permissions_are_a_matrix_with_one_administrator() -> None:
    strategy = CASC["jenkins"]["authorizationStrategy"]
    assert list(strategy) == ["globalMatrix"]
    grants: dict[tuple[str, str], set[str]] = {}
    for entry in strategy["globalMatrix"]["entries"]:
        [(kind, who)] = entry.items()
        grants[(kind, who["name"])] = set(who["permissions"])
    admins = [who for who, perms in grants.items() if "Overall/Administer" in perms]
    assert admins == [("user", "admin")]
    assert not any(name == "anonymous" for _, name in grants)  # nothing without signing in
    # A signed-in user presses the build buttons and reads results; configuring the job or
    # replaying a build with edited code is the administrator's.
    users = grants[("group", "authenticated")]
    assert {"Overall/Read", "Job/Read", "Job/Build", "Job/Cancel"} <= users
    assert not users & {"Job/Configure", "Job/Create", "Job/Delete", "Run/Replay", "Credentials/View"}
    realm = {u["id"]: u for u in CASC["jenkins"]["securityRealm"]["local"]["users"]}
    assert realm.keys() == {"admin", "developer"}
    assert all(re.fullmatch(r"\$\{[A-Z_]+\}", u["password"]) for u in realm.values())
