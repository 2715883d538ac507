"""`make smoke`: is the deployed service alive, ready and right? Any miss exits 1.

    python -m tools.smoke --url http://127.0.0.1:8000

Checks, in order: `/health` says healthy; `/ready` is ready and names a model version; a
known cat photo is predicted cat and a known dog photo dog; `/metrics` counted both
predictions and reports model_ready 1, as Prometheus will read it. "Known" photos are
test-split photos that the offline evaluation (reports/test_predictions.csv) got right with
at least 99% confidence, so a miss means the deployment differs from what was evaluated, not
that the model met a hard photo.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from ml.config import ConfigError, load_params


class SmokeError(Exception):
    """A check failed; the message says which and what was seen."""


@dataclass(frozen=True)
class Check:
    name: str
    detail: str


def known_photos(predictions: Path, source: Path, min_confidence: float = 0.99) -> dict[str, Path]:
    """The first test photo of each class the offline evaluation got right and was sure of."""
    if not predictions.is_file():
        raise SmokeError(f"{predictions} is missing: run `make evaluate` (or `make train`) first")
    found: dict[str, Path] = {}
    with predictions.open(newline="") as f:
        for row in csv.DictReader(f):
            label, p_dog = row["actual"], float(row["prob_dog"])
            confident = p_dog >= min_confidence if label == "dog" else p_dog <= 1 - min_confidence
            if label not in found and row["predicted"] == label and confident and (source / row["path"]).is_file():
                found[label] = source / row["path"]
    missing = {"cat", "dog"} - found.keys()
    if missing:
        raise SmokeError(f"no confidently right {', '.join(sorted(missing))} photo under {source} in {predictions}")
    return found


def read_metrics(session: requests.Session, url: str) -> tuple[dict[str, float], float | None]:
    """predictions_total by class, and model_ready, from the service's /metrics."""
    counts, ready = {"cat": 0.0, "dog": 0.0}, None
    for family in text_string_to_metric_families(session.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "predictions_total" and sample.labels.get("class") in counts:
                counts[sample.labels["class"]] += sample.value
            elif sample.name == "model_ready":
                ready = sample.value
    return counts, ready


def run_checks(url: str, photos: dict[str, Path], report: Callable[[Check], None]) -> None:
    session = requests.Session()
    health = session.get(f"{url}/health", timeout=10)
    if health.status_code != 200 or health.json().get("status") != "healthy":
        raise SmokeError(f"/health: {health.status_code} {health.text[:200]}")
    report(Check("health", "healthy"))
    ready = session.get(f"{url}/ready", timeout=10)
    if ready.status_code != 200 or ready.json().get("ready") is not True:
        raise SmokeError(f"/ready: {ready.status_code} {ready.text[:200]}")
    # The engine is reported, not required: an eager fallback is slower, not wrong.
    report(Check("ready", f"model {ready.json().get('model_version')} ({ready.json().get('engine')})"))
    before, _ = read_metrics(session, url)
    for label, path in sorted(photos.items()):
        upload = {"file": ("photo.jpg", path.read_bytes(), "image/jpeg")}
        resp = session.post(f"{url}/predict", files=upload, timeout=30)
        if resp.status_code != 200:
            raise SmokeError(f"/predict {label} photo {path.name}: {resp.status_code} {resp.text[:200]}")
        body = resp.json()
        if body.get("prediction") != label:
            raise SmokeError(f"/predict: known {label} photo {path.name} came back {body.get('prediction')!r}")
        report(Check(f"predict {label}", f"{path.name} → {label} ({body['confidence']:.3f})"))
    after, model_ready = read_metrics(session, url)
    for label in photos:
        if after[label] < before[label] + 1:
            counted = f"{before[label]:g} → {after[label]:g}"
            raise SmokeError(f"/metrics: predictions_total{{class={label!r}}} went {counted}")
    if model_ready != 1:
        # What Prometheus alerts on: 0 here pages PetClassifierModelNotReady within minutes.
        raise SmokeError(f"/metrics: model_ready is {model_ready} while /ready says ready")
    counted = f"predictions_total cat {after['cat']:g}, dog {after['dog']:g}, model_ready {model_ready:g}"
    report(Check("metrics", counted))


def wait_until_up(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            requests.get(f"{url}/health", timeout=2)
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise SmokeError(f"{url} did not answer within {seconds:.0f} s") from None
            time.sleep(0.5)


def service_url(text: str) -> str:
    """An argparse type: the service's base URL, refused at once when requests cannot fetch it
    (it was retried until --wait ran out, then reported as a service that did not answer)."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r}")
    return text.rstrip("/")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", type=service_url, default="http://127.0.0.1:8000")
    ap.add_argument("--predictions", type=Path, default=Path("reports/test_predictions.csv"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--source", type=Path, help="photo folder (default: params data.source)")
    ap.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the service to answer")
    args = ap.parse_args(argv)
    url = args.url
    try:
        source = args.source or Path(load_params(args.params).data.source)
        photos = known_photos(args.predictions, source)
        wait_until_up(url, args.wait)
        run_checks(url, photos, lambda c: print(f"  ok  {c.name:<12} {c.detail}"))
    except (SmokeError, ConfigError) as exc:
        print(f"SMOKE FAILED against {url}: {exc}", file=sys.stderr)
        return 1
    except requests.RequestException as exc:
        print(f"SMOKE FAILED against {url}: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"smoke tests passed against {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
