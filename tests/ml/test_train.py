from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

import ml.features
from ml.artifact import load_release, predict_outputs, predict_proba
from ml.train import main as train_main
from tests.helpers import prepared, write_params


def run_train(tmp: Path, source: Path, manifest: Path, out: str = "models", **overrides: dict[str, object]) -> int:
    params = write_params(tmp / "params.yaml", overrides, source)
    return train_main(
        [
            "--params",
            str(params),
            "--manifest",
            str(manifest),
            "--out",
            str(tmp / out),
            "--cache-dir",
            str(tmp / "cache"),
            "--reports",
            str(tmp / "reports"),
        ]
    )


def test_training_learns_and_logs_everything(synthetic_tree: Path, tmp_path: Path, mlflow_store: str) -> None:
    manifest = prepared(synthetic_tree, tmp_path / "prepared")
    assert run_train(tmp_path, synthetic_tree, manifest) == 0
    card = json.loads((tmp_path / "models" / "model.json").read_text())
    assert card["architecture"] == "tiny_cnn" and card["image_size"] == 32
    assert card["test_metrics"]["accuracy"] >= 0.8  # reddish cats vs bluish dogs
    assert card["training"]["seconds"] > 0 and card["training"]["images_per_second"] > 0
    run = mlflow.get_run(card["mlflow_run_id"])
    assert run.data.tags["data_manifest_sha256"] == card["data"]["manifest_sha256"]
    assert "git_commit" in run.data.tags
    assert {"val_accuracy", "val_f1", "val_precision", "val_recall", "train_loss", "test_accuracy"} <= set(
        run.data.metrics
    )
    assert run.data.params["train.lr"] == "0.01"
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == list(range(1, len(history) + 1))
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/learning_curves.png"} <= artifacts
    model_files = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "model")}
    assert {"model/model.json", "model/model.safetensors"} <= model_files
    assert load_release(tmp_path / "models").card["version"] == card["version"]


def test_training_fits_the_not_a_pet_detector_and_logs_its_threshold(
    synthetic_tree: Path, tmp_path: Path, mlflow_store: str
) -> None:
    manifest = prepared(synthetic_tree, tmp_path / "prepared")
    assert run_train(tmp_path, synthetic_tree, manifest) == 0
    card = json.loads((tmp_path / "models" / "model.json").read_text())
    section = card["not_a_pet"]
    assert section["method"] == "knn-centroids-cosine" and section["val_flag_rate"] == 0.002
    assert section["centroids"] == 48  # as many as the training photos: fewer than the 64 asked for
    assert 0 <= section["val_flagged"] <= 0.002 and section["test_flagged"] is not None
    release = load_release(tmp_path / "models")
    assert release.model.detector is not None and release.not_a_pet_threshold == section["threshold"]
    run = mlflow.get_run(card["mlflow_run_id"])
    assert run.data.params["not_a_pet.centroids"] == "64" and run.data.params["not_a_pet.val_flag_rate"] == "0.002"
    assert run.data.metrics["not_a_pet_threshold"] == pytest.approx(section["threshold"])
    assert run.data.metrics["not_a_pet_val_flagged"] == section["val_flagged"]
    outputs = predict_outputs(release, torch.full((1, 3, 32, 32), 128, dtype=torch.uint8))
    assert outputs.shape == (1, 3) and 0 <= outputs[0, 2] <= 2  # 1 - cosine similarity


def test_training_is_reproducible(synthetic_tree: Path, tmp_path: Path, mlflow_store: str) -> None:
    manifest = prepared(synthetic_tree, tmp_path / "prepared")
    assert run_train(tmp_path, synthetic_tree, manifest, out="a") == 0
    assert run_train(tmp_path, synthetic_tree, manifest, out="b") == 0
    a = json.loads((tmp_path / "a" / "model.json").read_text())["weights"]["sha256"]
    b = json.loads((tmp_path / "b" / "model.json").read_text())["weights"]["sha256"]
    assert a == b


def test_photos_are_decoded_once(
    synthetic_tree: Path, tmp_path: Path, mlflow_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = prepared(synthetic_tree, tmp_path / "prepared")
    calls = {"n": 0}
    real = ml.features.load_tensor

    def counting(*args: object) -> object:
        calls["n"] += 1
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(ml.features, "load_tensor", counting)
    assert run_train(tmp_path, synthetic_tree, manifest, train={"epochs": 3}) == 0
    assert calls["n"] == 60  # every photo once, not once per epoch
    assert run_train(tmp_path, synthetic_tree, manifest, out="again") == 0
    assert calls["n"] == 60  # the second run reads the cache


def test_frozen_backbone_trains_only_the_head(synthetic_tree: Path, tmp_path: Path, mlflow_store: str) -> None:
    manifest = prepared(synthetic_tree, tmp_path / "prepared")
    code = run_train(
        tmp_path,
        synthetic_tree,
        manifest,
        model={"name": "efficientnet_lite0", "image_size": 32, "freeze_backbone": True},
        train={"epochs": 2},
    )
    assert code == 0
    card = json.loads((tmp_path / "models" / "model.json").read_text())
    assert card["architecture"] == "efficientnet_lite0"
    assert len(list((tmp_path / "cache").glob("features-*.npy"))) == 3


def test_test_time_flip_trains_on_mean_embeddings_and_serves_them(
    synthetic_tree: Path, tmp_path: Path, mlflow_store: str
) -> None:
    """The head learns on the mean embedding of each photo and its mirror image, and the
    released model computes the same: its test accuracy in the card is what evaluation finds."""
    from ml.data import read_manifest, select
    from ml.evaluate import evaluate
    from ml.images import load_tensor, normalise

    manifest = prepared(synthetic_tree, tmp_path / "prepared")
    model = {"name": "efficientnet_lite0", "image_size": 32, "freeze_backbone": True, "test_time_flip": True}
    assert run_train(tmp_path, synthetic_tree, manifest, model=model, train={"epochs": 2}) == 0
    card = json.loads((tmp_path / "models" / "model.json").read_text())
    assert card["test_time_flip"] is True
    release = load_release(tmp_path / "models")
    assert release.model.test_time_flip is True
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(predict_proba(release, x), predict_proba(release, x.flip(-1)), atol=1e-5)
    rows = select(read_manifest(manifest), "test")
    found, _ = evaluate(release, [(synthetic_tree / r.path, int(r.label == "dog")) for r in rows], workers=0)
    assert found["accuracy"] == card["test_metrics"]["accuracy"] and found["n"] == card["test_metrics"]["n"]
    photos = torch.stack([load_tensor(synthetic_tree / r.path, 32) for r in rows])
    with torch.inference_mode():
        served = release.model.embed(normalise(photos, release.mean, release.std)).numpy()
    cached = [np.load(path) for path in (tmp_path / "cache").glob("features-*.npy")]
    assert any(c.shape == served.shape and np.allclose(c, served, atol=1e-4) for c in cached)


@pytest.mark.parametrize("probe_epochs", [0, 2])  # 2: LP-FT, the head is fitted alone first
def test_finetuning_the_last_stage_trains_it_on_cached_trunk_outputs(
    synthetic_tree: Path, tmp_path: Path, mlflow_store: str, probe_epochs: int
) -> None:
    import torch

    from ml.artifact import load_release
    from ml.models import build_model

    manifest = prepared(synthetic_tree, tmp_path / "prepared")
    code = run_train(
        tmp_path,
        synthetic_tree,
        manifest,
        model={"name": "efficientnet_lite0", "image_size": 32, "freeze_backbone": True, "finetune_blocks": 1},
        train={"epochs": 2, "lr": 0.01, "linear_probe_epochs": probe_epochs},
    )
    assert code == 0
    card = json.loads((tmp_path / "models" / "model.json").read_text())
    probed = mlflow.get_run(card["mlflow_run_id"]).data.metrics.get("linear_probe_val_accuracy")
    assert (probed is not None) == (probe_epochs > 0)
    trained = load_release(tmp_path / "models").model
    start = build_model("efficientnet_lite0", pretrained=True)
    before, after = start.state_dict(), trained.state_dict()
    changed = {k for k in before if before[k].dtype.is_floating_point and not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("net.blocks.6.", "net.conv_head", "net.bn2", "classifier")) for k in changed)
    assert any(k.startswith("net.blocks.6.") for k in changed)  # the stage itself learned, not only the head
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        trained.eval()
        assert torch.allclose(trained(x), trained.top(1)(trained.trunk(x, 1)), atol=1e-5)


def test_feature_map_flip_mirrors_about_half_the_batch() -> None:
    import torch

    from ml.train import feature_prepare

    torch.manual_seed(0)
    maps = torch.rand(64, 4, 3, 3)
    out = feature_prepare(True)(maps, True)
    flipped = [bool(torch.equal(o, m.flip(-1))) for o, m in zip(out, maps, strict=True)]
    assert 16 < sum(flipped) < 48
    assert torch.equal(feature_prepare(True)(maps, False), maps)  # never at evaluation
    assert torch.equal(feature_prepare(False)(maps, True), maps)


def test_bad_params_fail_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str], mlflow_store: str) -> None:
    params = write_params(tmp_path / "params.yaml", {"train": {"lr": -1}})
    code = train_main(
        ["--params", str(params), "--manifest", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "m")]
    )
    assert code == 2
    assert "train.lr" in capsys.readouterr().err
    assert not (tmp_path / "m").exists() and not (tmp_path / "mlflow.db").exists()


def test_missing_manifest_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mlflow_store: str
) -> None:
    params = write_params(tmp_path / "params.yaml")
    assert train_main(["--params", str(params), "--manifest", str(tmp_path / "nope.csv")]) == 2
    assert "manifest not found" in capsys.readouterr().err


def test_augmentation_keeps_shape_and_varies_the_picture() -> None:
    import torch

    from ml.config import parse_params
    from ml.train import image_prepare

    params = parse_params({"model": {"name": "tiny_cnn", "image_size": 32, "freeze_backbone": False}})
    prepare = image_prepare(params, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    batch = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(0)
    trained_view, eval_view = prepare(batch, True), prepare(batch, False)
    assert trained_view.shape == eval_view.shape == (4, 3, 32, 32)
    assert trained_view.dtype == eval_view.dtype == torch.float32
    assert not torch.equal(trained_view, eval_view)  # augmented
    assert torch.equal(eval_view, prepare(batch, False))  # evaluation is deterministic
