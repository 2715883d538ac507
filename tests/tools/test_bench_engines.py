"""`make bench-engines`: the graph other engines run is the service's model, uint8 pixels in
and probabilities out, and each engine computes the same answer from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ml.artifact import load_release, predict_outputs
from ml.export import export_graph
from ml.images import load_tensor
from tests.conftest import jpeg_bytes
from tools.bench_engines import onnxruntime_engine, openvino_engine, quantize_int8


@pytest.fixture(scope="module")
def photos(tiny_model: Path) -> list[np.ndarray]:
    size = load_release(tiny_model).image_size
    return [load_tensor(jpeg_bytes((30 * i, 200 - 20 * i, 90), seed=i), size).unsqueeze(0).numpy() for i in range(8)]


def test_onnx_runtime_and_openvino_give_the_service_models_probabilities(
    tiny_model: Path, photos: list[np.ndarray], tmp_path: Path
) -> None:
    release = load_release(tiny_model)
    graph = export_graph(release, tmp_path / "model.onnx")
    with torch.inference_mode():
        expected = np.concatenate([predict_outputs(release, torch.from_numpy(x)).numpy() for x in photos])
    for run in (onnxruntime_engine(graph), openvino_engine(graph)):
        got = np.concatenate([run(x) for x in photos])
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_int8_quantization_makes_a_graph_both_engines_run(
    tiny_model: Path, photos: list[np.ndarray], tmp_path: Path
) -> None:
    release = load_release(tiny_model)
    int8 = quantize_int8(export_graph(release, tmp_path / "model.onnx"), tmp_path / "model.int8.onnx", photos)
    assert int8.stat().st_size < (tmp_path / "model.onnx").stat().st_size
    assert not (tmp_path / "model.int8.pre.onnx").exists()  # the intermediate graph is removed
    with torch.inference_mode():
        expected = np.concatenate([predict_outputs(release, torch.from_numpy(x)).numpy() for x in photos])
    for run in (onnxruntime_engine(int8), openvino_engine(int8)):
        got = np.concatenate([run(x) for x in photos])
        # The softmax stays float: probabilities, not steps of 1/255 that sum to 0.996.
        np.testing.assert_allclose(got[:, :2].sum(axis=1), 1, atol=1e-5)
        assert not np.allclose(got[:, :2] * 255, np.round(got[:, :2] * 255), atol=1e-3)
        np.testing.assert_allclose(got, expected, atol=0.05)
