"""The gate against a real MLflow SQLite store: first model, pass, fail, re-promotion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ml.config import GateParams
from ml.registry import gate_decision
from ml.registry import main as registry_main
from tests.helpers import prepared, save_tiny_release, write_params


@pytest.mark.parametrize(
    ("candidate", "champion", "passed", "words"),
    [
        (0.96, None, True, "no champion yet"),
        (0.90, None, False, "below gate.min_accuracy"),
        (0.96, 0.962, True, "champion 0.9620"),
        (0.95, 0.97, False, "worse than champion 0.9700"),
        (0.99, 0.97, True, "passes"),
    ],
)
def test_gate_rule(candidate: float, champion: float | None, passed: bool, words: str) -> None:
    ok, message = gate_decision(candidate, champion, GateParams(min_accuracy=0.95, max_regression=0.005))
    assert ok is passed
    assert words in message


def release(out: Path, manifest: Path, accuracy: float, seed: int) -> Path:
    """A real tiny model with a card claiming a given test accuracy on ``manifest``."""
    from ml.fileio import file_sha256

    data = {"manifest_sha256": file_sha256(manifest)}
    save_tiny_release(out, image_size=16, seed=seed, test_metrics={"accuracy": accuracy}, data=data)
    return out


@pytest.fixture
def world(synthetic_tree: Path, tmp_path: Path, mlflow_store: str) -> tuple[Path, Path]:
    manifest = prepared(synthetic_tree, tmp_path / "prepared")
    params = write_params(
        tmp_path / "params.yaml", {"gate": {"min_accuracy": 0.8, "max_regression": 0.01}}, synthetic_tree
    )
    return manifest, params


def promote(model: Path, manifest: Path, params: Path) -> int:
    return registry_main(["promote", "--model", str(model), "--manifest", str(manifest), "--params", str(params)])


def ship(model: Path, manifest: Path, params: Path) -> int:
    """Validate, then (the smoke tests passed) release: what a whole green build does."""
    code = promote(model, manifest, params)
    return code or registry_main(["release", "--params", str(params)])


def alias(name: str) -> str:
    return str(MlflowClient().get_model_version_by_alias("CatsDogsClassifier", name).version)


def champion() -> str:
    return alias("champion")


def has_alias(name: str) -> bool:
    return name in MlflowClient().get_registered_model("CatsDogsClassifier").aliases


def test_first_pass_fail_and_replace(
    world: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, params = world
    assert ship(release(tmp_path / "m1", manifest, 0.90, 1), manifest, params) == 0
    assert champion() == "1"
    assert "no champion" in capsys.readouterr().out

    report = tmp_path / "gate.json"
    model2 = release(tmp_path / "m2", manifest, 0.85, 2)
    assert (
        registry_main(
            [
                "promote",
                "--model",
                str(model2),
                "--manifest",
                str(manifest),
                "--params",
                str(params),
                "--report",
                str(report),
            ]
        )
        == 1
    )
    verdict = json.loads(report.read_text())
    assert verdict["verdict"] == "FAILED" and verdict["candidate_accuracy"] == 0.85
    assert verdict["champion_accuracy"] == 0.9 and verdict["champion_version"] == "1"
    out = capsys.readouterr().out
    assert "gate FAILED" in out and "0.8500" in out and "0.9000" in out  # both figures
    assert champion() == "1"
    assert MlflowClient().get_model_version("CatsDogsClassifier", "2").tags["gate"] == "failed"

    assert ship(release(tmp_path / "m3", manifest, 0.895, 3), manifest, params) == 0  # within max_regression
    assert champion() == "3"


def test_below_minimum_never_ships_even_first(world: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, params = world
    assert promote(release(tmp_path / "m", manifest, 0.5, 1), manifest, params) == 1
    with pytest.raises(Exception, match="champion"):
        champion()


def test_promoting_the_same_model_twice_reuses_its_version(world: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, params = world
    model = release(tmp_path / "m", manifest, 0.9, 1)
    assert promote(model, manifest, params) == 0
    assert promote(model, manifest, params) == 0
    assert len(MlflowClient().search_model_versions("name='CatsDogsClassifier'")) == 1


def test_a_model_from_another_store_gets_an_import_run(world: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, params = world
    model = release(tmp_path / "m", manifest, 0.9, 1)
    card = json.loads((model / "model.json").read_text())
    assert "mlflow_run_id" not in card
    assert promote(model, manifest, params) == 0
    mv = MlflowClient().get_model_version("CatsDogsClassifier", "1")
    run = MlflowClient().get_run(mv.run_id)
    assert run.data.tags["imported"] == "true"
    assert mv.tags["weights_sha256"] == card["weights"]["sha256"]


def test_model_tested_on_another_manifest_is_refused(
    world: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, params = world
    other = tmp_path / "other.csv"
    other.write_text(manifest.read_text().replace("\n", "\r\n", 1))
    model = release(tmp_path / "m", other, 0.9, 1)
    assert promote(model, manifest, params) == 2
    assert "manifest hash differs" in capsys.readouterr().err


def test_champion_from_another_manifest_is_evaluated_again(
    world: tuple[Path, Path], synthetic_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, params = world
    assert ship(release(tmp_path / "m1", manifest, 0.9, 1), manifest, params) == 0
    # A new data version: one photo fewer, so a different manifest and test split.
    lines = manifest.read_text().splitlines(keepends=True)
    new_manifest = tmp_path / "new.csv"
    new_manifest.write_text("".join(lines[:-1]))
    assert promote(release(tmp_path / "m2", new_manifest, 0.9, 2), new_manifest, params) == 0
    err = capsys.readouterr().err
    assert "re-evaluated on this one" in err


def test_skip_training_ships_the_champion_into_models(
    world: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, params = world
    shipped = release(tmp_path / "m1", manifest, 0.9, 1)
    assert ship(shipped, manifest, params) == 0
    out = release(tmp_path / "models", manifest, 0.85, 2)  # a newer, worse candidate in models/
    assert registry_main(["export-champion", "--model", str(out), "--params", str(params)]) == 0
    assert "shipping CatsDogsClassifier@champion v1" in capsys.readouterr().out
    for name in ("model.safetensors", "model.json"):
        assert (out / name).read_bytes() == (shipped / name).read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.safetensors"]  # no temp left


def test_skip_training_without_a_champion_is_a_clear_error(
    world: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, params = world
    out = tmp_path / "models"
    assert registry_main(["export-champion", "--model", str(out), "--params", str(params)]) == 2
    assert "no CatsDogsClassifier@champion to ship" in capsys.readouterr().err


def test_validate_marks_a_candidate_and_only_passed_smoke_tests_make_it_champion(
    world: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Validate used to move @champion before the image had run; a failed smoke test then left
    # it there, and the next SKIP_TRAINING build shipped the release that had failed.
    manifest, params = world
    assert ship(release(tmp_path / "m1", manifest, 0.9, 1), manifest, params) == 0
    assert promote(release(tmp_path / "m2", manifest, 0.92, 2), manifest, params) == 0
    assert (champion(), alias("candidate")) == ("1", "2")
    assert "CatsDogsClassifier@candidate → v2" in capsys.readouterr().out
    # The smoke tests fail: the candidate is dropped and marked, @champion never moved.
    assert registry_main(["reject", "--params", str(params)]) == 0
    assert champion() == "1" and not has_alias("candidate")
    assert MlflowClient().get_model_version("CatsDogsClassifier", "2").tags["smoke"] == "failed"
    assert "@champion stays v1" in capsys.readouterr().out
    # A later build passes them: the champion it replaces is kept as @previous.
    assert ship(release(tmp_path / "m3", manifest, 0.93, 3), manifest, params) == 0
    assert (champion(), alias("previous")) == ("3", "1") and not has_alias("candidate")
    assert MlflowClient().get_model_version("CatsDogsClassifier", "3").tags["smoke"] == "passed"


def test_releasing_without_a_candidate_is_a_clear_error(
    world: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, params = world
    assert registry_main(["release", "--params", str(params)]) == 2
    assert "no CatsDogsClassifier@candidate to release: the Validate stage must pass first" in capsys.readouterr().err


def test_rollback_puts_the_previous_champion_back(
    world: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, params = world
    assert registry_main(["rollback", "--params", str(params)]) == 2
    assert "no CatsDogsClassifier@previous to roll back to" in capsys.readouterr().err
    assert ship(release(tmp_path / "m1", manifest, 0.9, 1), manifest, params) == 0
    assert ship(release(tmp_path / "m2", manifest, 0.92, 2), manifest, params) == 0
    capsys.readouterr()
    assert registry_main(["rollback", "--params", str(params)]) == 0
    assert champion() == "1" and not has_alias("previous")
    first = MlflowClient().get_model_version("CatsDogsClassifier", "1").tags["model_version"]
    assert capsys.readouterr().out.splitlines()[-1] == f"model_version {first}"  # the image tag to deploy
    assert MlflowClient().get_model_version("CatsDogsClassifier", "2").tags["rolled_back"] == "true"
    assert registry_main(["rollback", "--params", str(params)]) == 2  # once: no older champion is kept
