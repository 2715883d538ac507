"""The release model as an MLflow pyfunc, so that any MLflow tool can serve it:

    mlflow models serve -m models:/CatsDogsClassifier@champion --env-manager local
    mlflow.pyfunc.load_model("models:/CatsDogsClassifier@champion").predict(frame)

Input: a DataFrame with a binary column ``image`` (the photo's bytes; base64 in JSON). Output:
one row per photo with ``prediction``, ``confidence``, ``cat``, ``dog`` and ``error`` (the
reason a photo could not be classified, "" otherwise). It decodes and predicts as the service
does (ml.images, ml.artifact), from the release files it carries as its ``release`` artifact.

This file is the model's code (MLflow "models from code": nothing is pickled), logged with
each registered version by ml/registry.py. The service keeps its own loader, checks and
engine (the ONNX graph in ONNX Runtime); this is for everyone else's tools.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc.model import PythonModel, PythonModelContext

from ml.pyfunc_signature import OUTPUT_TYPES


class PetClassifier(PythonModel):
    def load_context(self, context: PythonModelContext) -> None:
        from ml.artifact import load_release

        self.release = load_release(context.artifacts["release"])  # sha256 checked, as the service does

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        import torch

        from ml.artifact import predict_proba
        from ml.images import ImageError, load_tensor

        rows = []
        for data in model_input["image"]:
            try:
                x = load_tensor(bytes(data), self.release.image_size).unsqueeze(0)
            except ImageError as exc:
                rows.append({"prediction": "", "confidence": 0.0, "cat": 0.0, "dog": 0.0, "error": exc.reason})
                continue
            with torch.inference_mode():
                cat, dog = predict_proba(self.release, x)[0].tolist()
            best = "cat" if cat >= dog else "dog"
            rows.append({"prediction": best, "confidence": max(cat, dog), "cat": cat, "dog": dog, "error": ""})
        return pd.DataFrame(rows, columns=list(OUTPUT_TYPES))


set_model(PetClassifier())
