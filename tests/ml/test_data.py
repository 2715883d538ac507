from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from ml.config import SplitParams
from ml.data import DataError, deduplicate, find_files, label_for, read_manifest, scan, split, write_manifest
from ml.prepare import prepare
from tests.conftest import jpeg_bytes, write_tree


@pytest.mark.parametrize("layout", ["petimages", "plural", "train_plural", "flat"])
def test_every_layout_reads_both_classes(tmp_path: Path, layout: str) -> None:
    root = write_tree(tmp_path, layout, n_per_class=5)
    photos, skipped = scan(root, workers=1)
    assert Counter(p.label for p in photos) == {"cat": 5, "dog": 5}
    assert skipped == []


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("Cat/1.jpg", "cat"),
        ("dogs/x.png", "dog"),
        ("train/cats/a.jpg", "cat"),
        ("cat.12.jpg", "cat"),
        ("Dog.3.JPG", "dog"),
        ("cats/dogs/1.jpg", "dog"),  # the nearest folder wins
        ("test1/12.jpg", None),
        ("catalogue/1.jpg", None),
    ],
)
def test_label_for(path: str, label: str | None) -> None:
    assert label_for(path) == label


def test_bad_files_are_skipped_with_their_reason(tmp_path: Path) -> None:
    root = write_tree(tmp_path, "plural", n_per_class=3)
    (root / "cats" / "empty.jpg").write_bytes(b"")
    (root / "cats" / "Thumbs.db").write_bytes(b"\x00\x01 not an image")
    (root / "dogs" / "cut.jpg").write_bytes(jpeg_bytes((9, 9, 9), size=(80, 80))[:400])
    (root / "notes.txt").write_text("unlabelled")
    Image.new("CMYK", (20, 20), (0, 50, 100, 0)).save(root / "dogs" / "cmyk.jpg")
    Image.new("L", (20, 20), 90).save(root / "cats" / "grey.png")
    photos, skipped = scan(root, workers=1)
    reasons = {s.path: s.reason for s in skipped}
    assert reasons == {
        "cats/empty.jpg": "empty",
        "cats/Thumbs.db": "not_an_image",
        "dogs/cut.jpg": "truncated",
        "notes.txt": "unlabelled",
    }
    modes = {p.path: p.mode for p in photos}
    assert modes["dogs/cmyk.jpg"] == "CMYK" and modes["cats/grey.png"] == "L"


def test_duplicates_are_removed_and_conflicts_dropped(tmp_path: Path) -> None:
    root = write_tree(tmp_path, "plural", n_per_class=4)
    shutil.copy(root / "cats" / "0.jpg", root / "cats" / "copy.jpg")
    shutil.copy(root / "cats" / "1.jpg", root / "dogs" / "mislabelled.jpg")
    photos, _ = scan(root, workers=1)
    kept, dups = deduplicate(photos)
    paths = {p.path for p in kept}
    assert "cats/0.jpg" in paths and "cats/copy.jpg" not in paths
    assert "cats/1.jpg" not in paths and "dogs/mislabelled.jpg" not in paths
    assert len({p.sha256 for p in kept}) == len(kept)
    assert sorted(d["conflicting_labels"] for d in dups) == [False, True]


def test_split_is_stratified_and_has_no_leak(tmp_path: Path) -> None:
    root = write_tree(tmp_path, "plural", n_per_class=50)
    kept, _ = deduplicate(scan(root, workers=1)[0])
    rows = split(kept, SplitParams(), seed=7)
    counts = Counter((r.split, r.label) for r in rows)
    assert counts[("train", "cat")] == 40 and counts[("val", "cat")] == 5 and counts[("test", "cat")] == 5
    by_split: dict[str, set[str]] = {}
    for r in rows:
        by_split.setdefault(r.split, set()).add(r.sha256)
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert not (by_split["val"] & by_split["test"])


def test_split_depends_on_seed(tmp_path: Path) -> None:
    kept, _ = deduplicate(scan(write_tree(tmp_path, "plural", n_per_class=30), workers=1)[0])
    assert split(kept, SplitParams(), 1) != split(kept, SplitParams(), 2)


def test_same_files_give_the_same_manifest_in_any_order_and_place(tmp_path: Path) -> None:
    a = write_tree(tmp_path / "a", "plural", n_per_class=25)
    b = tmp_path / "elsewhere" / "b"
    # Copy in reverse order so directory order differs; parallel scan in one, serial in the other.
    for src in sorted(a.rglob("*.jpg"), reverse=True):
        dst = b / src.relative_to(a)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    prepare(a, tmp_path / "out_a", 42, SplitParams(), workers=2)
    prepare(b, tmp_path / "out_b", 42, SplitParams(), workers=1)
    assert (tmp_path / "out_a" / "manifest.csv").read_bytes() == (tmp_path / "out_b" / "manifest.csv").read_bytes()


def test_manifest_round_trip_and_report(tmp_path: Path) -> None:
    root = write_tree(tmp_path, "flat", n_per_class=10)
    summary = prepare(root, tmp_path / "out", 42, SplitParams(), workers=1)
    rows = read_manifest(tmp_path / "out" / "manifest.csv")
    assert len(rows) == 20
    assert summary["kept_per_class"] == {"cat": 10, "dog": 10}
    assert summary["width"] == {"min": 48, "median": 48, "max": 48}
    assert (tmp_path / "out" / "data_report.json").is_file()
    write_manifest(rows, tmp_path / "copy.csv")
    assert read_manifest(tmp_path / "copy.csv") == rows


def test_missing_or_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        find_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no labelled photos"):
        scan(tmp_path / "empty")


def test_not_a_manifest(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a manifest"):
        read_manifest(tmp_path / "m.csv")
