"""The release model as an ONNX graph, run by ONNX Runtime: how the service classifies.

`python -m ml.export` writes the graph (uint8 pixels → normalise → network → softmax and the
not-a-pet distance, the service's whole forward pass) from ``models/``. Running it needs
neither PyTorch nor a compiler, so the serving image carries ONNX Runtime alone
(docs/decisions.md, "An image without PyTorch").

The graph is a cache of ``models/``, not a second source of truth: its metadata records the
weights' sha256, image size, normalisation and classes, and the outputs eager PyTorch gave on a
probe image when it was exported. :func:`load_graph` refuses a graph that disagrees with the
model card or that ONNX Runtime on this machine does not run to the same outputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ml.card import ModelCard

# ONNX Runtime (1.29 on) sends usage telemetry from Linux too, and writes a device id and an
# event store under ~/.cache (a read-only root in the pod: one warning at each start). A
# service for shelter photos sends nothing anywhere. ONNX Runtime reads this once, when it
# initialises, so it is set before onnxruntime is imported anywhere in the process.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

Forward = Callable[[np.ndarray], np.ndarray]  # uint8 N×3×S×S → N×3: probabilities, distance
INPUT, OUTPUT = "image", "outputs"
PROBE_KEY = "pet.probe_outputs"
PROBE_TOLERANCE = 1e-4


class GraphError(RuntimeError):
    """The ONNX graph is missing, stale or gives other outputs than the model it was made from."""


def expected_metadata(card: ModelCard) -> dict[str, str]:
    """What a graph exported from this release must say about itself."""
    return {
        "pet.weights_sha256": card.weights_sha256,
        "pet.image_size": str(card.image_size),
        "pet.test_time_flip": str(card.card.get("test_time_flip", False)),
        "pet.mean": ",".join(map(str, card.mean)),
        "pet.std": ",".join(map(str, card.std)),
        "pet.classes": ",".join(card.classes),
    }


def probe_image(size: int) -> np.ndarray:
    """The image every graph is checked on: seeded noise, the same wherever it is made."""
    return np.random.default_rng(0).integers(0, 256, (1, 3, size, size), dtype=np.uint8)


def open_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime session as the service runs one: the CPU, ``threads`` intra-op threads,
    sequential, every graph optimisation, errors only in its log."""
    import onnxruntime as ort  # here, not above: the training tools import this module too

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its warnings go to stderr, outside the JSON logs
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_graph(path: Path, card: ModelCard, threads: int) -> Forward:
    """The checked forward pass of the graph at ``path``; GraphError says why not."""
    if not path.is_file():
        raise GraphError(f"no ONNX graph at {path}")
    try:
        session = open_session(path, threads)
        metadata = dict(session.get_modelmeta().custom_metadata_map)
    except Exception as exc:  # a truncated or foreign file: any loader error means "not usable"
        raise GraphError(f"{path} is not a loadable ONNX graph: {exc}") from None
    for key, want in expected_metadata(card).items():
        if metadata.get(key) != want:
            raise GraphError(f"{path} was exported for {key}={metadata.get(key)!r}, this model needs {want!r}")

    def forward(pixels: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([OUTPUT], {INPUT: pixels})[0])

    _probe(forward, card, metadata, path)
    return forward


def _probe(forward: Forward, card: ModelCard, metadata: dict[str, str], path: Path) -> None:
    """Same probe image, same outputs as eager PyTorch gave at export, or the graph is not used."""
    try:
        want = np.asarray(json.loads(metadata[PROBE_KEY]), dtype=np.float32)
        got = forward(probe_image(card.image_size))
    except Exception as exc:  # no recorded outputs, or a graph that cannot run its own input
        raise GraphError(f"{path} cannot be checked: {type(exc).__name__}: {exc}") from None
    if got.shape != want.shape:
        raise GraphError(f"{path} gives outputs of shape {got.shape}, the model {want.shape}")
    diff = float(np.abs(got - want).max())
    if not diff <= PROBE_TOLERANCE:
        raise GraphError(f"{path} disagrees with the eager model by {diff:.2e} (> {PROBE_TOLERANCE})")
