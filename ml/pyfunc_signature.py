"""What a registered version takes and gives, as MLflow's signature: read by the pyfunc for its
columns and by the registry when it logs a version, so that the two cannot differ."""

from __future__ import annotations

from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from ml.models import CLASSES

# One row per photo: the answer, each class's probability, and why a photo had none ("" if it had).
OUTPUT_TYPES = {"prediction": "string", "confidence": "double", **dict.fromkeys(CLASSES, "double"), "error": "string"}
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("binary", "image")]),
    outputs=Schema([ColSpec(kind, name) for name, kind in OUTPUT_TYPES.items()]),
)
