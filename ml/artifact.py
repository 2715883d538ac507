"""The release model: ``model.safetensors`` plus ``model.json`` (the model card).

safetensors holds tensors only, so loading a model never unpickles code. The card carries
everything needed to use the weights (architecture, image_size, classes, normalisation) and
the sha256 of the weights file, which :func:`load_release` checks before anything else.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field, PositiveFloat, PositiveInt, ValidationError
from safetensors.torch import load_file, save_file
from torch import nn

from ml.config import validation_problems
from ml.fileio import file_sha256, write_json
from ml.models import CLASSES, PetNet, build_model
from ml.not_a_pet import NotAPetDetector

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"


class ModelLoadError(RuntimeError):
    """The release model is missing, altered or inconsistent with its card."""


class _Normalization(BaseModel):
    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[PositiveFloat] = Field(min_length=3, max_length=3)


class _Weights(BaseModel):
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class _TestMetrics(BaseModel):
    accuracy: float = Field(ge=0, le=1)


class _NotAPet(BaseModel):
    centroids: PositiveInt
    threshold: float


class _Card(BaseModel):
    """What using the weights needs of model.json, each field of the type it must have: a card
    edited by hand is refused with the reason, never met later as a crash. Other fields
    (training figures, lineage) are free."""

    architecture: str
    version: str
    image_size: PositiveInt
    test_time_flip: bool = False  # absent in cards written before it existed
    classes: list[str]
    normalization: _Normalization
    weights: _Weights
    test_metrics: _TestMetrics
    not_a_pet: _NotAPet | None = None  # absent in cards written before the detector existed


@dataclass(frozen=True)
class ReleaseModel:
    model: PetNet
    card: dict[str, Any]

    @property
    def image_size(self) -> int:
        return int(self.card["image_size"])

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.card["normalization"]["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.card["normalization"]["std"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.card["classes"])

    @property
    def version(self) -> str:
        return str(self.card["version"])

    @property
    def not_a_pet_threshold(self) -> float | None:
        """Distance over which a photo shows neither class; None: this model cannot tell."""
        section = self.card.get("not_a_pet")
        return float(section["threshold"]) if section else None


def save_release(model: nn.Module, card: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Write weights then card (each atomically); returns the card with the weights' hash."""
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    tmp = out_dir / f".{WEIGHTS_FILE}.tmp"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"architecture": card["architecture"]})
    os.chmod(tmp, 0o644)
    os.replace(tmp, weights)
    sha = file_sha256(weights)
    card = {**card, "version": f"{card['architecture']}-{sha[:12]}"}
    card["weights"] = {"file": WEIGHTS_FILE, "format": "safetensors", "sha256": sha, "bytes": weights.stat().st_size}
    write_json(out_dir / CARD_FILE, card)
    return card


def read_card(model_dir: Path) -> dict[str, Any]:
    path = model_dir / CARD_FILE
    if not path.is_file():
        raise ModelLoadError(f"model card not found: {path}")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"model card {path} is not valid JSON: {exc}") from None
    try:
        _Card.model_validate(card, strict=True)  # strict all the way down: "256" is not a size
    except ValidationError as exc:
        raise ModelLoadError(f"model card {path} is not usable: {validation_problems(exc, 'card')}") from None
    return dict(card)


def load_release(model_dir: str | Path) -> ReleaseModel:
    """Load and verify the release model; every failure is a ModelLoadError with the reason."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    weights = model_dir / card["weights"]["file"]
    if not weights.is_file():
        raise ModelLoadError(f"weights file not found: {weights}")
    actual = file_sha256(weights)
    if actual != card["weights"]["sha256"]:
        raise ModelLoadError(f"sha256 of {weights} is {actual}, model card says {card['weights']['sha256']}")
    if tuple(card["classes"]) != CLASSES:
        raise ModelLoadError(f"model classes {card['classes']} differ from {list(CLASSES)}")
    try:
        model = build_model(card["architecture"], pretrained=False)
        if card.get("not_a_pet"):
            model.detector = NotAPetDetector(model.classifier.in_features, card["not_a_pet"]["centroids"])
        model.load_state_dict(load_file(str(weights)), strict=True)
        model.test_time_flip = card.get("test_time_flip", False)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"cannot load {weights} as {card['architecture']}: {exc}") from None
    return ReleaseModel(model.eval(), card)


@torch.inference_mode()
def predict_proba(release: ReleaseModel, batch: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×S×S → class probabilities N×2."""
    from ml.images import normalise

    x = normalise(batch, release.mean, release.std)
    return torch.softmax(release.model(x).float(), dim=1)


@torch.inference_mode()
def predict_outputs(release: ReleaseModel, batch: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×S×S → N×3: class probabilities, then the not-a-pet distance (PetNet.serve)."""
    from ml.images import normalise

    return release.model.serve(normalise(batch, release.mean, release.std))
