"""`make replay`: send labelled test photos to a running service, with feedback.

    python -m tools.replay --url http://127.0.0.1:8000 --rate 5 --count 200 --feedback-share 0.5
    python -m tools.replay --mislabel   # feedback with the wrong label: live accuracy drops

Photos come from the manifest's test split (never used for training), so the class mix,
confidence and live-accuracy panels and alerts get real data.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import requests
from tqdm import tqdm

from ml.config import load_params
from ml.data import MANIFEST, DataError, read_manifest, select
from tools.smoke import service_url


def replay(
    url: str, photos: list[tuple[Path, str]], rate: float, feedback_share: float, mislabel: bool, seed: int
) -> dict[str, int]:
    rng = random.Random(seed)
    counts = {"sent": 0, "ok": 0, "correct": 0, "feedback": 0, "errors": 0}
    session = requests.Session()
    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    for path, label in tqdm(photos, desc="replaying", unit="photo", dynamic_ncols=True):
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += interval
        counts["sent"] += 1
        try:
            resp = session.post(f"{url}/predict", files={"file": (path.name, path.read_bytes())}, timeout=30)
        except requests.RequestException:
            counts["errors"] += 1
            continue
        if resp.status_code != 200:
            counts["errors"] += 1
            continue
        body = resp.json()
        counts["ok"] += 1
        counts["correct"] += body["prediction"] == label
        if rng.random() < feedback_share:
            told = ("dog" if label == "cat" else "cat") if mislabel else label
            fb = session.post(
                f"{url}/feedback", json={"feedback_token": body["feedback_token"], "label": told}, timeout=30
            )
            counts["feedback"] += fb.status_code == 200
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", type=service_url, default="http://127.0.0.1:8000")
    ap.add_argument("--rate", type=float, default=5.0, help="photos per second (0 = as fast as possible)")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--feedback-share", type=float, default=0.5)
    ap.add_argument("--mislabel", action="store_true", help="send the wrong label as feedback")
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--source", type=Path, help="photo folder (default: params data.source)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not 0 <= args.feedback_share <= 1 or args.count < 1 or args.rate < 0:
        ap.error("--feedback-share must be in [0, 1], --count >= 1, --rate >= 0")
    try:
        source = args.source or Path(load_params().data.source)
        rows = select(read_manifest(args.manifest), "test")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = random.Random(args.seed).sample(rows, min(args.count, len(rows)))
    counts = replay(
        args.url, [(source / r.path, r.label) for r in rows], args.rate, args.feedback_share, args.mislabel, args.seed
    )
    print(
        f"sent {counts['sent']}, answered {counts['ok']}, right {counts['correct']}, "
        f"feedback {counts['feedback']}{' (mislabelled)' if args.mislabel else ''}, errors {counts['errors']}"
    )
    return 0 if counts["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
