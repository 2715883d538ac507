"""The release model: ``model.safetensors`` plus ``model.json`` (the model card).

safetensors holds tensors only, so loading a model never unpickles code. The card carries
everything needed to use the weights (architecture, image_size, classes, normalisation) and
the sha256 of the weights file, which :func:`load_release` checks before anything else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ml.card import CARD_FILE, WEIGHTS_FILE, ModelCard, read_card
from ml.card import ModelLoadError as ModelLoadError  # re-exported: the pipeline imports it from here
from ml.fileio import file_sha256, write_json
from ml.models import PetNet, build_model
from ml.not_a_pet import NotAPetDetector


@dataclass(frozen=True)
class ReleaseModel(ModelCard):
    """The card and the network it describes, ready for PyTorch."""

    model: PetNet


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
    try:
        model = build_model(card["architecture"], pretrained=False)
        if card.get("not_a_pet"):
            model.detector = NotAPetDetector(model.classifier.in_features, card["not_a_pet"]["centroids"])
        model.load_state_dict(load_file(str(weights)), strict=True)
        model.test_time_flip = card.get("test_time_flip", False)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"cannot load {weights} as {card['architecture']}: {exc}") from None
    return ReleaseModel(card, model.eval())


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
