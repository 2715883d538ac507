"""Export the release model as the ONNX graph the service runs (ml/graph.py).

`python -m ml.export --model models --out build/model.onnx` captures the whole serving graph
(uint8 pixels → normalise → network → softmax and the not-a-pet distance) with the
``torch.export``-based ONNX exporter, opset 18, batch 1 (the service classifies one photo at a
time). ONNX Runtime runs it in 12 ms where eager PyTorch took 33 and the AOTInductor package
it replaces 26, side by side, with eager's label on every photo of the test split
(`make bench-engines`, docs/decisions.md).

The file records what :func:`ml.graph.load_graph` checks: the weights' sha256, the input
contract, and eager PyTorch's outputs on the probe image. It is written atomically and checked
by loading it back, so a bad graph fails the build, not the pod.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import onnx
import torch
from torch import nn

from ml.artifact import ModelLoadError, ReleaseModel, load_release, predict_outputs
from ml.graph import INPUT, OUTPUT, PROBE_KEY, expected_metadata, load_graph, probe_image
from ml.images import normalise

OPSET = 18


class ServingGraph(nn.Module):
    """What ``predict_outputs`` computes, as one module to export: uint8 N×3×S×S → N×3
    (class probabilities, then the not-a-pet distance)."""

    def __init__(self, release: ReleaseModel) -> None:
        super().__init__()
        self.model = release.model
        self.mean, self.std = release.mean, release.std  # traced in as constants

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.serve(normalise(pixels, self.mean, self.std))


def export_graph(release: ReleaseModel, out: Path) -> Path:
    """Write ``release`` as a batch-1 ONNX graph with its checks in the metadata, atomically."""
    size = release.image_size
    example = torch.zeros((1, 3, size, size), dtype=torch.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.onnx")
    try:
        with torch.inference_mode():
            torch.onnx.export(
                ServingGraph(release).eval(), (example,), str(tmp), dynamo=True, opset_version=OPSET,
                verbose=False, external_data=False, input_names=[INPUT], output_names=[OUTPUT],
            )  # fmt: skip
        probe = predict_outputs(release, torch.from_numpy(probe_image(size)))
        graph = onnx.load(str(tmp))
        metadata = {**expected_metadata(release), PROBE_KEY: json.dumps(probe.tolist())}
        onnx.helper.set_model_props(graph, metadata)
        onnx.save(graph, str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("models"))
    ap.add_argument("--out", type=Path, default=Path("build/model.onnx"))
    args = ap.parse_args(argv)
    try:
        release = load_release(args.model)
    except ModelLoadError as exc:
        raise SystemExit(f"cannot export: {exc}") from None
    print(f"exporting {release.version} as an ONNX graph (opset {OPSET}; about 10 s on 2 cores) ...")
    start = time.perf_counter()
    export_graph(release, args.out)
    load_graph(args.out, release, threads=1)  # fail the build, not the pod, on a bad graph
    size = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size:.1f} MB) in {time.perf_counter() - start:.0f} s; checked against eager")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
