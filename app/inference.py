"""The release model behind the API: loaded once through the pipeline's own loader, its
sha256 checked against model.json, and warmed up before the service reports ready.

The forward pass runs the AOTInductor package built from that model (`make export-model`,
ml/export.py) when one is given and passes its checks, else eager PyTorch; ``engine`` says
which, and a refused package is one log line, never a failed start."""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from ml.artifact import ModelLoadError, ReleaseModel, load_release, predict_outputs
from ml.export import Forward, PackageError, load_package
from ml.images import open_rgb, to_tensor

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
        self.release: ReleaseModel | None = None
        self.error: str | None = None
        self.ready = False
        self.engine = "none"
        torch.set_num_threads(threads)
        self.keeps_freed_memory = keep_freed_memory()
        try:
            self.release = load_release(model_dir)
            self._forward: Forward = partial(predict_outputs, self.release)
            self.engine = "eager"
            if package:
                self._use_package(Path(package), threads)
            self.warm_up()
        except ModelLoadError as exc:
            self.release, self.engine, self.error = None, "none", str(exc)
            log.error("model not loaded: %s", exc, extra={"event": "model_load_failed", "model_dir": model_dir})

    def _use_package(self, package: Path, threads: int) -> None:
        assert self.release is not None
        try:
            self._forward = load_package(package, self.release, threads)
        except PackageError as exc:
            log.warning("compiled model not used, running eager PyTorch: %s", exc, extra={"event": "package_refused"})
            return
        self.engine = "aotinductor"
        log.info("compiled model loaded", extra={"event": "package_loaded", "package": str(package)})

    @property
    def version(self) -> str | None:
        return self.release.version if self.release else None

    def warm_up(self) -> None:
        """One inference, so the first request does not pay for lazy initialisation; a model
        that cannot make it is a ModelLoadError like any other unusable model."""
        assert self.release is not None
        size = self.release.image_size
        try:
            with torch.inference_mode():
                self._forward(torch.zeros(1, 3, size, size, dtype=torch.uint8))
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
        batch = to_tensor(image, size).unsqueeze(0)
        decoded = time.perf_counter()
        with torch.inference_mode():
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


def keep_freed_memory() -> bool:
    """Let this process reuse the memory a forward pass frees instead of faulting it back in
    (see the thresholds above); True where the C library is glibc and took the settings."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows): nothing to tune
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))
