"""Tooling that drives or measures the service and the model from outside: the local server and
proxy, smoke tests, traffic replay, and the benchmarks. Nothing here ships in the image."""

from pathlib import Path

# The repository root: the tools run from a checkout.
ROOT = Path(__file__).resolve().parent.parent
