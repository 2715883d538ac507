"""Heavy and hostile JPEGs for the benchmarks and the tests: a camera-sized photo made from a
real one, a progressive JPEG with as many scans as asked, and the time and memory one decode
takes in a fresh process."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tools import ROOT


def camera_jpeg(source: Path, seed: int = 0, noise: float = 6.0) -> bytes:
    """A 4000x3000 JPEG: a real photo upscaled plus sensor-like noise (which makes the file,
    and its entropy decoding, as heavy as a camera's: about 2.8 MB at noise 6)."""
    rng = np.random.default_rng(seed)
    base = Image.open(source).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
    arr = np.asarray(base, dtype=np.int16) + rng.normal(0, noise, (3000, 4000, 3)).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def with_scans(progressive: bytes, scans: int) -> bytes:
    """The JPEG with its last scan repeated until it holds ``scans`` scans: what LJT-01-003
    exploits, as each copy costs a few bytes and a full pass over the image."""
    last, have = progressive.rindex(b"\xff\xda"), progressive.count(b"\xff\xda")
    assert scans >= have and progressive.endswith(b"\xff\xd9")  # the last scan runs to end-of-image
    return progressive[:-2] + progressive[last:-2] * (scans - have) + progressive[-2:]


# Run in a fresh process so that the high-water mark is this decode's alone (Linux: "5" resets it).
_PEAK_SCRIPT = """
import re, sys, time
from ml.images import open_rgb, to_array
def kib(field):
    return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))
data = sys.stdin.buffer.read()
open("/proc/self/clear_refs", "w").write("5")
before, start = kib("VmRSS"), time.perf_counter()
to_array(open_rgb(data, draft_size=int(sys.argv[1])), int(sys.argv[1]))
print(time.perf_counter() - start, (kib("VmHWM") - before) // 1024)
"""


def decode_peak(data: bytes, size: int = 256) -> tuple[float, int]:
    """(seconds, MiB): one decode and resize of ``data`` and how much it grew a fresh process."""
    run = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(size)], input=data, capture_output=True, check=True, cwd=ROOT
    )
    seconds, mib = run.stdout.split()
    return float(seconds), int(mib)
