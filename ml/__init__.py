"""Cats vs Dogs ML pipeline: data → train → evaluate → registry.

One module per step: ``config`` (params.yaml), ``images`` (decoding), ``data`` (scan,
dedupe, split), ``models`` (architecture registry), ``features`` (frozen-backbone
cache), ``train``, ``metrics``, ``evaluate``, ``artifact`` (the release model), ``card`` (its
model card, read without PyTorch), ``export`` and ``graph`` (the ONNX graph the service runs)
and ``registry`` (MLflow registration and the quality gate).
"""
