from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ml.evaluate import main as evaluate_main
from ml.train import main as train_main
from tests.conftest import write_tree
from tests.helpers import prepared, write_params


@pytest.fixture
def trained(synthetic_tree: Path, tmp_path: Path, mlflow_store: str) -> tuple[Path, Path]:
    manifest = prepared(synthetic_tree, tmp_path / "prepared")
    params = write_params(tmp_path / "params.yaml", None, synthetic_tree)
    assert (
        train_main(
            [
                "--params",
                str(params),
                "--manifest",
                str(manifest),
                "--out",
                str(tmp_path / "models"),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--reports",
                str(tmp_path / "reports"),
            ]
        )
        == 0
    )
    return tmp_path / "models", manifest


def last_json(out: str) -> dict[str, object]:
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("layout", ["petimages", "flat", "train_plural"])
def test_any_labelled_folder(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str
) -> None:
    model, _ = trained
    folder = write_tree(tmp_path / f"eval-{layout}", layout, n_per_class=8, seed=5)
    (folder / ("Cat" if layout == "petimages" else "") / "cat.broken.jpg").write_bytes(b"garbage")
    assert evaluate_main(["--data", str(folder), "--model", str(model)]) == 0
    captured = capsys.readouterr()
    figures = last_json(captured.out)
    assert figures["n"] == 16 and figures["skipped"] == 1
    assert {"accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix"} <= set(figures)
    assert figures["accuracy"] >= 0.8  # type: ignore[operator]
    assert "cat.broken.jpg" in captured.err


def test_manifest_split_writes_metrics_and_plots(
    trained: tuple[Path, Path], synthetic_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, manifest = trained
    code = evaluate_main(
        [
            "--manifest",
            str(manifest),
            "--split",
            "test",
            "--source",
            str(synthetic_tree),
            "--model",
            str(model),
            "--metrics",
            str(tmp_path / "metrics.json"),
            "--reports",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n"] == 6 and metrics == {
        k: v for k, v in last_json(capsys.readouterr().out).items() if k != "skipped"
    }
    rows = list(csv.DictReader((tmp_path / "out" / "test_predictions.csv").open()))
    assert len(rows) == 6 and {r["actual"] for r in rows} == {"cat", "dog"}
    assert (tmp_path / "out" / "roc.csv").read_text().startswith("fpr,tpr\n")


def test_bad_folder_and_bad_model_are_clear_errors(
    trained: tuple[Path, Path], tmp_path: Path, synthetic_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, _ = trained
    assert evaluate_main(["--data", str(tmp_path / "missing"), "--model", str(model)]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "unlabelled").mkdir()
    (tmp_path / "unlabelled" / "1.jpg").write_bytes(b"x")
    assert evaluate_main(["--data", str(tmp_path / "unlabelled"), "--model", str(model)]) == 2
    assert "no labelled photos" in capsys.readouterr().err
    assert evaluate_main(["--data", str(tmp_path / "unlabelled"), "--model", str(tmp_path)]) == 2
    assert "model card not found" in capsys.readouterr().err
    missing = ["--params", str(tmp_path / "no-params.yaml")]
    assert evaluate_main(["--data", str(synthetic_tree), "--model", str(model), *missing, "--mlflow"]) == 2
    assert "no-params.yaml" in capsys.readouterr().err  # a clear line, not a traceback after the work


def test_evaluation_is_logged_to_the_training_run_with_its_contact_sheet(
    trained: tuple[Path, Path], tmp_path: Path, synthetic_tree: Path
) -> None:
    from mlflow import MlflowClient

    models, manifest = trained
    params = tmp_path / "params.yaml"
    args = ["--manifest", str(manifest), "--model", str(models), "--params", str(params)]
    args += ["--source", str(synthetic_tree)]
    out = tmp_path / "eval"
    assert evaluate_main([*args, "--metrics", str(out / "m.json"), "--reports", str(out), "--mlflow"]) == 0
    assert (out / "misclassified.png").is_file()
    run_id = json.loads((models / "model.json").read_text())["mlflow_run_id"]
    client = MlflowClient()
    logged = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert {"evaluation/m.json", "evaluation/test_predictions.csv", "evaluation/misclassified.png"} <= logged
    metric = client.get_run(run_id).data.metrics["eval_test_accuracy"]
    assert metric == json.loads((out / "m.json").read_text())["accuracy"]
