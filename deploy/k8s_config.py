"""Copy the monitoring configuration the cluster reads into deploy/k8s/monitoring/config/.

    python deploy/k8s_config.py           # make k8s-config: write the copies
    python deploy/k8s_config.py --check   # exit 1 if a copy differs (make test)

prometheus/, alertmanager/ and grafana/ at the repository root are the one source. kustomize
reads files only from inside the folder it renders unless told `LoadRestrictionsNone`, which Argo
CD and Flux refuse, so `kubectl kustomize deploy/k8s` renders these generated copies instead;
the test keeps them equal to their sources.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "k8s" / "monitoring" / "config"
SOURCES = ("prometheus/prometheus.yml", "prometheus/rules", "alertmanager/alertmanager.yml",
           "alertmanager/templates", "grafana/provisioning", "grafana/dashboards")  # fmt: skip


def source_files() -> dict[str, bytes]:
    """Each file the cluster reads, by its path from the repository root."""
    files = {}
    for name in SOURCES:
        path = ROOT / name
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file():
                files[str(f.relative_to(ROOT))] = f.read_bytes()
    return files


def differences() -> list[str]:
    wanted = source_files()
    present = {str(f.relative_to(CONFIG)) for f in CONFIG.rglob("*") if f.is_file()}
    stale = sorted(present - wanted.keys())
    changed = sorted(k for k, data in wanted.items() if not (CONFIG / k).is_file() or (CONFIG / k).read_bytes() != data)
    return [f"{k}: not in the sources" for k in stale] + [f"{k}: differs from its source" for k in changed]


def write() -> None:
    wanted = source_files()
    for f in CONFIG.rglob("*"):
        if f.is_file() and str(f.relative_to(CONFIG)) not in wanted:
            f.unlink()
    for key, data in wanted.items():
        (CONFIG / key).parent.mkdir(parents=True, exist_ok=True)
        (CONFIG / key).write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a copy differs from its source")
    args = ap.parse_args(argv)
    if args.check:
        problems = differences()
        for line in problems:
            print(f"deploy/k8s/monitoring/config/{line} (run `make k8s-config`)", file=sys.stderr)
        return 1 if problems else 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
