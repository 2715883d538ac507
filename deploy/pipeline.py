"""`make pipeline`: the main job's stages, run here in the Jenkinsfile's order.

The stage list below is the one source: the Jenkinsfile is tested against it (same names,
same order, same make target per stage). Each stage is one `make` target, so Jenkins and a
laptop do the same work. The environment carries the build parameters:

    SKIP_TRAINING=1   ship the current champion instead of training (Train exports it)
    DEPLOY=0          stop after Push: no Deploy, no Smoke Tests
    IMAGE_TAG=...     tag override for the image (default: the git sha)
    DEPLOY_TARGET=    kind | local | auto (default: kind where Docker and Kind work, else local)

Prints each stage's wall time and a summary: model version, test accuracy, gate result,
image and where the service runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"


@dataclass(frozen=True)
class Stage:
    name: str
    target: str
    when: str | None = None  # a build parameter that must be true for the stage to run


STAGES: tuple[Stage, ...] = (
    Stage("Checkout", "checkout"),
    Stage("Setup Python", "setup"),
    Stage("Lint", "lint"),
    Stage("Unit Tests", "test-unit"),
    Stage("Download Data", "data"),
    Stage("Train", "train"),
    Stage("Validate", "validate"),
    Stage("Docker Build", "image"),
    Stage("Push", "push"),
    Stage("Deploy", "deploy", when="DEPLOY"),
    Stage("Smoke Tests", "smoke", when="DEPLOY"),
)


def flag(name: str, default: bool = True) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SystemExit(f"{name}={raw!r}: use 1/0 or true/false")


def read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def summary(results: list[tuple[Stage, str, float]]) -> str:
    lines = ["", "stage                 result     time"]
    for stage, result, seconds in results:
        lines.append(f"  {stage.name:<20}{result:<9}{seconds:7.1f} s")
    total = sum(seconds for _, _, seconds in results)
    lines.append(f"  {'total':<29}{total:7.1f} s")
    card = read_json(ROOT / "models" / "model.json")
    metrics = card.get("test_metrics")
    accuracy = metrics.get("accuracy") if isinstance(metrics, dict) else None
    gate = read_json(BUILD / "gate.json")
    image = read_json(BUILD / "image.json")
    deploy = read_json(BUILD / "deploy.json")
    lines += [
        "",
        f"model      {card.get('version', '?')}  test accuracy {accuracy if accuracy is not None else '?'}",
        f"gate       {gate.get('verdict', 'not run')}  {gate.get('message', '')}".rstrip(),
        f"image      {image.get('image', 'not built')}  ({image.get('target', '-')})",
        f"service    {deploy.get('url', 'not deployed')}  ({deploy.get('target', '-')})",
    ]
    return "\n".join(lines)


def run(stages: tuple[Stage, ...] = STAGES, make: str = "make") -> int:
    BUILD.mkdir(exist_ok=True)
    results: list[tuple[Stage, str, float]] = []
    for number, stage in enumerate(stages, 1):
        header = f"[{number}/{len(stages)}] {stage.name}: make {stage.target}"
        if stage.when and not flag(stage.when):
            print(f"\n==> {header} — skipped ({stage.when}=0)", flush=True)
            results.append((stage, "skipped", 0.0))
            continue
        print(f"\n==> {header}", flush=True)
        start = time.monotonic()
        code = subprocess.call([make, "--no-print-directory", stage.target], cwd=ROOT)
        seconds = time.monotonic() - start
        results.append((stage, "ok" if code == 0 else "FAILED", seconds))
        if code != 0:
            print(summary(results))
            print(f"\npipeline FAILED at stage {stage.name} (make {stage.target} exited {code})", file=sys.stderr)
            return code
    print(summary(results))
    print("\npipeline passed")
    return 0


if __name__ == "__main__":
    sys.exit(run())
