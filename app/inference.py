"""The release model behind the API: its card read and checked once, and its forward pass
warmed up before the service reports ready.

The forward pass runs the model's ONNX graph in ONNX Runtime (`make export-model`, ml/graph.py)
when one is given and passes its checks, else eager PyTorch where PyTorch is installed;
``engine`` says which. The serving image has no PyTorch: there a refused graph leaves the
service unready with the reason, where elsewhere it is one log line and the eager model.
"""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.card import ModelCard, ModelLoadError, read_card
from ml.graph import Forward, GraphError, load_graph
from ml.images import open_rgb, to_array

log = logging.getLogger("app.model")

# glibc mallopt parameters. A forward pass frees 10-20 MB of activations, and glibc gives freed
# memory over its trim threshold back to the kernel: every request then page-faulted it all back
# in (3,000-4,600 faults, a sixth of a worker's CPU in the kernel). glibc raises its thresholds
# itself only after freeing a block as large, which a worker may never do; these are where that
# tuning ends (32 MiB) and what a worker may keep (64 MiB). Larger blocks, a 16 MP upload's
# pixels, still go straight back to the kernel.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES, _TRIM_THRESHOLD_BYTES = 32 << 20, 64 << 20


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    probabilities: dict[str, float]
    not_a_pet: bool | None  # None: the model has no not-a-pet detector (a release made before it)
    decode_seconds: float
    inference_seconds: float
    pixels: int


class Classifier:
    """Holds the model, or the reason there is none; never raises at start-up."""

    def __init__(self, model_dir: str, threads: int = 1, package: str = "") -> None:
        self.model_dir = model_dir
        self.release: ModelCard | None = None
        self.error: str | None = None
        self.ready = False
        self.engine = "none"
        self.keeps_freed_memory = keep_freed_memory()
        try:
            self.release, self._forward, self.engine = open_model(Path(model_dir), threads, package)
            self.warm_up()
        except ModelLoadError as exc:
            self.release, self.engine, self.error = None, "none", str(exc)
            log.error("model not loaded: %s", exc, extra={"event": "model_load_failed", "model_dir": model_dir})

    @property
    def version(self) -> str | None:
        return self.release.version if self.release else None

    def warm_up(self) -> None:
        """One inference, so the first request does not pay for lazy initialisation; a model
        that cannot make it is a ModelLoadError like any other unusable model."""
        assert self.release is not None
        size = self.release.image_size
        try:
            self._forward(np.zeros((1, 3, size, size), dtype=np.uint8))
        except Exception as exc:  # whatever breaks the first inference makes the model unusable
            raise ModelLoadError(f"the model failed its warm-up inference: {type(exc).__name__}: {exc}") from exc
        self.ready = True

    def predict(self, data: bytes) -> Prediction:
        """Bytes of a photo → prediction. Raises ml.images.ImageError for unusable input."""
        assert self.release is not None, "predict called while the model is not loaded"
        size = self.release.image_size
        start = time.perf_counter()
        image = open_rgb(data, draft_size=size)
        pixels = image.width * image.height
        batch = to_array(image, size)[None]
        decoded = time.perf_counter()
        outputs = self._forward(batch)[0].tolist()
        done = time.perf_counter()
        classes = self.release.classes
        probs, distance = outputs[: len(classes)], outputs[len(classes)]  # PetNet.serve's columns
        best = max(range(len(classes)), key=lambda i: probs[i])
        threshold = self.release.not_a_pet_threshold
        return Prediction(
            label=classes[best],
            confidence=probs[best],
            probabilities=dict(zip(classes, probs, strict=True)),
            not_a_pet=None if threshold is None else distance > threshold,
            decode_seconds=decoded - start,
            inference_seconds=done - decoded,
            pixels=pixels,
        )


def open_model(model_dir: Path, threads: int, graph: str) -> tuple[ModelCard, Forward, str]:
    """The card, the forward pass and the engine's name: the ONNX graph if one is given and
    passes its checks, else eager PyTorch; ModelLoadError when neither can serve."""
    refused = ""
    if graph:
        card = ModelCard(read_card(model_dir))
        try:
            forward = load_graph(Path(graph), card, threads)
            log.info("ONNX graph loaded", extra={"event": "graph_loaded", "graph": graph})
            return card, forward, "onnxruntime"
        except GraphError as exc:
            refused = str(exc)
    try:
        import torch  # only for the fallback: the serving image has none

        from ml.artifact import load_release, predict_outputs
    except ImportError:
        why = f"the ONNX graph was refused ({refused})" if refused else "no ONNX graph was given (MODEL_PACKAGE)"
        raise ModelLoadError(f"{why}, and PyTorch, for the eager model, is not installed") from None
    if refused:
        log.warning("ONNX graph not used, running eager PyTorch: %s", refused, extra={"event": "graph_refused"})
    torch.set_num_threads(threads)
    release = load_release(model_dir)

    def eager(pixels: np.ndarray) -> np.ndarray:
        return predict_outputs(release, torch.from_numpy(pixels)).numpy()

    return release, eager, "eager"


def keep_freed_memory() -> bool:
    """Let this process reuse the memory a forward pass frees instead of faulting it back in
    (see the thresholds above); True where the C library is glibc and took the settings."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows): nothing to tune
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))
