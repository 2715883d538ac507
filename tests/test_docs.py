"""The documentation tells the truth: the README's map names every top-level entry of the
repository and nothing that is not there, its links resolve, its headline figures are the model
card's; the stage table in docs/operations.md is deploy/pipeline.py's list, and the endpoint
table in docs/api.md names every path of the OpenAPI document."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys

import yaml

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
    flagged = round(card["not_a_pet"]["test_flagged"] * metrics["n"])
    assert f"| pets flagged as not a pet | {flagged} of {metrics['n']:,} test photos |" in README


def test_the_stage_table_is_the_stage_list() -> None:
    sys.path.insert(0, str(ROOT / "deploy"))
    import pipeline  # deploy/pipeline.py: a script folder, not a package

    table = (ROOT / "docs" / "operations.md").read_text()
    rows = re.findall(r"^\| (\d+) \| ([^|]+?) \| `([\w-]+)` \|", table, re.MULTILINE)
    assert [(int(n), name, target) for n, name, target in rows] == [
        (i, stage.name, stage.target) for i, stage in enumerate(pipeline.STAGES, start=1)
    ]


def test_the_endpoint_table_names_every_path_of_the_openapi_document() -> None:
    spec = yaml.safe_load((ROOT / "app" / "openapi.yaml").read_text())
    documented = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if method != "parameters"
    }
    table = (ROOT / "docs" / "api.md").read_text()
    listed = set(re.findall(r"`(GET|POST|PUT|DELETE) (/[\w./]*)`", table))
    assert listed == documented
