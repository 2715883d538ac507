"""`make bench-serve`: what serving costs on this machine, measured side by side.

1. Preprocessing of a 12-megapixel camera-like JPEG: draft-mode decode (what the service
   does) against a full decode then resize; median of repeats and the ratio (and of every
   JPEG in ``--camera DIR``). Then the hostile and the heaviest uploads the limits allow:
   a progressive JPEG at the 64-scan limit and past it, and per format the time and peak
   memory of one decode in a fresh process.
2. Inference options for the release model at batch 1, one thread: the same predictions,
   different speeds (the service runs the ONNX graph of `make export-model` in ONNX Runtime); then
   one request's whole cost (decode + preprocess + forward).
3. The real server (Gunicorn, gunicorn.conf.py) under wrk with a Lua script on loopback:
   requests/s, p50/p95/p99, errors, RSS per worker; against raw in-process throughput
   (decode + preprocess + forward) in as many processes as the server has workers, one torch
   thread each, on the same photos the load test sends. They alternate in slices, each
   server slice between two raw ones, the server in turn directly and through the pod's nginx
   (what a pod's clients get); the median of each side's ratios is its figure.
"""

from __future__ import annotations

import argparse
import copy
import io
import multiprocessing as mp
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import requests
import torch
from PIL import Image

from app.inference import Classifier
from ml.artifact import ReleaseModel, load_release, predict_proba
from ml.graph import load_graph
from ml.images import MAX_JPEG_SCANS, ImageError, normalise, open_rgb, to_tensor
from tools import ROOT
from tools.jpeg_samples import camera_jpeg, decode_peak, with_scans
from tools.local_server import gunicorn, nginx_binary, nginx_in_front

# The photos `make data` put in place (data.source), or another folder of them (PETS_DIR).
PETS = Path(os.environ.get("PETS_DIR") or ROOT / "data" / "raw")


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_preprocessing(big: bytes, size: int, what: str) -> float:
    """Print and return how many times faster draft mode preprocesses ``big`` than a full decode."""

    def full() -> torch.Tensor:
        im = Image.open(io.BytesIO(big))
        im.load()
        return to_tensor(im.convert("RGB"), size)

    def decode_only() -> None:  # libjpeg's scaled decode, most of it entropy decoding
        with Image.open(io.BytesIO(big)) as im:
            im.draft("RGB", (size, size))
            im.load()

    def drafted() -> torch.Tensor:
        return to_tensor(open_rgb(big, draft_size=size), size)

    # Round by round, side by side, so that the machine's drift touches all three alike; the
    # first round only warms up.
    rounds = [[median_seconds(fn, 1) for fn in (drafted, full, decode_only)] for _ in range(8)][1:]
    draft_s, plain, floor = (statistics.median(times) for times in zip(*rounds, strict=True))
    with Image.open(io.BytesIO(big)) as im:
        shape = f"{im.width * im.height / 1e6:.1f} MP{' progressive' if im.info.get('progressive') else ''}"
    print(
        f"{shape} JPEG, {what} ({len(big) / 1e6:.1f} MB) → {size}px: full decode+resize {plain * 1000:6.1f} ms, "
        f"draft mode {draft_s * 1000:5.1f} ms → {plain / draft_s:4.1f}x faster (target ≥ 8x); "
        f"the scaled decode alone {floor * 1000:.1f} ms bounds it at {plain / floor:.1f}x"
    )
    return plain / draft_s


def bench_hostile_jpeg(size: int) -> None:
    """What the scan limit saves: a 49 MP progressive JPEG with more and more scans."""
    buf = io.BytesIO()
    Image.new("RGB", (7000, 7000), (120, 80, 40)).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    scans = data.count(b"\xff\xda")
    normal = median_seconds(lambda: open_rgb(data, draft_size=size), 3)
    at_limit = with_scans(data, MAX_JPEG_SCANS)
    limit = median_seconds(lambda: open_rgb(at_limit, draft_size=size), 3)
    per_scan = (limit - normal) / (MAX_JPEG_SCANS - scans)
    bomb = with_scans(data, 1000)

    def refuse() -> None:
        try:
            open_rgb(bomb, draft_size=size)
        except ImageError:
            return
        raise AssertionError("a 1,000-scan JPEG was decoded")

    refused = median_seconds(refuse, 7)
    print(
        f"49 MP progressive JPEG: {scans} scans (an encoder's) {normal:.2f} s, "
        f"{MAX_JPEG_SCANS} (the limit) {limit:.2f} s, {per_scan * 1000:.0f} ms per extra scan; "
        f"1,000 scans ({len(bomb) / 1e6:.2f} MB, about {1000 * per_scan:.0f} s to decode) refused in "
        f"{refused * 1000:.1f} ms"
    )


def bench_heaviest_uploads(size: int) -> None:
    """The worst each accepted format allows within the pixel limits: time and memory."""
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8))
    smooth = noise.resize((40, 40)).convert("RGBA")  # upscaled, a PNG fits the 10 MiB upload limit
    cases = [
        ("JPEG", 7000, {"quality": 90}),
        ("JPEG", 7000, {"quality": 90, "progressive": True}),
        ("PNG", 4000, {}),
        ("WEBP", 4000, {"quality": 80, "method": 0}),
        ("AVIF", 4000, {"quality": 50, "speed": 10}),
    ]
    for fmt, side, options in cases:
        im = (smooth if fmt == "PNG" else noise).resize((side, side), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, fmt, **options)
        seconds, mib = decode_peak(buf.getvalue(), size)
        kind = f"{'progressive ' if options.get('progressive') else ''}{fmt}{' RGBA' if fmt == 'PNG' else ''}"
        print(
            f"heaviest upload, {side * side / 1e6:.0f} MP {kind} ({buf.tell() / 1e6:.1f} MB): "
            f"decode + resize {seconds:.2f} s, peak memory +{mib} MiB"
        )


def bench_camera_folder(folder: Path, size: int) -> None:
    """Draft against full decoding on the caller's own photos (say, a phone's 12 MP JPEGs)."""
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not photos:
        raise SystemExit(f"no .jpg files in {folder}")
    ratios = [bench_preprocessing(p.read_bytes(), size, p.name) for p in photos]
    print(f"{len(ratios)} photos from {folder}: median {statistics.median(ratios):.1f}x faster with draft mode")


def inference_options(release: ReleaseModel, package: Path, x: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """Each way tried of running the release model on ``x``, as a call returning probabilities."""
    model = release.model

    def eager() -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(model(normalise(x, release.mean, release.std)), 1)

    traced = torch.jit.optimize_for_inference(torch.jit.trace(model, normalise(x, release.mean, release.std)))

    def jit() -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(traced(normalise(x, release.mean, release.std)), 1)

    compiled = torch.compile(model, dynamic=False)  # inductor: needs a C++ compiler at run time

    def inductor() -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(compiled(normalise(x, release.mean, release.std)), 1)

    graph = load_graph(package, release, threads=1)

    def onnxruntime() -> torch.Tensor:
        # the not-a-pet distance follows; the others compute probabilities only
        return torch.from_numpy(graph(x.numpy())[:, :2])

    options: dict[str, Callable[[], torch.Tensor]] = {
        "no_grad (eager)": eager,
        "inference_mode (eager)": lambda: predict_proba(release, x),
        "TorchScript frozen": jit,
        "torch.compile (JIT inductor)": inductor,
        "ONNX Runtime (service)": onnxruntime,
    }
    if hasattr(model, "net"):  # the EfficientNet: compare with the default NCHW layout
        nchw: Any = copy.deepcopy(model).to(memory_format=torch.contiguous_format)

        def contiguous() -> torch.Tensor:
            with torch.inference_mode():
                inputs = normalise(x, release.mean, release.std)
                feats = nchw.net.forward_head(nchw.net.forward_features(inputs), pre_logits=True)
                return torch.softmax(nchw.classifier(feats), 1)

        options["inference_mode, NCHW layout"] = contiguous
    return options


def bench_inference_options(model_dir: Path, package: Path) -> None:
    torch.set_num_threads(1)
    release = load_release(model_dir)
    size = release.image_size
    x = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8)
    reference = predict_proba(release, x)
    for name, fn in inference_options(release, package, x).items():
        for _ in range(3):
            fn()
        same = torch.allclose(fn(), reference, atol=1e-4)
        print(f"batch 1, 1 thread, {name:<28} {median_seconds(fn, 15) * 1000:6.1f} ms  same predictions: {same}")
    xb = x.repeat(4, 1, 1, 1)
    per_image = median_seconds(lambda: predict_proba(release, xb), 7) / 4 * 1000
    print(f"micro-batch of 4, 1 thread, per image      {per_image:6.1f} ms (a sync worker sees one request at a time)")


def bench_end_to_end(model_dir: Path, package: Path, photos: list[bytes]) -> None:
    """What one request costs the service: decode + preprocess + forward, batch 1, one thread."""
    classifier = Classifier(str(model_dir), threads=1, package=str(package))
    assert classifier.engine == "onnxruntime", "the ONNX graph was refused: see the log line above"
    for data in photos[:3]:
        classifier.predict(data)
    times, decode = [], []
    for data in photos:
        start = time.perf_counter()
        decode.append(classifier.predict(data).decode_seconds)
        times.append(time.perf_counter() - start)
    print(
        f"end to end per shelter photo, batch 1, 1 thread ({len(photos)} photos): median "
        f"{statistics.median(times) * 1000:.1f} ms (decode + resize {statistics.median(decode) * 1000:.1f} ms), "
        f"p95 {sorted(times)[int(len(times) * 0.95)] * 1000:.1f} ms (target ≤ 40 ms)"
    )


# One pool process's classifier and photos, set once by _raw_start; the pool lives across
# rounds so that each raw slice measures photos, not model loading.
_RAW: dict[str, Any] = {}


def _raw_start(model_dir: str, package: str, photos: list[bytes], barrier: Any) -> None:
    _RAW.update(classifier=Classifier(model_dir, threads=1, package=package), photos=photos, barrier=barrier)


def _raw_slice(seconds: float) -> int:
    classifier, photos = _RAW["classifier"], _RAW["photos"]
    _RAW["barrier"].wait()  # all processes start together, and none can take two slices
    done, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        classifier.predict(photos[done % len(photos)])
        done += 1
    return done


WRK_LUA = """
local bodies = {}
local boundary = "----petbench"
for i, path in ipairs(PATHS) do
  local f = assert(io.open(path, "rb")); local data = f:read("*all"); f:close()
  bodies[i] = "--" .. boundary .. "\\r\\nContent-Disposition: form-data; name=\\"file\\"; filename=\\"p.jpg\\"\\r\\n" ..
              "Content-Type: image/jpeg\\r\\n\\r\\n" .. data .. "\\r\\n--" .. boundary .. "--\\r\\n"
end
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/predict", {["Content-Type"] = "multipart/form-data; boundary=" .. boundary},
                    bodies[(n % #bodies) + 1])
end
done = function(summary, latency, requests)
  io.write(string.format("WRK requests=%d seconds=%.3f rps=%.2f p50=%.2f p95=%.2f p99=%.2f errors=%d non2xx=%d\\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def rss_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB: PSS splits shared pages between the processes sharing them."""
    status = Path(f"/proc/{pid}/status").read_text()
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    pss = int(re.search(r"Pss:\s+(\d+)", rollup).group(1))  # type: ignore[union-attr]
    return rss, pss


def print_memory(mem: dict[str, tuple[int, int]]) -> None:
    for name, (rss, pss) in mem.items():
        print(f"  {name:<14} RSS {rss / 1024:7.1f} MiB  PSS {pss / 1024:7.1f} MiB")
    total_rss, total_pss = sum(r for r, _ in mem.values()), sum(p for _, p in mem.values())
    print(f"  total          RSS {total_rss / 1024:7.1f} MiB  PSS {total_pss / 1024:7.1f} MiB (shared pages once)")


def run_wrk(script: Path, url: str, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(row for row in out.splitlines() if row.startswith("WRK "))
    return {key: float(value) for key, value in (kv.split("=") for kv in line.split()[1:])}


def bench_throughput(
    model_dir: Path, package: Path, files: list[Path], workers: int, seconds: int, rounds: int
) -> float:
    """The real server under wrk against raw in-process throughput, in alternating slices
    (raw, direct, raw, through nginx, raw, direct, ..., raw), all kept running, so that the
    drift of a shared machine falls on every side alike; each server slice is compared with the
    raw slices either side of it. Direct is Gunicorn itself; through nginx is what a pod's
    clients get (deploy/k8s/app/nginx.conf in front, sharing the cores). Prints latency,
    errors and memory. Returns the median ratio through nginx."""
    nginx = nginx_binary()
    if not shutil.which("wrk") or nginx is None:
        raise SystemExit("wrk or nginx is not installed: run `make system-deps`")
    photos = [p.read_bytes() for p in files]
    ctx = mp.get_context("spawn")
    start_args = (str(model_dir), str(package), photos, ctx.Barrier(workers))
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text("PATHS = {" + ", ".join(f'"{p}"' for p in files) + "}\n" + WRK_LUA)
        with gunicorn(Path(tmp), model_dir, workers=workers, extra_env={"MODEL_PACKAGE": str(package)}) as server:
            ready = requests.get(server.url + "/ready", timeout=10)
            assert ready.json()["engine"] == "onnxruntime", ready.text
            upstream = server.url.removeprefix("http://")
            with nginx_in_front(Path(tmp), upstream, nginx) as proxy, ctx.Pool(workers, _raw_start, start_args) as pool:

                def raw_rate(slice_seconds: float) -> float:
                    return sum(pool.map(_raw_slice, [slice_seconds] * workers)) / slice_seconds

                for url in (server.url, proxy.url):
                    run_wrk(script, url, workers, 3)  # warm-up, every side
                raw_rate(2.0)
                raws = [raw_rate(seconds)]
                served: list[tuple[str, dict[str, float]]] = []
                for _ in range(rounds):
                    for name, url in (("direct", server.url), ("nginx", proxy.url)):
                        served.append((name, run_wrk(script, url, workers, seconds)))
                        raws.append(raw_rate(seconds))
            # Once the raw processes are gone: PSS splits shared pages among all who map them.
            mem = {"master": rss_kib(server.process.pid), **{f"worker {p}": rss_kib(p) for p in server.worker_pids()}}
    print(f"throughput: {workers} Gunicorn workers under wrk -c{workers} against {workers} processes x 1 thread")
    ratio = report_throughput(served, raws, rounds)
    print_memory(mem)
    return ratio


def report_throughput(served: list[tuple[str, dict[str, float]]], raws: list[float], rounds: int) -> float:
    """Print each server slice against the raw slices either side of it, then the medians;
    return the median ratio through nginx."""
    ratios: dict[str, list[float]] = {"direct": [], "nginx": []}
    for (name, got), before, after in zip(served, raws, raws[1:], strict=False):
        ratios[name].append(got["rps"] / ((before + after) / 2))
        print(
            f"  raw {before:6.1f} photos/s | {name:6} {got['rps']:6.1f} req/s, p50 {got['p50']:.1f} ms, "
            f"p95 {got['p95']:.1f} ms, p99 {got['p99']:.1f} ms, errors {got['errors']:.0f}, non-2xx "
            f"{got['non2xx']:.0f} | raw {after:6.1f} photos/s → {ratios[name][-1]:5.1%}"
        )
    for name, what in (("direct", "Gunicorn directly"), ("nginx", "through the pod's nginx")):
        side = ratios[name]
        errors = sum(s["errors"] + s["non2xx"] for n, s in served if n == name)
        print(
            f"server / raw in-process, {what}: median {statistics.median(side):5.1%} over {rounds} rounds "
            f"(from {min(side):.1%} to {max(side):.1%}), {errors:.0f} errors (target ≥ 85%, 0 errors)"
        )
    return statistics.median(ratios["nginx"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models")
    ap.add_argument("--package", type=Path, default=ROOT / "build" / "model.onnx", help="make export-model")
    ap.add_argument("--photos", type=Path, default=PETS)
    ap.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")))
    ap.add_argument("--seconds", type=int, default=10, help="each raw and each server slice")
    ap.add_argument("--rounds", type=int, default=5, help="server slices, each between two raw slices")
    ap.add_argument("--camera", type=Path, help="also time draft decoding on the JPEGs in this folder")
    args = ap.parse_args(argv)
    found = sorted(args.photos.rglob("*.jpg"))
    if len(found) < 48:
        raise SystemExit(f"real photos not found at {args.photos}: run `make data`, or set PETS_DIR to a photo folder")
    size = load_release(args.model).image_size
    rng = random.Random(0)
    pets = rng.sample(found, 48)
    with tempfile.TemporaryDirectory() as tmp:
        bigs = []
        for i, source in enumerate(pets[:2]):
            path = Path(tmp) / f"camera-{i}.jpg"
            path.write_bytes(camera_jpeg(source, seed=i))
            bigs.append(path)
        print(
            f"workload: {len(pets)} shelter photos (180x180) + {len(bigs)} 12 MP camera JPEGs "
            f"({bigs[0].stat().st_size / 1e6:.1f} MB), one 12 MP photo in every 25 requests"
        )
        files = pets[:24] + bigs[:1] + pets[24:] + bigs[1:]
        bench_preprocessing(bigs[0].read_bytes(), size, "sensor noise 6")
        bench_preprocessing(camera_jpeg(pets[0], noise=2.0), size, "sensor noise 2")
        bench_preprocessing(camera_jpeg(pets[0], noise=0.0), size, "no noise")
        if args.camera:
            bench_camera_folder(args.camera, size)
        bench_hostile_jpeg(size)
        bench_heaviest_uploads(size)
        bench_inference_options(args.model, args.package)
        bench_end_to_end(args.model, args.package, [p.read_bytes() for p in pets])
        bench_throughput(args.model, args.package, files, args.workers, args.seconds, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
