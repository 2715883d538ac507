from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ml.artifact import ModelLoadError, load_release, predict_proba, save_release
from ml.models import build_model
from tests.helpers import save_tiny_release


def tiny_release(out: Path) -> dict[str, object]:
    return save_tiny_release(out, image_size=16, test_metrics={"accuracy": 0.9})


def test_round_trip_gives_the_same_predictions(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("tiny_cnn").eval()
    card = save_release(
        model,
        {
            "architecture": "tiny_cnn",
            "image_size": 16,
            "classes": ["cat", "dog"],
            "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
            "test_metrics": {"accuracy": 0.5},
        },
        tmp_path,
    )
    release = load_release(tmp_path)
    batch = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        expected = torch.softmax(model((batch.float() / 255 - 0.5) / 0.5), 1)
    assert torch.allclose(predict_proba(release, batch), expected, atol=1e-6)
    assert release.version == card["version"] and release.image_size == 16
    assert card["weights"]["sha256"] and (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    tiny_release(tmp_path)
    with (tmp_path / "model.safetensors").open("r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelLoadError, match="sha256"):
        load_release(tmp_path)


def test_missing_files_and_bad_cards(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="model card not found"):
        load_release(tmp_path)
    tiny_release(tmp_path)
    card = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_release(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({**card, "architecture": "simple_cnn"}))
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_release(tmp_path)
    del card["image_size"]
    (tmp_path / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="image_size: Field required"):
        load_release(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    card["image_size"] = 16
    (tmp_path / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="weights file not found"):
        load_release(tmp_path)


def test_no_pickle_is_involved(tmp_path: Path) -> None:
    tiny_release(tmp_path)
    assert not (tmp_path / "model.safetensors").read_bytes().startswith(b"PK")  # not a torch zip/pickle
