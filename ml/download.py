"""`make data`: make sure there are photos to prepare, downloading them when there are none.

Order: the configured folder (``../shared/pets/PetImages`` here) → ``data/raw`` → the Kaggle
CLI when ``KAGGLE_USERNAME``/``KAGGLE_KEY`` are set → the public Microsoft archive. With no
network it says so in one line and where to put the photos.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import requests
from tqdm import tqdm

from ml.config import ConfigError, load_params
from ml.prepare import FALLBACK_SOURCE

MICROSOFT_URL = (
    "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
)


def has_photos(folder: Path) -> bool:
    return folder.is_dir() and any(folder.rglob("*.jpg"))


def download_archive(url: str, dest: Path, timeout: float = 20.0) -> None:
    """Stream the archive to a temp file (with a progress bar), then unpack it into ``dest``."""
    with requests.get(url, stream=True, timeout=timeout) as resp:
        resp.raise_for_status()
        total = int(resp.headers.get("content-length", 0)) or None
        with (
            tempfile.NamedTemporaryFile(suffix=".zip", delete=False) as tmp,
            tqdm(total=total, unit="B", unit_scale=True, desc="downloading") as bar,
        ):
            for chunk in resp.iter_content(1 << 20):
                tmp.write(chunk)
                bar.update(len(chunk))
    staging = Path(tempfile.mkdtemp(dir=dest.parent if dest.parent.exists() else None))
    try:
        with zipfile.ZipFile(tmp.name) as archive:
            archive.extractall(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, dest)  # whole folder at once: never a half-unpacked data set
    finally:
        Path(tmp.name).unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)


def download_kaggle(dest: Path) -> None:
    staging = Path(tempfile.mkdtemp())
    subprocess.run(["kaggle", "competitions", "download", "-c", "dogs-vs-cats", "-p", str(staging)], check=True)
    for archive in staging.glob("*.zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(staging / "unpacked")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging / "unpacked", dest)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--dest", type=Path, default=FALLBACK_SOURCE)
    ap.add_argument("--url", default=MICROSOFT_URL)
    args = ap.parse_args(argv)
    try:
        configured = Path(load_params(args.params).data.source)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for folder in (configured, args.dest):
        if has_photos(folder):
            print(f"photos present in {folder}; nothing to download")
            return 0
    try:
        if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY") and shutil.which("kaggle"):
            download_kaggle(args.dest)
        else:
            download_archive(args.url, args.dest)
    except (requests.RequestException, subprocess.CalledProcessError, zipfile.BadZipFile, OSError) as exc:
        print(
            f"error: could not download the photos ({type(exc).__name__}); no network? "
            f"Put them in {args.dest}/cats and {args.dest}/dogs (or set data.source in params.yaml).",
            file=sys.stderr,
        )
        return 3
    print(f"photos downloaded to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
