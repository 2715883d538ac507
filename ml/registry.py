"""Registering the release model in MLflow and the quality gate that decides if it ships.

    python -m ml.registry register  # register models/ as a version of CatsDogsClassifier
    python -m ml.registry promote   # Validate: register, gate it against @champion, mark it @candidate
    python -m ml.registry release   # smoke tests passed: @champion → @candidate's version
    python -m ml.registry reject    # smoke tests failed: drop @candidate; @champion stays
    python -m ml.registry rollback  # make rollback: @champion → @previous (the champion it replaced)
    python -m ml.registry show      # the registered versions and their aliases
    python -m ml.registry export-champion  # put @champion's artifact in models/ (SKIP_TRAINING)

A release is promoted only once proven: the gate marks a @candidate, and @champion moves to it
only after the image serving it has passed its smoke tests.

The gate passes a candidate when its test accuracy reaches ``gate.min_accuracy`` and is not
worse than the champion's, on the same test manifest, by more than ``gate.max_regression``.
When the champion was measured on another manifest it is evaluated again on this one.
Aliases are used throughout; the deprecated registry stages never are.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from PIL import Image

from ml import tracking
from ml.artifact import ModelLoadError, load_release
from ml.config import ConfigError, GateParams, Params, load_params
from ml.data import MANIFEST, DataError, read_manifest, select
from ml.fileio import file_sha256, write_json
from ml.models import CLASSES
from ml.pyfunc_signature import SIGNATURE

ROOT = Path(__file__).resolve().parent.parent
# What a registered version is for MLflow's own tools: ml/pyfunc_model.py with the release files.
PYFUNC_PATH = "pyfunc"


@dataclass(frozen=True)
class GateResult:
    passed: bool
    message: str
    candidate_accuracy: float
    champion_accuracy: float | None
    champion_version: str | None
    version: str


def gate_decision(candidate: float, champion: float | None, gate: GateParams) -> tuple[bool, str]:
    """The rule itself, kept pure so it is tested on its own."""
    if candidate < gate.min_accuracy:
        return False, f"candidate accuracy {candidate:.4f} is below gate.min_accuracy {gate.min_accuracy:.4f}"
    if champion is not None and candidate < champion - gate.max_regression:
        return False, (
            f"candidate accuracy {candidate:.4f} is worse than champion {champion:.4f} "
            f"by more than gate.max_regression {gate.max_regression:.4f}"
        )
    against = f"champion {champion:.4f}" if champion is not None else "no champion yet"
    return True, f"candidate accuracy {candidate:.4f} passes (min {gate.min_accuracy:.4f}, {against})"


def _run_exists(client: MlflowClient, run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        client.get_run(run_id)
        return True
    except MlflowException:
        return False


def ensure_run(client: MlflowClient, card: dict[str, Any], model_dir: Path, experiment: str) -> str:
    """The run holding this model's artifacts; a model trained elsewhere (a committed release
    in a fresh clone, say) gets an import run so the registry can point at it."""
    if _run_exists(client, card.get("mlflow_run_id")):
        return str(card["mlflow_run_id"])
    tracking.configure(experiment)
    with mlflow.start_run(run_name=f"import {card['version']}") as run:
        mlflow.set_tags(
            {
                "imported": "true",
                "git_commit": card.get("git_commit", "unknown"),
                "original_run_id": str(card.get("mlflow_run_id")),
            }
        )
        mlflow.log_metric("test_accuracy", float(card["test_metrics"]["accuracy"]))
        mlflow.log_artifacts(str(model_dir), "model")
        return str(run.info.run_id)


def serving_requirements() -> list[str]:
    """requirements-serve.txt's and requirements-model.txt's pins: what the pyfunc needs to
    decode photos and run the model in PyTorch wherever it is loaded."""
    lines = [
        line
        for name in ("requirements-serve.txt", "requirements-model.txt")
        for line in (ROOT / name).read_text().splitlines()
    ]
    return [kept for line in lines if (kept := line.split("#")[0].strip())]


def log_pyfunc(client: MlflowClient, run_id: str, model_dir: Path) -> str:
    """Add the release as an MLflow pyfunc model (signature, input example, requirements) to
    ``run_id``'s artifacts, so `mlflow models serve` and `mlflow.pyfunc.load_model` take it."""
    photo = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 90, 60)).save(photo, "JPEG")
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "model"
        mlflow.pyfunc.save_model(
            path=str(saved),
            python_model=str(ROOT / "ml" / "pyfunc_model.py"),
            artifacts={"release": str(model_dir)},
            code_paths=[str(ROOT / "ml")],
            signature=SIGNATURE,
            input_example=pd.DataFrame({"image": [photo.getvalue()]}),
            pip_requirements=serving_requirements(),
        )
        client.log_artifacts(run_id, str(saved), PYFUNC_PATH)
    return f"{client.get_run(run_id).info.artifact_uri}/{PYFUNC_PATH}"


def register(
    client: MlflowClient, name: str, run_id: str, card: dict[str, Any], manifest_sha: str, model_dir: Path
) -> ModelVersion:
    """Register once per weights file: promoting the same model again reuses its version."""
    sha = card["weights"]["sha256"]
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Cat or dog, from a shelter photo.")
    for mv in client.search_model_versions(f"name='{name}'"):
        if mv.tags.get("weights_sha256") == sha:
            return mv
    source = log_pyfunc(client, run_id, model_dir)
    tags = {
        "weights_sha256": sha,
        "model_version": card["version"],
        "architecture": card["architecture"],
        "test_accuracy": str(card["test_metrics"]["accuracy"]),
        "manifest_sha256": manifest_sha,
        "git_commit": card.get("git_commit", "unknown"),
    }
    return client.create_model_version(name, source, run_id=run_id, tags=tags, description=card.get("description"))


def champion_accuracy(
    client: MlflowClient, params: Params, manifest_sha: str, test_items: list[tuple[Path, int]]
) -> tuple[str, float] | None:
    """(version, accuracy on this manifest's test split) of the champion, or None without one."""
    try:
        champ = client.get_model_version_by_alias(params.mlflow.registered_model, params.mlflow.alias)
    except MlflowException:
        return None
    if champ.tags.get("manifest_sha256") == manifest_sha and "test_accuracy" in champ.tags:
        return str(champ.version), float(champ.tags["test_accuracy"])
    from ml.evaluate import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=champ.run_id, artifact_path="model", dst_path=tmp)
        figures, _ = evaluate(load_release(local), test_items)
    print(f"champion v{champ.version} was measured on another manifest; re-evaluated on this one", file=sys.stderr)
    return str(champ.version), float(figures["accuracy"])


def promote(params: Params, model_dir: Path, manifest: Path, source: Path) -> GateResult:
    card = load_release(model_dir).card  # refuses weights that do not match their card
    manifest_sha = file_sha256(manifest)
    if card.get("data", {}).get("manifest_sha256") != manifest_sha:
        raise DataError(
            f"model {card['version']} was not tested on {manifest}: its manifest hash differs (re-run `make train`)"
        )
    tracking.configure(params.mlflow.experiment)
    client = MlflowClient()
    name = params.mlflow.registered_model
    test_items = [(source / r.path, CLASSES.index(r.label)) for r in select(read_manifest(manifest), "test")]
    previous = champion_accuracy(client, params, manifest_sha, test_items)
    run_id = ensure_run(client, card, model_dir, params.mlflow.experiment)
    mv = register(client, name, run_id, card, manifest_sha, model_dir)
    candidate = float(card["test_metrics"]["accuracy"])
    already = previous is not None and previous[0] == str(mv.version)
    against = None if already else previous  # the candidate is already champion: nothing to regress against
    passed, message = gate_decision(candidate, against[1] if against else None, params.gate)
    if already:
        message = message.replace("no champion yet", f"v{mv.version} is already champion")
    client.set_model_version_tag(name, mv.version, "gate", "passed" if passed else "failed")
    if passed:
        client.set_registered_model_alias(name, params.mlflow.candidate_alias, mv.version)
    return GateResult(
        passed,
        message,
        candidate,
        previous[1] if previous else None,
        previous[0] if previous else None,
        str(mv.version),
    )


def _by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def release_candidate(params: Params) -> str:
    """The smoke tests passed: @champion moves to @candidate, and the champion it replaces is
    kept as @previous for `make rollback`."""
    tracking.configure(params.mlflow.experiment)
    client, m = MlflowClient(), params.mlflow
    candidate = _by_alias(client, m.registered_model, m.candidate_alias)
    if candidate is None:
        raise ModelLoadError(
            f"there is no {m.registered_model}@{m.candidate_alias} to release: the Validate stage must pass first"
        )
    champion = _by_alias(client, m.registered_model, m.alias)
    if champion is not None and champion.version != candidate.version:
        client.set_registered_model_alias(m.registered_model, m.previous_alias, champion.version)
    client.set_registered_model_alias(m.registered_model, m.alias, candidate.version)
    client.delete_registered_model_alias(m.registered_model, m.candidate_alias)
    client.set_model_version_tag(m.registered_model, candidate.version, "smoke", "passed")
    return f"{m.registered_model}@{m.alias} → v{candidate.version} ({candidate.tags.get('model_version', '?')})"


def reject_candidate(params: Params) -> str:
    """The smoke tests failed: @candidate is dropped and its version marked; @champion stays."""
    tracking.configure(params.mlflow.experiment)
    client, m = MlflowClient(), params.mlflow
    candidate = _by_alias(client, m.registered_model, m.candidate_alias)
    champion = _by_alias(client, m.registered_model, m.alias)
    stays = f"{m.registered_model}@{m.alias} stays " + (f"v{champion.version}" if champion else "unset")
    if candidate is None:
        return f"no {m.registered_model}@{m.candidate_alias} to reject; {stays}"
    client.set_model_version_tag(m.registered_model, candidate.version, "smoke", "failed")
    client.delete_registered_model_alias(m.registered_model, m.candidate_alias)
    return f"v{candidate.version} failed its smoke tests and is no candidate; {stays}"


def rollback(params: Params) -> ModelVersion:
    """@champion back to @previous (once: no older champion is kept); the version put back."""
    tracking.configure(params.mlflow.experiment)
    client, m = MlflowClient(), params.mlflow
    previous = _by_alias(client, m.registered_model, m.previous_alias)
    if previous is None:
        raise ModelLoadError(f"there is no {m.registered_model}@{m.previous_alias} to roll back to")
    champion = _by_alias(client, m.registered_model, m.alias)
    if champion is not None:
        client.set_model_version_tag(m.registered_model, champion.version, "rolled_back", "true")
    client.set_registered_model_alias(m.registered_model, m.alias, previous.version)
    client.delete_registered_model_alias(m.registered_model, m.previous_alias)
    return previous


def register_release(params: Params, model_dir: Path) -> str:
    """Register without gating (the Train stage); returns 'Name vN'."""
    card = load_release(model_dir).card
    tracking.configure(params.mlflow.experiment)
    client = MlflowClient()
    run_id = ensure_run(client, card, model_dir, params.mlflow.experiment)
    manifest_sha = card.get("data", {}).get("manifest_sha256", "")
    mv = register(client, params.mlflow.registered_model, run_id, card, manifest_sha, model_dir)
    return f"{params.mlflow.registered_model} v{mv.version} ({card['version']})"


def show(params: Params) -> None:
    tracking.configure(params.mlflow.experiment)
    client = MlflowClient()
    name = params.mlflow.registered_model
    try:
        versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    except MlflowException:
        versions = []
    if not versions:
        print(f"{name}: no registered versions")
    for v in versions:
        aliases = ",".join(v.aliases) or "-"
        tags = v.tags
        print(
            f"{name} v{v.version}  aliases={aliases}  accuracy={tags.get('test_accuracy', '?')}  "
            f"gate={tags.get('gate', '?')}  {tags.get('model_version', '')}"
        )


def export_champion(params: Params, out: Path) -> str:
    """Ship the current champion unchanged (the Train stage when training is skipped): its
    artifact replaces models/, each file renamed into place after its sha256 was checked."""
    tracking.configure(params.mlflow.experiment)
    client = MlflowClient()
    name, alias = params.mlflow.registered_model, params.mlflow.alias
    try:
        champ = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        raise ModelLoadError(f"there is no {name}@{alias} to ship: run the pipeline with training first") from None
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        local = Path(mlflow.artifacts.download_artifacts(run_id=champ.run_id, artifact_path="model", dst_path=tmp))
        release = load_release(local)  # refuses weights that do not match their card
        for file in ("model.safetensors", "model.json"):
            os.replace(local / file, out / file)
    return f"{name}@{alias} v{champ.version} ({release.version})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Model registry and quality gate.")
    ap.add_argument(
        "command", choices=["register", "promote", "release", "reject", "rollback", "show", "export-champion"]
    )
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--model", type=Path, default=Path("models"))
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--source", type=Path, help="photo folder (default: params data.source)")
    ap.add_argument("--report", type=Path, help="promote: also write the gate's verdict here as JSON")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
        if args.command == "show":
            show(params)
            return 0
        if args.command == "register":
            print(f"registered {register_release(params, args.model)}")
            return 0
        if args.command == "export-champion":
            print(f"training skipped: shipping {export_champion(params, args.model)} from models/")
            return 0
        if args.command == "release":
            print(f"released: {release_candidate(params)}")
            return 0
        if args.command == "reject":
            print(reject_candidate(params))
            return 0
        if args.command == "rollback":
            back = rollback(params)
            print(f"rolled back: {params.mlflow.registered_model}@{params.mlflow.alias} → v{back.version}")
            print(f"model_version {back.tags.get('model_version', '?')}")  # the image tag cluster.sh deploys
            return 0
        result = promote(params, args.model, args.manifest, args.source or Path(params.data.source))
    except (ConfigError, DataError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verdict = "PASSED" if result.passed else "FAILED"
    champion = (
        f"champion v{result.champion_version} {result.champion_accuracy:.4f}"
        if result.champion_version
        else "no champion"
    )
    print(
        f"gate {verdict}: candidate v{result.version} {result.candidate_accuracy:.4f} vs {champion}: {result.message}"
    )
    if result.passed:
        print(f"{params.mlflow.registered_model}@{params.mlflow.candidate_alias} → v{result.version}")
    if args.report:
        write_json(args.report, {"verdict": verdict, **asdict(result)})
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
