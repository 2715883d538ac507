"""`make data` (ml/download.py): the configured folder, PETS_DIR's link, or a download."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.download import main as download_main
from tests.conftest import write_tree

NO_NETWORK = "http://127.0.0.1:9/x.zip"  # port 9 on loopback refuses at once, as no network does


def run(dest: Path, monkeypatch: pytest.MonkeyPatch, pets_dir: Path | None = None) -> int:
    if pets_dir is None:
        monkeypatch.delenv("PETS_DIR", raising=False)
    else:
        monkeypatch.setenv("PETS_DIR", str(pets_dir))
    return download_main(["--dest", str(dest), "--url", NO_NETWORK])


def test_no_network_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path / "raw", monkeypatch) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no network" in err[0] and "raw/cats" in err[0] and "PETS_DIR" in err[0]
    assert not (tmp_path / "raw").exists()


def test_present_photos_are_not_downloaded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tree(tmp_path / "raw", "plural", n_per_class=1)
    assert run(tmp_path / "raw", monkeypatch) == 0
    assert "nothing to download" in capsys.readouterr().out


def test_the_configured_folder_is_used_even_where_a_sibling_shared_folder_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The build machine's ../shared/pets is no default: with params naming data/raw, an empty
    # data/raw is downloaded into, whatever lies beside the clone.
    clone = tmp_path / "clone"
    write_tree(tmp_path / "shared" / "pets", "petimages", n_per_class=1)
    (clone / "params.yaml").parent.mkdir()
    (clone / "params.yaml").write_text("data: {source: data/raw}\n")
    monkeypatch.chdir(clone)
    monkeypatch.delenv("PETS_DIR", raising=False)
    assert download_main(["--url", NO_NETWORK]) == 3


def test_pets_dir_makes_the_folder_a_link_and_points_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_tree(tmp_path / "first", "petimages", n_per_class=2)
    second = write_tree(tmp_path / "second", "plural", n_per_class=2)
    dest = tmp_path / "data" / "raw"
    assert run(dest, monkeypatch, first) == 0
    assert dest.is_symlink() and dest.resolve() == first.resolve()
    assert sorted(p.name for p in dest.iterdir()) == ["Cat", "Dog"]
    assert run(dest, monkeypatch, first) == 0  # idempotent
    assert run(dest, monkeypatch, second) == 0
    assert dest.resolve() == second.resolve()
    assert f"{dest} -> {second.resolve()}" in capsys.readouterr().out
    assert [p.name for p in dest.parent.iterdir()] == ["raw"]  # no staging link left behind


def test_pets_dir_replaces_an_empty_folder_but_never_photos_of_the_users_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = write_tree(tmp_path / "elsewhere", "plural", n_per_class=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(empty, monkeypatch, elsewhere) == 0 and empty.is_symlink()
    own = write_tree(tmp_path / "own", "plural", n_per_class=1)
    assert run(own, monkeypatch, elsewhere) == 2
    assert "already holds files of its own" in capsys.readouterr().err
    assert not own.is_symlink() and len(list(own.rglob("*.jpg"))) == 2


@pytest.mark.parametrize("kind", ["missing", "no photos"])
def test_a_pets_dir_without_photos_is_one_clear_error(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pets = tmp_path / "pets"
    if kind == "no photos":
        (pets / "cats").mkdir(parents=True)
        (pets / "cats" / "readme.txt").write_text("not a photo")
    assert run(tmp_path / "raw", monkeypatch, pets) == 2
    assert capsys.readouterr().err.strip() == f"error: PETS_DIR={pets} holds no .jpg photos"
    assert not (tmp_path / "raw").exists()
