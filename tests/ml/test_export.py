"""The ONNX graph the service runs: written atomically, refused whenever it does not match the
release model it claims to be (weights, input contract, eager outputs), and equal to eager
PyTorch; the service loads it without PyTorch."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from ml import export, graph
from ml.artifact import load_release, predict_outputs
from ml.card import ModelCard, read_card
from ml.export import export_graph
from ml.graph import GraphError, load_graph
from ml.images import load_tensor
from tests.helpers import ROOT, save_tiny_release


@pytest.fixture
def tiny(tiny_model: Path, tiny_package: Path) -> tuple[Path, Path]:
    """The shared tiny release and its graph (tests/conftest.py: exported once)."""
    return tiny_model, tiny_package


def eager(release_dir: Path, x: np.ndarray) -> np.ndarray:
    return predict_outputs(load_release(release_dir), torch.from_numpy(x)).numpy()


def pixels(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1, 3, size, size), dtype=np.uint8)


def test_the_graph_equals_eager_and_records_what_it_was_made_from(tiny: tuple[Path, Path]) -> None:
    model_dir, path = tiny
    release = load_release(model_dir)
    forward = load_graph(path, release, threads=1)
    np.testing.assert_allclose(forward(pixels(3)), eager(model_dir, pixels(3)), atol=1e-5)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["pet.weights_sha256"] == release.card["weights"]["sha256"]
    assert meta["pet.image_size"] == "32" and meta["pet.mean"] == "0.5,0.5,0.5"
    assert np.asarray(json.loads(meta["pet.probe_outputs"])).shape == (1, 3)
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no temp file left behind


def test_the_graph_computes_the_not_a_pet_distance_as_eager(tmp_path: Path) -> None:
    save_tiny_release(tmp_path / "model", not_a_pet_threshold=0.5)
    release = load_release(tmp_path / "model")
    forward = load_graph(export_graph(release, tmp_path / "model.onnx"), release, threads=1)
    got, want = forward(pixels(5)), eager(tmp_path / "model", pixels(5))
    assert got.shape == (1, 3) and 0 < want[0, 2] <= 2  # a real distance, not the no-detector 0
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_graph_for_other_weights_or_inputs_is_refused(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    _, path = tiny
    save_tiny_release(tmp_path / "retrained", seed=1)
    with pytest.raises(GraphError, match=r"pet\.weights_sha256"):
        load_graph(path, load_release(tmp_path / "retrained"), threads=1)
    save_tiny_release(tmp_path / "renormalised", normalization={"mean": [0.4] * 3, "std": [0.5] * 3})
    with pytest.raises(GraphError, match=r"pet\.mean"):
        load_graph(path, load_release(tmp_path / "renormalised"), threads=1)
    save_tiny_release(tmp_path / "flipped", test_time_flip=True)  # the same weights, used another way
    with pytest.raises(GraphError, match=r"pet\.test_time_flip"):
        load_graph(path, load_release(tmp_path / "flipped"), threads=1)


def test_a_test_time_flip_model_exports_to_the_same_answers(tmp_path: Path) -> None:
    save_tiny_release(tmp_path / "flipped", test_time_flip=True)
    release = load_release(tmp_path / "flipped")
    forward = load_graph(export_graph(release, tmp_path / "model.onnx"), release, threads=1)
    x = pixels(4)
    np.testing.assert_allclose(forward(x), eager(tmp_path / "flipped", x), atol=1e-5)
    np.testing.assert_allclose(forward(x[..., ::-1].copy()), forward(x), atol=1e-5)  # a mirror is the same photo


@pytest.mark.parametrize("content", [b"", b"not a graph at all", b"\x08\x07" + b"\0" * 200])
def test_junk_or_missing_graphs_are_refused(tiny: tuple[Path, Path], tmp_path: Path, content: bytes) -> None:
    card = ModelCard(read_card(tiny[0]))
    with pytest.raises(GraphError, match="no ONNX graph"):
        load_graph(tmp_path / "absent.onnx", card, threads=1)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(content)
    with pytest.raises(GraphError, match="not a loadable ONNX graph"):
        load_graph(junk, card, threads=1)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(tiny[1].read_bytes()[: tiny[1].stat().st_size // 2])
    with pytest.raises(GraphError, match="not a loadable"):
        load_graph(truncated, card, threads=1)


def test_a_graph_that_disagrees_with_its_probe_is_refused(tiny: tuple[Path, Path]) -> None:
    card = ModelCard(read_card(tiny[0]))
    probe = graph.probe_image(card.image_size)
    with pytest.raises(GraphError, match="disagrees with the eager model"):
        graph._probe(lambda x: np.array([[0.9, 0.1, 0.0]]), card, {graph.PROBE_KEY: "[[0.1, 0.9, 0.0]]"}, tiny[1])
    with pytest.raises(GraphError, match=r"outputs of shape \(1, 2\), the model \(1, 3\)"):
        graph._probe(lambda x: np.array([[0.9, 0.1]]), card, {graph.PROBE_KEY: "[[0.1, 0.9, 0.0]]"}, tiny[1])
    with pytest.raises(GraphError, match="cannot be checked: KeyError"):
        graph._probe(lambda x: np.zeros((1, 3)), card, {}, tiny[1])
    assert probe.shape == (1, 3, 32, 32) and np.array_equal(probe, graph.probe_image(32))  # seeded


def test_a_failed_export_leaves_no_file(
    tiny: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(model: object, args: object, f: str, **kw: object) -> None:
        Path(f).write_bytes(b"half a graph")
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(RuntimeError, match="exporter failed"):
        export_graph(load_release(tiny[0]), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_the_cli_refuses_a_missing_model(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="cannot export: model card not found"):
        export.main(["--model", str(tmp_path), "--out", str(tmp_path / "m.onnx")])
    assert not (tmp_path / "m.onnx").exists()


def test_the_graph_loads_and_runs_where_pytorch_cannot_be_imported(tiny: tuple[Path, Path]) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"  # as in the image: `import torch` fails
        "import numpy as np; from pathlib import Path\n"
        "from ml.card import ModelCard, read_card; from ml.graph import load_graph, probe_image\n"
        f"f = load_graph(Path({str(tiny[1])!r}), ModelCard(read_card(Path({str(tiny[0])!r}))), 1)\n"
        "print(f(probe_image(32)).tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    np.testing.assert_allclose(json.loads(out.stdout), eager(tiny[0], graph.probe_image(32)), atol=1e-5)


def test_the_exported_release_model_classifies_real_photos_as_eager_does(real_photos: Path, tmp_path: Path) -> None:
    release = load_release(ROOT / "models")
    assert export.main(["--model", str(ROOT / "models"), "--out", str(tmp_path / "model.onnx")]) == 0
    forward = load_graph(tmp_path / "model.onnx", release, threads=1)
    photos = random.Random(1).sample(sorted(real_photos.glob("*/*.jpg")), 64)
    worst = 0.0
    for photo in photos:
        x = load_tensor(photo, release.image_size).unsqueeze(0)
        with torch.inference_mode():
            want = predict_outputs(release, x).numpy()
        got = forward(x.numpy())
        assert got.argmax() == want.argmax(), photo.name
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst < 1e-4


def test_onnx_runtime_keeps_no_device_id_and_sends_nothing(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """ONNX Runtime's telemetry writes a device id under ~/.cache as it initialises; the
    service's loader turns it off first. The plain import shows the check can fail."""
    load = (
        "from pathlib import Path; from ml.card import ModelCard, read_card; from ml.graph import load_graph\n"
        f"load_graph(Path({str(tiny[1])!r}), ModelCard(read_card(Path({str(tiny[0])!r}))), 1)"
    )
    plain = f"import onnxruntime as ort; ort.InferenceSession({str(tiny[1])!r}, providers=['CPUExecutionProvider'])"
    for name, code in (("service", load), ("plain", plain)):
        cache = tmp_path / name
        cache.mkdir()
        env = {"PATH": "/usr/bin:/bin", "HOME": str(cache), "XDG_CACHE_HOME": str(cache)}
        run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
    assert list((tmp_path / "service").rglob("*")) == []
    assert [p.name for p in (tmp_path / "plain").rglob("deviceid")] == ["deviceid"]
