"""`make data` (Download Data): make sure the photo folder, params ``data.source``
(``data/raw``), holds photos, downloading them when it holds none.

Order: ``PETS_DIR=/folder`` (photos kept elsewhere: ``data/raw`` becomes a link to that folder,
so DVC and every stage read them through it) → photos already in ``data/raw`` → the Kaggle CLI
when ``KAGGLE_USERNAME``/``KAGGLE_KEY`` are set → the public Microsoft archive. With no network
it says so in one line and where to put the photos.
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

MICROSOFT_URL = (
    "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
)


def has_photos(folder: Path) -> bool:
    return folder.is_dir() and any(folder.rglob("*.jpg"))


class SourceError(ValueError):
    """PETS_DIR cannot be used as the photo folder."""


def link_source(dest: Path, photos: Path) -> None:
    """Make ``dest`` a link to ``photos``, replacing an earlier link or an empty folder, never
    photos of the user's own."""
    if not has_photos(photos):
        raise SourceError(f"PETS_DIR={photos} holds no .jpg photos")
    target = photos.resolve()
    if dest.is_symlink():
        if dest.resolve() == target:
            return
    elif dest.is_dir() and any(dest.iterdir()):
        raise SourceError(f"{dest} already holds files of its own: move them away, or unset PETS_DIR to use them")
    elif dest.is_dir():
        dest.rmdir()
    elif dest.exists():
        raise SourceError(f"{dest} is a file, not a folder of photos")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = dest.with_name(f".{dest.name}.link")
    staged.unlink(missing_ok=True)
    staged.symlink_to(target, target_is_directory=True)
    os.replace(staged, dest)  # one step: the folder is never missing in between


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
    ap.add_argument("--dest", type=Path, help="the photo folder (default: params data.source)")
    ap.add_argument("--url", default=MICROSOFT_URL)
    args = ap.parse_args(argv)
    elsewhere = os.environ.get("PETS_DIR")
    try:
        dest = args.dest or Path(load_params(args.params).data.source)
        if elsewhere:
            link_source(dest, Path(elsewhere))
            print(f"photos from PETS_DIR: {dest} -> {Path(elsewhere).resolve()}")
            return 0
    except (ConfigError, SourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if has_photos(dest):
        print(f"photos present in {dest}; nothing to download")
        return 0
    try:
        if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY") and shutil.which("kaggle"):
            download_kaggle(dest)
        else:
            download_archive(args.url, dest)
    except (requests.RequestException, subprocess.CalledProcessError, zipfile.BadZipFile, OSError) as exc:
        print(
            f"error: could not download the photos ({type(exc).__name__}); no network? "
            f"Put them in {dest}/cats and {dest}/dogs, or set PETS_DIR to a folder that holds them.",
            file=sys.stderr,
        )
        return 3
    print(f"photos downloaded to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
