"""Finding labelled photos, checking each one, removing duplicates, and splitting.

Labels come from the path, so every common layout of this data set reads the same way:
``PetImages/{Cat,Dog}``, ``{cats,dogs}``, ``train/{cats,dogs}`` (the nearest folder named
cat(s) or dog(s) wins) and Kaggle's flat ``cat.123.jpg`` / ``dog.45.jpg``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ml.config import SplitParams
from ml.images import ImageError, open_rgb
from ml.models import CLASSES

_FOLDER_LABEL = {"cat": "cat", "cats": "cat", "dog": "dog", "dogs": "dog"}
_FLAT_NAME = re.compile(r"^(cat|dog)[._-]", re.IGNORECASE)
MANIFEST_FIELDS = ("path", "sha256", "label", "split")
SPLITS = ("train", "val", "test")
# Where `make data` (the DVC prepare stage) writes the manifest every later step reads.
MANIFEST = Path("data/prepared/manifest.csv")


class DataError(ValueError):
    """The source folder cannot give a usable data set."""


@dataclass(frozen=True)
class Photo:
    path: str  # relative to the source root, POSIX separators
    label: str
    sha256: str
    width: int
    height: int
    mode: str
    format: str


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str
    detail: str


@dataclass(frozen=True)
class ManifestRow:
    path: str
    sha256: str
    label: str
    split: str


def label_for(relpath: str) -> str | None:
    """The class a path names, or None when it names none."""
    parts = relpath.split("/")
    for folder in reversed(parts[:-1]):
        if folder.lower() in _FOLDER_LABEL:
            return _FOLDER_LABEL[folder.lower()]
    m = _FLAT_NAME.match(parts[-1])
    return m.group(1).lower() if m else None


def find_files(root: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(relative path, label) for every labelled file, and the unlabelled paths."""
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    labelled, unlabelled = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            rel = Path(dirpath, name).relative_to(root).as_posix()
            label = label_for(rel)
            (labelled.append((rel, label)) if label else unlabelled.append(rel))
    return labelled, unlabelled


def check_file(root: Path, rel: str, label: str) -> Photo | Skipped:
    """Read and fully decode one file: a Photo when usable, else why not."""
    try:
        data = (root / rel).read_bytes()
    except OSError as exc:
        return Skipped(rel, "unreadable", str(exc))
    try:
        open_rgb(data)  # a full decode: truncated and corrupt files fail here, not in training
        fmt, mode, size = _probe(data)
    except ImageError as exc:
        return Skipped(rel, exc.reason, exc.detail)
    return Photo(rel, label, hashlib.sha256(data).hexdigest(), size[0], size[1], mode, fmt)


def _probe(data: bytes) -> tuple[str, str, tuple[int, int]]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return str(im.format), im.mode, im.size


def _check_star(args: tuple[Path, str, str]) -> Photo | Skipped:
    return check_file(*args)


def scan(root: Path, workers: int = 2) -> tuple[list[Photo], list[Skipped]]:
    """Check every labelled file under ``root`` (in parallel, with a progress bar)."""
    labelled, unlabelled = find_files(root)
    if not labelled:
        raise DataError(
            f"no labelled photos under {root}: expected Cat/Dog or cats/dogs folders, "
            "or files named cat.N.jpg / dog.N.jpg"
        )
    jobs = [(root, rel, label) for rel, label in labelled]
    bar = tqdm(total=len(jobs), desc="checking photos", unit="img", dynamic_ncols=True)
    results: list[Photo | Skipped] = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(_check_star, jobs, chunksize=64):
                results.append(result)
                bar.update()
    else:
        for job in jobs:
            results.append(_check_star(job))
            bar.update()
    bar.close()
    photos = [r for r in results if isinstance(r, Photo)]
    skipped = [r for r in results if isinstance(r, Skipped)]
    skipped += [Skipped(rel, "unlabelled", "path names neither cat nor dog") for rel in unlabelled]
    return photos, skipped


def deduplicate(photos: Iterable[Photo]) -> tuple[list[Photo], list[dict[str, Any]]]:
    """Keep one copy of each distinct file (by sha256); drop photos filed under both labels."""
    groups: dict[str, list[Photo]] = defaultdict(list)
    for p in photos:
        groups[p.sha256].append(p)
    kept: list[Photo] = []
    duplicates: list[dict[str, Any]] = []
    for sha, copies in sorted(groups.items()):
        copies.sort(key=lambda p: p.path)
        labels = sorted({p.label for p in copies})
        if len(labels) == 1:
            kept.append(copies[0])
        if len(copies) > 1:
            duplicates.append(
                {
                    "sha256": sha,
                    "paths": [p.path for p in copies],
                    "kept": copies[0].path if len(labels) == 1 else None,
                    "conflicting_labels": len(labels) > 1,
                }
            )
    kept.sort(key=lambda p: p.path)
    return kept, duplicates


def split(photos: Iterable[Photo], fractions: SplitParams, seed: int) -> list[ManifestRow]:
    """Stratified split that depends only on file contents and seed, never on file order."""
    by_label: dict[str, list[Photo]] = defaultdict(list)
    for p in photos:
        by_label[p.label].append(p)
    rows = []
    for label in sorted(by_label):
        ranked = sorted(by_label[label], key=lambda p: hashlib.sha256(f"{seed}:{p.sha256}".encode()).hexdigest())
        n = len(ranked)
        n_train, n_val = round(n * fractions.train), round(n * fractions.val)
        for i, p in enumerate(ranked):
            name = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            rows.append(ManifestRow(p.path, p.sha256, p.label, name))
    rows.sort(key=lambda r: r.path)
    return rows


def write_manifest(rows: list[ManifestRow], path: Path) -> None:
    from ml.fileio import atomic_writer

    with atomic_writer(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def read_manifest(path: Path) -> list[ManifestRow]:
    if not path.is_file():
        raise DataError(f"manifest not found: {path} (run `make data` or `dvc repro prepare`)")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != MANIFEST_FIELDS:
            raise DataError(f"{path} is not a manifest: columns {reader.fieldnames}, expected {MANIFEST_FIELDS}")
        rows = [ManifestRow(**r) for r in reader]
    bad = [r for r in rows if r.label not in CLASSES or r.split not in SPLITS]
    if bad:
        raise DataError(f"{path}: bad label or split in row {bad[0]}")
    return rows


def select(rows: Iterable[ManifestRow], split_name: str) -> list[ManifestRow]:
    return [r for r in rows if r.split == split_name]


def report(
    root: Path,
    photos: list[Photo],
    skipped: list[Skipped],
    duplicates: list[dict[str, Any]],
    rows: list[ManifestRow],
) -> dict[str, Any]:
    """What a person wants to know about the data before trusting a model trained on it."""
    widths, heights = [p.width for p in photos], [p.height for p in photos]

    def spread(values: list[int]) -> dict[str, float]:
        return {"min": min(values), "median": statistics.median(values), "max": max(values)} if values else {}

    split_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        split_counts[r.split][r.label] += 1
    return {
        "source": str(root),
        "files_checked": len(photos) + len([s for s in skipped if s.reason != "unlabelled"]),
        "readable_per_class": dict(sorted(Counter(p.label for p in photos).items())),
        "kept_per_class": dict(sorted(Counter(r.label for r in rows).items())),
        "splits": {s: dict(sorted(split_counts[s].items())) for s in SPLITS},
        "skipped_by_reason": dict(sorted(Counter(s.reason for s in skipped).items())),
        "skipped": [asdict(s) for s in sorted(skipped, key=lambda s: s.path)],
        "duplicate_groups": len(duplicates),
        "duplicates_removed": sum(len(d["paths"]) - (1 if d["kept"] else 0) for d in duplicates),
        "duplicates": duplicates,
        "modes": dict(sorted(Counter(p.mode for p in photos).items())),
        "formats": dict(sorted(Counter(p.format for p in photos).items())),
        "width": spread(widths),
        "height": spread(heights),
    }
