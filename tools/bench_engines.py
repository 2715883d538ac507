"""`make bench-engines`: other inference engines for the release model, against the service's.

The service runs the ONNX graph of `make export-model` in ONNX Runtime. Tried beside it and
eager PyTorch (the model as trained, the reference), each on the same uint8 photo tensors the
service decodes (ml.images) and with one thread:

- OpenVINO, from the same ONNX graph (normalisation and softmax inside it);
- int8 post-training quantization (ONNX Runtime's static QDQ, per channel, calibrated on
  training photos only), run by both.

An engine may serve only if it gives eager PyTorch's label on every photo of the test split
and stays within 0.1 percentage point of its accuracy on the validation split. Latency is
batch 1, one thread, in alternating rounds (the machine drifts): the median and range over
rounds, and the reference's own range as the drift.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ml.artifact import ReleaseModel, load_release, predict_outputs
from ml.config import load_params
from ml.data import MANIFEST, DataError, read_manifest, select
from ml.export import export_graph
from ml.graph import INPUT, load_graph, open_session
from ml.images import ImageError, load_tensor
from tools import ROOT

Run = Callable[[np.ndarray], np.ndarray]  # uint8 1×3×S×S → 1×3: probabilities, not-a-pet distance


@dataclass
class Engine:
    name: str
    run: Run


def quantize_int8(fp32: Path, out: Path, calibration: list[np.ndarray]) -> Path:
    """ONNX Runtime's static post-training quantization: QDQ, int8 weights per channel, uint8
    activations with MinMax ranges from ``calibration``. Only the convolutions and the head are
    quantized: the normalisation before them and the softmax after stay float, so that a
    confidence is not rounded to steps of 1/255."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Photos(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type hints
        def __init__(self) -> None:
            self.items: Iterator[np.ndarray] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {"image": item}

    prepared = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared), str(out), Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv", "Gemm", "MatMul"],
    )  # fmt: skip
    prepared.unlink()
    return out


def onnxruntime_engine(path: Path) -> Run:
    """Any graph (the int8 one has no probe to check) in a session set up as the service's."""
    session = open_session(path, threads=1)
    return lambda x: session.run(None, {INPUT: x})[0]


def openvino_engine(path: Path) -> Run:
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request, output = compiled.create_infer_request(), compiled.output(0)
    return lambda x: request.infer({0: x})[output]


def eager_engine(release: ReleaseModel) -> Run:
    def eager(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return predict_outputs(release, torch.from_numpy(x)).numpy()

    return eager


def service_graph(release: ReleaseModel, package: Path, out: Path) -> Path:
    """The service's ONNX graph (`make export-model`), exported here if there is none."""
    if package.is_file():
        load_graph(package, release, threads=1)  # refused if it is not this release's
        return package
    print(f"note: no {package} (make export-model): exporting the release model to {out}")
    return export_graph(release, out)


def photos(source: Path, split: str, limit: int | None, size: int) -> tuple[list[np.ndarray], np.ndarray]:
    """A split's photos decoded as the service decodes them, and their labels (1: dog)."""
    rows = select(read_manifest(MANIFEST), split)
    if limit:
        rows = random.Random(0).sample(rows, min(limit, len(rows)))
    tensors, labels = [], []
    for row in tqdm(rows, desc=f"decoding {split}", unit="photo", dynamic_ncols=True):
        try:
            tensors.append(load_tensor(source / row.path, size).unsqueeze(0).numpy())
        except ImageError:
            continue  # prepare drops what does not decode; a photo changed since is not the engine's fault
        labels.append(int(row.label == "dog"))
    return tensors, np.asarray(labels)


def labels_of(engine: Engine, tensors: list[np.ndarray], what: str) -> np.ndarray:
    bar = tqdm(tensors, desc=f"{engine.name}, {what}", unit="photo", dynamic_ncols=True, leave=False)
    return np.asarray([int(engine.run(x)[0][:2].argmax()) for x in bar])  # then the not-a-pet distance


def latency_rounds(engines: list[Engine], x: np.ndarray, rounds: int, calls: int) -> dict[str, list[float]]:
    """Each round, each engine's median ms over ``calls`` calls; the order turns every round."""
    ms: dict[str, list[float]] = {e.name: [] for e in engines}
    for r in range(rounds):
        for engine in engines[r % len(engines) :] + engines[: r % len(engines)]:
            for _ in range(3):
                engine.run(x)
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                engine.run(x)
                times.append(time.perf_counter() - start)
            ms[engine.name].append(statistics.median(times) * 1000)
    return ms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models")
    ap.add_argument("--package", type=Path, default=ROOT / "build" / "model.onnx", help="make export-model")
    ap.add_argument("--source", type=Path, help="photo folder (default: params data.source)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "engines")
    ap.add_argument("--limit", type=int, help="photos per split (default: all; the verdict needs all)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calibration", type=int, default=256, help="training photos for int8 ranges")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    release = load_release(args.model)
    try:
        source = args.source or Path(load_params().data.source)
        test, _ = photos(source, "test", args.limit, release.image_size)
        val, val_y = photos(source, "val", args.limit, release.image_size)
        calibration, _ = photos(source, "train", args.calibration, release.image_size)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fp32 = service_graph(release, args.package, args.out / "model.onnx")
    int8 = quantize_int8(fp32, args.out / "model.int8.onnx", calibration)
    engines = [
        Engine("PyTorch eager", eager_engine(release)),
        Engine("ONNX Runtime fp32 (service)", load_graph(fp32, release, threads=1)),
        Engine("OpenVINO fp32", openvino_engine(fp32)),
        Engine("ONNX Runtime int8", onnxruntime_engine(int8)),
        Engine("OpenVINO int8", openvino_engine(int8)),
    ]
    test_labels = {e.name: labels_of(e, test, "test") for e in engines}
    val_accuracy = {e.name: float((labels_of(e, val, "val") == val_y).mean()) for e in engines}
    ms = latency_rounds(engines, test[0], args.rounds, calls=40)
    reference = engines[0].name
    print(f"\n{len(test)} test and {len(val)} val photos; batch 1, one thread; {args.rounds} rounds of 40 calls")
    header = ("engine", "ms median (range)", "photos/s", "test labels differ", "val acc", "Δ pp")
    print("{:<28} {:>20} {:>9} {:>19} {:>8} {:>6}".format(*header))
    for engine in engines:
        differ = int((test_labels[engine.name] != test_labels[reference]).sum())
        delta = (val_accuracy[engine.name] - val_accuracy[reference]) * 100
        median = statistics.median(ms[engine.name])
        spread = f"{median:6.1f} ({min(ms[engine.name]):.1f}–{max(ms[engine.name]):.1f})"
        verdict = (
            ""
            if engine.name == reference
            else "  adoptable"
            if differ == 0 and abs(delta) <= 0.1
            else "  not adoptable"
        )
        print(
            f"{engine.name:<28} {spread:>20} {1000 / median:9.1f} {differ:>19} {val_accuracy[engine.name]:8.2%} "
            f"{delta:+6.2f}{verdict}"
        )
    drift = ms[engines[0].name]
    print(f"drift: eager PyTorch's round medians ranged {min(drift):.1f}–{max(drift):.1f} ms "
          f"({(max(drift) / min(drift) - 1) * 100:.0f}%)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
