"""The other labelled sets (ml/robustness.py) and the misclassified contact sheet."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.images import load_tensor
from ml.metrics import misclassified_png
from ml.robustness import VARIANTS
from ml.robustness import main as robustness_main
from tests.helpers import TINY_PARAMS, prepared, save_tiny_release, write_params


def asymmetric_photo() -> bytes:
    """Left half red, right half blue, a green bar on top: any rotation or mirror shows."""
    arr = np.zeros((60, 80, 3), dtype=np.uint8)
    arr[:, :40] = (220, 30, 30)
    arr[:, 40:] = (30, 30, 220)
    arr[:10] = (30, 200, 30)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def test_exif_rotated_photos_come_out_upright_and_untagged_ones_do_not() -> None:
    photo = asymmetric_photo()
    upright = load_tensor(photo, 32).float()
    tagged = VARIANTS["exif_rotated"](photo)
    assert Image.open(io.BytesIO(tagged)).size == (60, 80)  # stored sideways
    assert (load_tensor(tagged, 32).float() - upright).abs().mean() < 6
    assert (load_tensor(VARIANTS["sideways_no_exif"](photo), 32).float() - upright).abs().mean() > 40


def test_each_set_changes_the_photo_as_named() -> None:
    photo = asymmetric_photo()
    assert VARIANTS["original"](photo) == photo
    assert Image.open(io.BytesIO(VARIANTS["half_size"](photo))).size == (40, 30)
    assert Image.open(io.BytesIO(VARIANTS["double_size"](photo))).size == (160, 120)
    assert Image.open(io.BytesIO(VARIANTS["grayscale"](photo))).mode == "L"
    assert len(VARIANTS["jpeg_quality_30"](photo)) < len(photo)


def test_robustness_report_for_every_set(synthetic_tree: Path, tmp_path: Path, mlflow_store: str) -> None:
    manifest = prepared(synthetic_tree, tmp_path / "prepared")
    params = write_params(tmp_path / "params.yaml", TINY_PARAMS, synthetic_tree)
    save_tiny_release(tmp_path / "model")
    out = tmp_path / "robustness.json"
    args = ["--manifest", str(manifest), "--model", str(tmp_path / "model"), "--params", str(params)]
    assert robustness_main([*args, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["sets"]) == set(VARIANTS)
    for figures in report["sets"].values():
        assert figures["n"] == 6 and 0 <= figures["accuracy"] <= 1 and 0 <= figures["errors"] <= 6


def test_robustness_without_a_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert robustness_main(["--model", str(tmp_path / "none"), "--out", str(tmp_path / "r.json")]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_contact_sheet_shows_the_errors(tmp_path: Path) -> None:
    photos = []
    for i in range(11):
        p = tmp_path / "Cat" / f"{i}.jpg"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(asymmetric_photo())
        photos.append((p, "cat", 0.6 + i * 0.03))
    sheet = misclassified_png(photos, tmp_path / "reports" / "misclassified.png", "Misclassified", limit=10)
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.width > 800 and im.height > 300  # two rows of eight
    assert [p.name for p in sheet.parent.iterdir()] == ["misclassified.png"]  # no temp file left
