"""Classification figures and the pictures people look at instead of reading them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn import metrics as skm

from ml.fileio import atomic_writer
from ml.models import CLASSES


def classification_metrics(y_true: np.ndarray, prob_dog: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, ROC AUC, calibration error and the confusion matrix."""
    y_true = np.asarray(y_true, dtype=int)
    prob_dog = np.asarray(prob_dog, dtype=float)
    y_pred = (prob_dog >= 0.5).astype(int)
    labels = list(range(len(CLASSES)))
    p, r, f, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "n": len(y_true),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "precision": float(np.mean(p)),
        "recall": float(np.mean(r)),
        "f1": float(np.mean(f)),
        "roc_auc": float(skm.roc_auc_score(y_true, prob_dog)) if both_classes else None,
        "ece": expected_calibration_error(y_true, prob_dog),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, c in enumerate(CLASSES)
        },
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "confusion_matrix_labels": list(CLASSES),
    }


def expected_calibration_error(y_true: np.ndarray, prob_dog: np.ndarray, bins: int = 15) -> float:
    """ECE over the confidence of the predicted class, equal-width bins."""
    if len(y_true) == 0:
        return 0.0
    pred = (prob_dog >= 0.5).astype(int)
    conf = np.where(pred == 1, prob_dog, 1 - prob_dog)
    correct = (pred == y_true).astype(float)
    edges = np.linspace(0.5, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def save_png(fig: Any, path: Path) -> Path:
    """Every picture is written beside its target and renamed: never a half-written PNG."""
    with atomic_writer(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    return path


def confusion_png(cm: list[list[int]], path: Path, title: str = "Confusion matrix") -> Path:
    arr = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=120)
    ax.imshow(arr, cmap="Blues")
    ax.set_xticks(range(len(CLASSES)), labels=CLASSES)
    ax.set_yticks(range(len(CLASSES)), labels=CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    for (i, j), v in np.ndenumerate(arr):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > arr.max() / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    return save_png(fig, path)


def curves_png(history: list[dict[str, float]], path: Path) -> Path:
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        left.plot(epochs, [h[key] for h in history], style, label=key)
    for key, style in (("train_accuracy", "-"), ("val_accuracy", "--")):
        right.plot(epochs, [h[key] for h in history], style, label=key)
    left.set_title("loss")
    right.set_title("accuracy")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return save_png(fig, path)


def misclassified_png(errors: list[tuple[Path, str, float]], path: Path, title: str, limit: int = 48) -> Path:
    """A contact sheet of wrong answers, the most confident first: each photo with what it is
    labelled, what the model said and how sure it was, and its file name."""
    from PIL import Image, ImageOps

    shown = sorted(errors, key=lambda e: -abs(e[2] - 0.5))[:limit]
    cols = 8
    rows = max(1, math.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.9, rows * 2.2 + 0.4), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (photo, actual, prob_dog) in zip(axes.flat, shown, strict=False):
        with Image.open(photo) as im:
            thumb = ImageOps.exif_transpose(im).convert("RGB")
            thumb.thumbnail((180, 180))
        said = "dog" if prob_dog >= 0.5 else "cat"
        ax.imshow(np.asarray(thumb))
        sure = max(prob_dog, 1 - prob_dog)
        ax.set_title(f"{actual} → {said} {sure:.2f}\n{photo.parent.name}/{photo.name}", fontsize=7)
    fig.suptitle(
        f"{title}: {len(errors)} errors" + (f", the {limit} most confident shown" if len(errors) > limit else "")
    )
    fig.tight_layout()
    return save_png(fig, path)
