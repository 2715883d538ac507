"""The README is a front door that tells the truth: its map names every top-level entry of the
repository and nothing that is not there, its links resolve, and its headline figures are the
model card's."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess

from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()
# Dotfiles that configure a tool in place; a map of the repository need not list them.
UNLISTED = {".gitignore", ".dockerignore", ".dvcignore", "README.md", "dvc.lock"}


def mapped_paths() -> list[str]:
    section = README[README.index("## The repository") :]
    section = section[: section.index("\n## ", 1)]
    return [m.rstrip("/") for m in re.findall(r"^\| `([^`]+)` \|", section, re.MULTILINE)]


def test_the_map_names_every_top_level_entry_and_nothing_else() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    top = {line.split("/")[0] for line in tracked.splitlines()} - UNLISTED
    mapped = mapped_paths()
    assert len(mapped) == len(set(mapped))
    unmapped = {entry for entry in top if not any(fnmatch.fnmatch(entry, pattern) for pattern in mapped)}
    assert not unmapped, f"top-level entries the README's map does not name: {sorted(unmapped)}"
    stale = [pattern for pattern in mapped if not list(ROOT.glob(pattern))]
    assert not stale, f"the README's map names what is not there: {stale}"


def test_the_readme_stays_a_front_door_and_its_links_resolve() -> None:
    assert len(README.splitlines()) <= 200
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link
    for doc in (ROOT / "docs").glob("*.md"):
        for link in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / link).exists(), f"{doc.name}: {link}"


def test_the_headline_figures_are_the_model_cards() -> None:
    card = json.loads((ROOT / "models" / "model.json").read_text())
    metrics = card["test_metrics"]
    matrix = metrics["confusion_matrix"]
    errors = metrics["n"] - sum(matrix[i][i] for i in range(len(matrix)))
    assert f"`{card['version']}`" in README
    assert f"**{metrics['accuracy'] * 100:.3f}%** ({errors} errors in {metrics['n']:,} photos)" in README
    assert f"| ROC AUC | {metrics['roc_auc']:.4f} |" in README
    assert f"| calibration error (ECE) | {metrics['ece'] * 100:.2f}% |" in README
    training = card["training"]
    assert f"{training['seconds']:.0f} s on {training['threads']} CPU threads, {training['photos']:,} photos" in README
