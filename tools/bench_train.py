"""`make bench-train`: throughput of each part of training, and each stage's wall time.

Prints decode throughput (one process and a DataLoader worker), backbone throughput
(the frozen-feature pass), head or network training throughput, then runs prepare → train
→ evaluate with the default params in a temporary folder with a cold cache and prints the
wall time of each (skip that with --quick). Figures are medians of repeated runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ml.config import Params, load_params
from ml.data import MANIFEST, read_manifest, select
from ml.features import batches
from ml.images import load_tensor, normalise
from ml.models import get_spec


def median_rate(n: int, fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def bench_decoding(paths: list[Path], size: int, threads: int) -> None:
    rate = median_rate(len(paths), lambda: [load_tensor(p, size) for p in paths])
    print(f"decode+resize, 1 process:        {rate:8.1f} img/s")
    rate = median_rate(len(paths), lambda: list(batches(paths, size, 64, max(1, threads - 1))))
    print(f"decode+resize, DataLoader:       {rate:8.1f} img/s")


def bench_model(params: Params) -> None:
    """The frozen-feature pass, then a training step of what params.yaml trains."""
    size, spec = params.model.image_size, get_spec(params.model.name)
    model = spec.build(spec.pretrained).eval()
    x = torch.randint(0, 256, (64, 3, size, size), dtype=torch.uint8)
    with torch.inference_mode():
        rate = median_rate(64, lambda: model.features(normalise(x, spec.mean, spec.std)))
    print(f"forward (features), batch 64:    {rate:8.1f} img/s")

    trainable: torch.nn.Module = model.classifier if params.model.freeze_backbone else model
    inputs = normalise(x, spec.mean, spec.std)
    if params.model.freeze_backbone:
        inputs = model.features(inputs).detach()
    opt = torch.optim.AdamW(trainable.parameters(), lr=1e-3)
    labels = torch.randint(0, 2, (64,))

    def ten_steps() -> None:
        trainable.train()
        for _ in range(10):
            loss = torch.nn.functional.cross_entropy(trainable(inputs), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()

    rate = median_rate(64 * 10, ten_steps)
    what = "head on cached features" if params.model.freeze_backbone else "whole network"
    print(f"training step ({what}): {rate:8.1f} img/s")


def bench_stages() -> None:
    """prepare → train → evaluate with the default params, in a temporary folder (cold cache)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        manifest = f"{tmp}/prepared/manifest.csv"
        train = ["--manifest", manifest, "--out", f"{tmp}/models", "--cache-dir", f"{tmp}/cache"]
        stages = {
            "prepare": ["-m", "ml.prepare", "--out", f"{tmp}/prepared"],
            "train": ["-m", "ml.train", *train, "--reports", f"{tmp}/reports"],
            "evaluate": ["-m", "ml.evaluate", "--manifest", manifest, "--model", f"{tmp}/models"],
        }
        total = 0.0
        for name, cmd in stages.items():
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, *cmd], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            seconds = time.perf_counter() - start
            total += seconds
            print(f"stage {name:<9} (cold cache):    {seconds:8.1f} s")
        print(f"all stages:                      {total:8.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--quick", action="store_true", help="skip the full stage run")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    torch.set_num_threads(params.train.threads)
    source = Path(params.data.source)
    paths = [source / r.path for r in select(read_manifest(args.manifest), "train")[:512]]
    print(
        f"params: {params.model.name} image_size={params.model.image_size} threads={params.train.threads} "
        f"batch={params.train.batch_size}"
    )
    bench_decoding(paths, params.model.image_size, params.train.threads)
    bench_model(params)
    if not args.quick:
        bench_stages()
    return 0


if __name__ == "__main__":
    sys.exit(main())
