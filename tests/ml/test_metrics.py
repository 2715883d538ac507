from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.metrics import classification_metrics, confusion_png, curves_png, expected_calibration_error


def test_figures_from_a_known_confusion() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.7, 0.6, 0.4])
    m = classification_metrics(y, p)
    assert m["n"] == 8
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["confusion_matrix"] == [[3, 1], [1, 3]]
    assert m["per_class"]["dog"]["precision"] == pytest.approx(0.75)  # type: ignore[index]
    assert m["roc_auc"] == pytest.approx(0.75)  # 12 of 16 dog-cat pairs ranked right


def test_calibration_error() -> None:
    y = np.array([1] * 10)
    assert expected_calibration_error(y, np.full(10, 1.0)) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(10, 0.6)) == pytest.approx(0.4)


def test_one_class_has_no_auc() -> None:
    assert classification_metrics(np.array([1, 1]), np.array([0.9, 0.2]))["roc_auc"] is None


def test_pictures_are_png(tmp_path: Path) -> None:
    a = confusion_png([[5, 1], [2, 7]], tmp_path / "cm.png")
    b = curves_png(
        [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "train_accuracy": 0.5, "val_accuracy": 0.4}],
        tmp_path / "c.png",
    )
    for path in (a, b):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
