"""params.yaml, validated before any work starts.

pydantic gives each bad value a clear message naming its place (``train.lr``) and refuses
unknown keys, so a typo is an error instead of a silently ignored setting. The defaults below
are params.yaml's own values (tests/ml/test_config.py keeps them equal). An experiment
(ml/experiments/) holds only what it changes, under ``extends: <params file>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """params.yaml is missing or holds a value the pipeline cannot use."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitParams(_Strict):
    train: float = Field(0.8, gt=0, lt=1)
    val: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitParams:
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError("split fractions train + val + test must sum to 1")
        return self


class DataParams(_Strict):
    source: str = "data/raw"
    seed: int = 42
    split: SplitParams = SplitParams()


class ModelParams(_Strict):
    name: str = "efficientnet_lite0"
    image_size: int = Field(256, gt=0)
    # Frozen backbone: features are computed once and cached; only the head trains.
    freeze_backbone: bool = True
    # With a frozen backbone, also fine-tune its last N stages (of 7) and its final 1x1 conv:
    # the frozen part's output is cached once instead of the pooled features.
    finetune_blocks: int = Field(0, ge=0, le=7)
    # Classify the mean embedding of the photo and its mirror image (features cached that way).
    test_time_flip: bool = False

    @model_validator(mode="after")
    def _known_and_fits(self) -> ModelParams:
        from ml.models import check_model

        check_model(self.name, self.image_size, self.freeze_backbone, self.finetune_blocks)
        if self.test_time_flip and (not self.freeze_backbone or self.finetune_blocks):
            raise ValueError("test_time_flip needs freeze_backbone: true and finetune_blocks: 0 (cached embeddings)")
        return self


class AugmentParams(_Strict):
    hflip: bool = True
    # Lower bound of the RandomResizedCrop area; 1.0 turns cropping off.
    crop_scale: float = Field(0.7, gt=0, le=1)
    color_jitter: float = Field(0.1, ge=0, le=1)


class TrainParams(_Strict):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0)
    scheduler: Literal["cosine", "none"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    early_stopping_patience: int = Field(6, ge=1)
    # Fine-tuning only: fit the linear head alone first, on the frozen network's pooled
    # features, so the stages start from a good head instead of a random one (LP-FT).
    linear_probe_epochs: int = Field(0, ge=0)
    seed: int = 42
    threads: int = Field(2, ge=1)
    augment: AugmentParams = AugmentParams()


class NotAPetParams(_Strict):
    # k-means centroids of the training embeddings that a photo's distance is measured to.
    centroids: int = Field(64, ge=1, le=4096)
    # Share of the validation split's pets the threshold flags (the test split measures it).
    val_flag_rate: float = Field(0.002, gt=0, lt=0.5)


class GateParams(_Strict):
    min_accuracy: float = Field(0.985, ge=0, le=1)
    max_regression: float = Field(0.005, ge=0, le=1)


class MlflowParams(_Strict):
    experiment: str = Field("cats-vs-dogs", min_length=1)
    registered_model: str = Field("CatsDogsClassifier", min_length=1)
    alias: str = Field("champion", min_length=1)
    # Validate marks the version that passed the gate; the smoke tests make it champion.
    candidate_alias: str = Field("candidate", min_length=1)
    # The champion a release replaced: what `make rollback` puts back.
    previous_alias: str = Field("previous", min_length=1)


class Params(_Strict):
    data: DataParams = DataParams()
    # A factory, so that importing this module checks no architecture (ml.models needs PyTorch,
    # which the serving image does not have: the service reads model cards through ml.card).
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = TrainParams()
    not_a_pet: NotAPetParams = NotAPetParams()
    gate: GateParams = GateParams()
    mlflow: MlflowParams = MlflowParams()


def validation_problems(exc: ValidationError, whole: str) -> str:
    """pydantic's errors on one line, each named by its place ("train.lr: ..."), or ``whole``."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or whole}: {err['msg']}" for err in exc.errors())


def parse_params(raw: object) -> Params:
    """Validate an already-parsed mapping; every problem is listed in one error."""
    try:
        return Params.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise ConfigError(f"invalid params: {validation_problems(exc, 'params')}") from None


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, section by section."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None


def _raw_params(path: Path, seen: tuple[Path, ...] = ()) -> Any:
    """The file's mapping, laid over the file it ``extends`` (relative to it), if any."""
    if path.resolve() in seen:
        raise ConfigError(f"{path} extends itself through {' -> '.join(map(str, seen))}")
    raw = _read_yaml(path)
    if not isinstance(raw, dict) or "extends" not in raw:
        return raw
    raw = dict(raw)
    base_name = raw.pop("extends")
    if not isinstance(base_name, str) or not base_name:
        raise ConfigError(f"{path}: extends must name a params file")
    base = _raw_params(path.parent / base_name, (*seen, path.resolve()))
    if not isinstance(base, dict):
        raise ConfigError(f"{path}: {base_name} holds no settings to extend")
    return merged(base, raw)


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    return parse_params(_raw_params(Path(path)))
