"""The model card (``model.json``): what serving the release model needs to know of it.

Read without PyTorch, so that the service can run the model's ONNX graph in an image that has
no PyTorch (ml/graph.py); ml/artifact.py loads the weights the card describes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, PositiveFloat, PositiveInt, ValidationError

from ml.config import validation_problems

CLASSES = ("cat", "dog")
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
class ModelCard:
    """A checked card and what the service reads of it."""

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
    def weights_sha256(self) -> str:
        return str(self.card["weights"]["sha256"])

    @property
    def not_a_pet_threshold(self) -> float | None:
        """Distance over which a photo shows neither class; None: this model cannot tell."""
        section = self.card.get("not_a_pet")
        return float(section["threshold"]) if section else None


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
    if tuple(card["classes"]) != CLASSES:
        raise ModelLoadError(f"model classes {card['classes']} differ from {list(CLASSES)}")
    return dict(card)
