"""The DVC ``prepare`` stage: check every photo, drop duplicates, split, write the manifest.

Writes ``manifest.csv`` (path, sha256, label, split; paths relative to the source folder)
and ``data_report.json`` (counts, skipped files and why, duplicates, sizes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ml.config import ConfigError, SplitParams, load_params
from ml.data import DataError, deduplicate, report, scan, split, write_manifest
from ml.fileio import write_json


def resolve_source(configured: str) -> Path:
    """The configured folder (params data.source, ``data/raw`` unless changed): the one DVC tracks."""
    if Path(configured).is_dir():
        return Path(configured)
    raise DataError(
        f"no photos: {configured} does not exist. Run `make data` to download them (or PETS_DIR=/folder make data "
        f"to use photos kept elsewhere), or put them in {configured}/cats and {configured}/dogs"
    )


def prepare(source: Path, out_dir: Path, seed: int, fractions: SplitParams, workers: int) -> dict[str, Any]:
    photos, skipped = scan(source, workers)
    kept, duplicates = deduplicate(photos)
    rows = split(kept, fractions, seed)
    summary = report(source, photos, skipped, duplicates, rows)
    write_manifest(rows, out_dir / "manifest.csv")
    write_json(out_dir / "data_report.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--source", help="photo folder (default: params data.source)")
    ap.add_argument("--out", type=Path, default=Path("data/prepared"))
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
        source = resolve_source(args.source or params.data.source)
        summary = prepare(source, args.out, params.data.seed, params.data.split, params.train.threads)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"prepared {sum(summary['kept_per_class'].values())} photos {summary['kept_per_class']} from {source}; "
        f"skipped {summary['skipped_by_reason']}, removed {summary['duplicates_removed']} duplicates → {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
