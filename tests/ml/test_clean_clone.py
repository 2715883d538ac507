"""A clean clone anywhere: no sibling ``../shared``, photos in ``data/raw``, `make data` for real."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.helpers import ROOT

PER_CLASS = 20


def make_data(clone: Path) -> subprocess.CompletedProcess[str]:
    # The clone borrows this checkout's .venv; -o keeps make from reinstalling it there.
    env = {k: v for k, v in os.environ.items() if k not in {"PETS_DIR", "MAKEFLAGS", "MAKELEVEL"}}
    return subprocess.run(
        ["make", "-C", str(clone), "-o", ".venv/.installed", "data"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_make_data_in_a_clone_with_no_shared_folder_beside_it(real_photos: Path, tmp_path: Path) -> None:
    clone = tmp_path / "pet-classifier"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    assert not (tmp_path / "shared").exists()
    (clone / ".venv").symlink_to(ROOT / ".venv")
    # A few dozen real photos where the download puts them, in the Microsoft archive's layout.
    for folder in ("Cat", "Dog"):
        dest = clone / "data" / "raw" / "PetImages" / folder
        dest.mkdir(parents=True)
        for photo in sorted((real_photos / folder).glob("*.jpg"))[:PER_CLASS]:
            shutil.copyfile(photo, dest / photo.name)  # a temporary copy, removed with tmp_path

    first = make_data(clone)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "photos present in data/raw; nothing to download" in first.stdout
    assert "Running stage 'prepare'" in first.stdout
    with (clone / "data" / "prepared" / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["label"] for r in rows} == {"cat", "dog"}
    assert PER_CLASS * 2 - 4 <= len(rows) <= PER_CLASS * 2  # a real photo may be a duplicate or unreadable
    assert all((clone / "data" / "raw" / r["path"]).is_file() for r in rows)
    # The stage depends on the folder it read, inside the clone.
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    assert lock["stages"]["prepare"]["deps"][0]["path"] == "data/raw"
    assert lock["stages"]["prepare"]["deps"][0]["nfiles"] == PER_CLASS * 2

    second = make_data(clone)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "Stage 'prepare' didn't change, skipping" in second.stdout
