from __future__ import annotations

from pathlib import Path

import pytest

from ml.config import ConfigError, load_params, parse_params

REPO_PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"


def test_repository_params_are_valid() -> None:
    p = load_params(REPO_PARAMS)
    assert p.model.name == "efficientnet_lite0"
    assert p.mlflow.registered_model == "CatsDogsClassifier" and p.mlflow.alias == "champion"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train": {"lr": -0.1}}, "train.lr"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"model": {"name": "resnet9000"}}, "valid names: efficientnet_lite0, simple_cnn, tiny_cnn"),
        ({"model": {"name": "simple_cnn", "image_size": 8, "freeze_backbone": False}}, "image_size >= 16"),
        ({"model": {"name": "simple_cnn", "freeze_backbone": True}}, "freeze_backbone needs a pretrained model"),
        ({"model": {"name": "simple_cnn", "freeze_backbone": False, "finetune_blocks": 1}}, "finetune_blocks needs"),
        ({"model": {"finetune_blocks": 8}}, "model.finetune_blocks"),
        ({"data": {"split": {"train": 0.8, "val": 0.1, "test": 0.2}}}, "sum to 1"),
        ({"train": {"optimizer": "adagrad"}}, "train.optimizer"),
        ({"train": {"learning_rate": 0.1}}, "train.learning_rate: Extra inputs are not permitted"),
        ({"gate": {"min_accuracy": 1.5}}, "gate.min_accuracy"),
    ],
)
def test_bad_params_are_refused_with_a_clear_message(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    assert message in str(err.value)


def test_several_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        parse_params({"train": {"lr": -1, "batch_size": 0}})
    assert "train.lr" in str(err.value) and "train.batch_size" in str(err.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")
