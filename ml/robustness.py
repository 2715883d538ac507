"""Does the model hold up on photos that are not like the training folder?

The test split (never used for any choice) is rebuilt as other labelled sets, each photo
changed the way uploads differ in real life, and the release model is evaluated on each:

    python -m ml.robustness --manifest data/prepared/manifest.csv --model models --out reports/robustness.json

Sets: the photos as they are (the reference), re-encoded at JPEG quality 30, rescaled to half
and to double size, stored sideways with an EXIF orientation tag (the service must turn them
upright), converted to grayscale, and turned sideways with no tag at all (a photo the staff
would see lying on its side: the hardest, reported for what it is).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ml import tracking
from ml.artifact import ModelLoadError, ReleaseModel, load_release
from ml.config import ConfigError, load_params
from ml.data import MANIFEST, DataError, read_manifest, select
from ml.evaluate import predict_paths
from ml.fileio import write_json
from ml.metrics import classification_metrics
from ml.models import CLASSES

Variant = Callable[[bytes], bytes]
EXIF_ORIENTATION = 0x0112


def _save(im: Image.Image, quality: int = 90, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, **({"exif": exif.tobytes()} if exif is not None else {}))
    return buf.getvalue()


def _open(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def _scaled(factor: float) -> Variant:
    def change(data: bytes) -> bytes:
        im = _open(data)
        size = (max(1, round(im.width * factor)), max(1, round(im.height * factor)))
        return _save(im.resize(size, Image.Resampling.LANCZOS))

    return change


def _exif_sideways(data: bytes) -> bytes:
    """Pixels stored turned 90° clockwise plus orientation 8, which says 'turn back': upright."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 8
    return _save(_open(data).transpose(Image.Transpose.ROTATE_270), exif=exif)


VARIANTS: dict[str, Variant] = {
    "original": lambda data: data,
    "jpeg_quality_30": lambda data: _save(_open(data), quality=30),
    "half_size": _scaled(0.5),
    "double_size": _scaled(2.0),
    "exif_rotated": _exif_sideways,
    "grayscale": lambda data: _save(_open(data).convert("L")),
    "sideways_no_exif": lambda data: _save(_open(data).transpose(Image.Transpose.ROTATE_270)),
}


def evaluate_variant(release: ReleaseModel, items: list[tuple[Path, int]], name: str, workers: int) -> dict[str, Any]:
    paths, y = [p for p, _ in items], np.array([label for _, label in items])
    prob_dog, errors = predict_paths(release, paths, workers=workers, change=VARIANTS[name], desc=f"{name:<17}")
    if errors:
        raise DataError(f"{len(errors)} test photos could not be read for {name}: re-run prepare")
    figures = classification_metrics(y, prob_dog)
    keep = ("n", "accuracy", "precision", "recall", "f1", "roc_auc", "ece")
    cm = figures["confusion_matrix"]
    return {k: figures[k] for k in keep} | {"errors": figures["n"] - sum(cm[i][i] for i in range(len(cm)))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--model", type=Path, default=Path("models"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--source", type=Path, help="folder the manifest is relative to (default: params data.source)")
    ap.add_argument("--out", type=Path, default=Path("reports/robustness.json"))
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--limit", type=int, help="only the first N test photos (smoke runs)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--mlflow", action="store_true", help="also log the figures to the model's training run")
    args = ap.parse_args(argv)
    try:
        release = load_release(args.model)
        root = args.source or Path(load_params(args.params).data.source)
        rows = select(read_manifest(args.manifest), "test")[: args.limit]
        if not rows:
            raise DataError(f"{args.manifest} has no test photos")
        items = [(root / r.path, CLASSES.index(r.label)) for r in rows]
        results = {name: evaluate_variant(release, items, name, args.workers) for name in args.variants}
    except (ModelLoadError, DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_json(args.out, {"model_version": release.version, "sets": results})
    if args.mlflow:
        scores = {f"robust_{name}_accuracy": float(r["accuracy"]) for name, r in results.items()}
        experiment = load_params(args.params).mlflow.experiment
        tracking.log_to_run(release.card.get("mlflow_run_id"), experiment, scores, [args.out], "evaluation")
    for name, r in results.items():
        print(f"{name:<18} accuracy {r['accuracy']:.4f}  errors {r['errors']:>3}/{r['n']}  ECE {r['ece']:.4f}")
    print(json.dumps({"model_version": release.version, "sets": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
