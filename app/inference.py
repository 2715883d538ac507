"""The release model behind the API: loaded once through the pipeline's own loader, its
sha256 checked against model.json, and warmed up before the service reports ready."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from ml.artifact import ModelLoadError, ReleaseModel, load_release, predict_proba
from ml.images import open_rgb, to_tensor

log = logging.getLogger("app.model")


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    probabilities: dict[str, float]
    decode_seconds: float
    inference_seconds: float
    pixels: int


class Classifier:
    """Holds the model, or the reason there is none; never raises at start-up."""

    def __init__(self, model_dir: str, threads: int = 1) -> None:
        self.model_dir = model_dir
        self.release: ReleaseModel | None = None
        self.error: str | None = None
        self.ready = False
        torch.set_num_threads(threads)
        try:
            self.release = load_release(model_dir)
        except ModelLoadError as exc:
            self.error = str(exc)
            log.error("model not loaded: %s", exc, extra={"event": "model_load_failed", "model_dir": model_dir})
            return
        self.warm_up()

    @property
    def version(self) -> str | None:
        return self.release.version if self.release else None

    def warm_up(self) -> None:
        """One inference, so the first request does not pay for lazy initialisation."""
        assert self.release is not None
        size = self.release.image_size
        predict_proba(self.release, torch.zeros(1, 3, size, size, dtype=torch.uint8))
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
        probs = predict_proba(self.release, batch)[0].tolist()
        done = time.perf_counter()
        classes = self.release.classes
        best = max(range(len(classes)), key=lambda i: probs[i])
        return Prediction(
            label=classes[best],
            confidence=probs[best],
            probabilities=dict(zip(classes, probs, strict=True)),
            decode_seconds=decoded - start,
            inference_seconds=done - decoded,
            pixels=pixels,
        )
