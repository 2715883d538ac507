"""Derive the loopback Prometheus configuration from prometheus.yml (the one source).

    python prometheus/render_local.py --target pet-classifier=127.0.0.1:8000 \
        --target prometheus=127.0.0.1:9090 --alertmanager 127.0.0.1:9093 --out /tmp/prometheus.yml

Each job named with --target scrapes those loopback addresses instead of discovering them in the cluster; jobs
with no local target (node-exporter, kube-state-metrics) are left out. A job that finds pods
through Kubernetes gives its local target the labels its relabelling would: namespace "local"
and the address as the pod's name, so per-pod alerts and panels work here too. Rule files are pointed at
this folder's rules/, and --fast shortens intervals for tests. Nothing else changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


def render(
    targets: dict[str, list[str]], alertmanager: str, interval: str | None = None, rules_dir: Path = HERE / "rules"
) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((HERE / "prometheus.yml").read_text())
    config["rule_files"] = [str(rules_dir / "*.yml")]
    config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    config["global"]["external_labels"] = {"cluster": "local"}
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] not in targets:
            continue
        discovery = ("dns_sd_configs", "kubernetes_sd_configs", "relabel_configs", "static_configs")
        local = {k: v for k, v in job.items() if k not in discovery}
        if "kubernetes_sd_configs" in job:
            local["static_configs"] = [
                {"targets": [address], "labels": {"namespace": "local", "pod": address}}
                for address in targets[job["job_name"]]
            ]
        else:
            local["static_configs"] = [{"targets": targets[job["job_name"]]}]
        jobs.append(local)
    config["scrape_configs"] = jobs
    if interval:
        config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = interval
    return config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", action="append", default=[], help="JOB=HOST:PORT (repeatable)")
    ap.add_argument("--alertmanager", default="127.0.0.1:9093")
    ap.add_argument("--interval", help="scrape and evaluation interval, e.g. 1s for tests")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    targets: dict[str, list[str]] = {}
    for item in args.target:
        job, _, address = item.partition("=")
        if not address:
            ap.error(f"--target wants JOB=HOST:PORT, got {item!r}")
        targets.setdefault(job, []).append(address)
    args.out.write_text(yaml.safe_dump(render(targets, args.alertmanager, args.interval), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
