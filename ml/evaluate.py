"""Evaluate a release model on labelled photos.

Either any labelled folder in a supported layout::

    python -m ml.evaluate --data DIR --model models

or a split of the manifest (the DVC ``evaluate`` stage, which also writes metrics.json and
the plot data)::

    python -m ml.evaluate --manifest data/prepared/manifest.csv --split test --model models \
        --metrics metrics.json --reports reports

The last line of stdout is always one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_curve
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ml import tracking
from ml.artifact import ModelLoadError, ReleaseModel, load_release, predict_proba
from ml.config import ConfigError, load_params
from ml.data import SPLITS, DataError, find_files, read_manifest, select
from ml.fileio import atomic_writer, write_json
from ml.images import ImageError, load_tensor
from ml.metrics import classification_metrics, misclassified_png
from ml.models import CLASSES


class _Photos(Dataset[tuple[int, torch.Tensor, str]]):
    """Yields (index, tensor, error); a photo that cannot be decoded has an error, not a crash.
    ``change`` rewrites each file's bytes first (the robustness sets)."""

    def __init__(self, paths: list[Path], image_size: int, change: Callable[[bytes], bytes] | None = None) -> None:
        self.paths, self.size, self.change = paths, image_size, change

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        try:
            source = self.change(self.paths[i].read_bytes()) if self.change else self.paths[i]
            return i, load_tensor(source, self.size), ""
        except (ImageError, OSError) as exc:
            return i, torch.zeros(3, self.size, self.size, dtype=torch.uint8), str(exc)


def predict_paths(
    release: ReleaseModel,
    paths: list[Path],
    batch_size: int = 64,
    workers: int = 1,
    change: Callable[[bytes], bytes] | None = None,
    desc: str = "evaluating",
) -> tuple[np.ndarray, dict[int, str]]:
    """P(dog) for each path (NaN where unreadable) and the errors by index."""
    prob_dog = np.full(len(paths), np.nan)
    errors: dict[int, str] = {}
    loader = DataLoader(_Photos(paths, release.image_size, change), batch_size=batch_size, num_workers=workers)
    with tqdm(total=len(paths), desc=desc, unit="img", dynamic_ncols=True) as bar:
        for idx, batch, errs in loader:
            probs = predict_proba(release, batch)[:, CLASSES.index("dog")].numpy()
            for j, (i, err) in enumerate(zip(idx.tolist(), errs, strict=True)):
                if err:
                    errors[i] = err
                else:
                    prob_dog[i] = probs[j]
            bar.update(len(idx))
    return prob_dog, errors


def evaluate(
    release: ReleaseModel, items: list[tuple[Path, int]], workers: int = 1
) -> tuple[dict[str, Any], np.ndarray]:
    if not items:
        raise DataError("no labelled photos to evaluate")
    paths = [p for p, _ in items]
    y = np.array([label for _, label in items])
    prob_dog, errors = predict_paths(release, paths, workers=workers)
    ok = ~np.isnan(prob_dog)
    if not ok.any():
        raise DataError(f"none of the {len(items)} photos could be decoded")
    figures = classification_metrics(y[ok], prob_dog[ok])
    figures["skipped"] = {str(paths[i]): e for i, e in sorted(errors.items())}
    figures["model_version"] = release.version
    return figures, prob_dog


def write_reports(items: list[tuple[Path, int]], root: Path, prob_dog: np.ndarray, reports: Path) -> None:
    """Per-photo predictions and the ROC curve, as the CSV files `dvc plots` reads."""
    ok = ~np.isnan(prob_dog)
    with atomic_writer(reports / "test_predictions.csv") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "actual", "predicted", "prob_dog"])
        for (path, label), p in zip(items, prob_dog, strict=True):
            if not np.isnan(p):
                w.writerow([path.relative_to(root).as_posix(), CLASSES[label], CLASSES[int(p >= 0.5)], f"{p:.6f}"])
    y = np.array([label for _, label in items])[ok]
    fpr, tpr, _ = roc_curve(y, prob_dog[ok]) if len(set(y)) == 2 else (np.array([0.0]), np.array([0.0]), None)
    with atomic_writer(reports / "roc.csv") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["fpr", "tpr"])
        w.writerows([f"{a:.6f}", f"{b:.6f}"] for a, b in zip(fpr, tpr, strict=True))


def contact_sheet(items: list[tuple[Path, int]], prob_dog: np.ndarray, reports: Path) -> Path:
    errors = [
        (path, CLASSES[label], float(p))
        for (path, label), p in zip(items, prob_dog, strict=True)
        if not np.isnan(p) and int(p >= 0.5) != label
    ]
    return misclassified_png(errors, reports / "misclassified.png", "Misclassified test photos")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Evaluate a release model on labelled photos.")
    ap.add_argument("--model", type=Path, default=Path("models"), help="release model folder")
    ap.add_argument("--data", type=Path, help="a labelled folder in any supported layout")
    ap.add_argument("--manifest", type=Path, help="a manifest; with --split")
    ap.add_argument("--split", choices=SPLITS, default="test")
    ap.add_argument("--source", type=Path, help="folder the manifest is relative to (default: params data.source)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--metrics", type=Path, help="write the figures here as JSON")
    ap.add_argument("--reports", type=Path, help="write per-photo predictions and ROC points here")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--mlflow", action="store_true", help="also log the figures and reports to the model's run")
    args = ap.parse_args(argv)
    if (args.data is None) == (args.manifest is None):
        ap.error("give exactly one of --data DIR or --manifest FILE")
    params = functools.cache(lambda: load_params(args.params))  # read once, and only if needed
    try:
        experiment = params().mlflow.experiment if args.mlflow else ""  # a bad file fails before the work
        release = load_release(args.model)
        if args.data is not None:
            root = args.data
            labelled, _ = find_files(root)
            items = [(root / rel, CLASSES.index(label)) for rel, label in labelled]
            if not items:
                raise DataError(f"no labelled photos under {root} (expected cat/dog folders or cat.N.jpg names)")
        else:
            root = args.source or Path(params().data.source)
            items = [(root / r.path, CLASSES.index(r.label)) for r in select(read_manifest(args.manifest), args.split)]
        figures, prob_dog = evaluate(release, items, args.workers)
    except (ModelLoadError, DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.metrics:
        write_json(args.metrics, {k: v for k, v in figures.items() if k != "skipped"})
    written: list[Path] = [args.metrics] if args.metrics else []
    if args.reports:
        write_reports(items, root, prob_dog, args.reports)
        written += [args.reports / "test_predictions.csv", contact_sheet(items, prob_dog, args.reports)]
    if args.mlflow:
        keys = ("accuracy", "precision", "recall", "f1", "roc_auc", "ece")
        scores = {f"eval_test_{k}": float(figures[k]) for k in keys if figures.get(k) is not None}
        tracking.log_to_run(release.card.get("mlflow_run_id"), experiment, scores, written, "evaluation")
    for path, err in figures["skipped"].items():
        print(f"skipped {path}: {err}", file=sys.stderr)
    figures["skipped"] = len(figures["skipped"])
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
