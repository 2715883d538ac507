from __future__ import annotations

from pathlib import Path

import pytest

from ml.config import ConfigError, load_params, parse_params

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def test_repository_params_are_valid() -> None:
    p = load_params(REPO_PARAMS)
    assert p.model.name == "efficientnet_lite0"
    assert p.mlflow.registered_model == "CatsDogsClassifier" and p.mlflow.alias == "champion"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train": {"lr": -0.1}}, "train.lr"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        (
            {"model": {"name": "resnet9000"}},
            "valid names: efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, simple_cnn",
        ),
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


def test_the_code_defaults_are_params_yaml() -> None:
    """One home per setting: a default in code that differed would silently change a run that
    leaves the setting out."""
    assert parse_params({}) == load_params(REPO_PARAMS)


EXPERIMENTS = sorted((REPO_PARAMS.parent / "ml" / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_an_experiment_holds_only_what_it_changes(path: Path) -> None:
    import yaml

    raw = yaml.safe_load(path.read_text())
    assert raw.pop("extends") == "../../params.yaml"
    base = yaml.safe_load(REPO_PARAMS.read_text())

    def repeated(override: dict[str, object], under: dict[str, object], place: str = "") -> list[str]:
        found = []
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(under.get(key), dict):
                found += repeated(value, under[key], f"{place}{key}.")  # type: ignore[arg-type]
            elif under.get(key) == value:
                found.append(place + key)
        return found

    assert raw and not repeated(raw, base), f"{path.name} repeats params.yaml: {repeated(raw, base)}"
    assert load_params(path) != load_params(REPO_PARAMS)


def test_extends_lays_a_file_over_its_base_and_refuses_a_loop(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "train: {lr: 0.01, epochs: 3}\nmodel: {name: tiny_cnn, freeze_backbone: false}\n"
    )
    (tmp_path / "exp.yaml").write_text("extends: base.yaml\ntrain: {epochs: 5}\n")
    p = load_params(tmp_path / "exp.yaml")
    assert (p.train.lr, p.train.epochs, p.model.name) == (0.01, 5, "tiny_cnn")
    (tmp_path / "typo.yaml").write_text("extends: base.yaml\ntrain: {epoch: 5}\n")
    with pytest.raises(ConfigError, match=r"train\.epoch: Extra inputs"):
        load_params(tmp_path / "typo.yaml")
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_params(tmp_path / "a.yaml")
    (tmp_path / "orphan.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "orphan.yaml")
