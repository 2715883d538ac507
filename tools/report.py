"""`make report`: what the running system saw over a window, from its Prometheus.

    python -m tools.report --prometheus http://127.0.0.1:9090 --window 1h --out build/report

Writes report.md and a self-contained report.html (pictures embedded) beside their PNGs: live
accuracy from staff feedback against the model card's test accuracy, overall and per class,
precision, recall and F1 from feedback, the confusion matrix, latency percentiles, and refused
uploads by reason. Jenkins archives it after Smoke Tests; `make replay` ends by writing it.

Counts are exact, not `increase()`'s extrapolation: each counter's raw samples are read and
summed across resets, a series first seen inside the window counting from zero (a labelled
counter appears at its first increment). Curves over time use `rate()`, as the dashboards do.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import re
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from ml.fileio import atomic_writer
from ml.metrics import confusion_png, save_png
from tools import ROOT

CLASSES = ("cat", "dog")
LOOKBACK_S = 300  # Prometheus's staleness: a series with no sample this long before the window is new
DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
UNITS = (7 * 86400, 86400, 3600, 60, 1)
ENDPOINTS = ("api.predict", "api.predict_batch", "api.feedback")


class ReportError(Exception):
    """Something the reader must fix before a report can be written."""


def duration(text: str) -> int:
    """A Prometheus duration ("90m", "1h30m", "7d") in seconds."""
    match = DURATION.match(text.strip())
    seconds = sum(int(n) * unit for n, unit in zip(match.groups(), UNITS, strict=True) if n) if match else 0
    if not 0 < seconds <= 31 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration from 1s to 31d, such as 15m, 1h or 2h30m")
    return seconds


class Prometheus:
    """The HTTP API's two reads, with every failure said as a ReportError."""

    def __init__(self, url: str, timeout: float = 30) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        try:
            resp = requests.get(f"{self.url}{path}", params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ReportError(
                f"no Prometheus answers at {self.url} ({type(exc).__name__}): start one with `make monitor-up`, "
                "or pass PROM= (a Kind cluster publishes its Prometheus on :9090)"
            ) from None
        try:
            body = resp.json()
        except ValueError:
            raise ReportError(f"{self.url} answered {resp.status_code} without JSON: is it Prometheus?") from None
        if body.get("status") != "success":
            raise ReportError(f"Prometheus refused {params.get('query')!r}: {body.get('error', resp.status_code)}")
        return body["data"]["result"]

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query", {"query": expr, "time": at}))

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step}))


def increase(samples: Iterable[tuple[float, float]], start: float) -> float:
    """What a counter counted after ``start``: rises summed, a drop read as a restart from zero."""
    before = [v for t, v in samples if t <= start]
    prev, total = (before[-1] if before else 0.0), 0.0
    for t, v in samples:
        if t > start:
            total += v - prev if v >= prev else v
            prev = v
    return total


def counted(
    prom: Prometheus, selector: str, by: tuple[str, ...], start: float, end: float
) -> dict[tuple[str, ...], float]:
    """Exact counts of a counter's series over [start, end], summed by the labels ``by``."""
    span = math.ceil(end - start) + LOOKBACK_S
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for series in prom.query(f"{selector}[{span}s]", end):
        samples = [(float(t), float(v)) for t, v in series["values"]]
        out[tuple(series["metric"].get(label, "") for label in by)] += increase(samples, start)
    return dict(out)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """histogram_quantile's interpolation over cumulative bucket counts (upper bound: count)."""
    bounds = sorted(buckets)
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for le in bounds:
        if buckets[le] >= rank:
            if math.isinf(le):
                return lower  # as Prometheus: the highest finite bound
            return lower + (le - lower) * (rank - below) / (buckets[le] - below) if buckets[le] > below else le
        lower, below = le, buckets[le]
    return lower


@dataclass
class Figures:
    """Everything the report says, read from Prometheus and the model card."""

    job: str
    start: float
    end: float
    versions: list[str]
    card: dict[str, Any] | None
    card_note: str
    test_accuracy: float | None
    predictions: dict[str, float]
    not_a_pet: dict[str, float]  # predicted class → photos flagged as neither cat nor dog
    feedback: dict[tuple[str, str], float]  # (true class, "correct"/"incorrect") → count
    rejected: dict[str, float]
    requests: dict[tuple[str, str], float]  # (endpoint, status) → count
    latency: dict[str, dict[str, float | None]]  # endpoint → {"p50", "p95", "p99"}
    series: dict[str, Any] = field(default_factory=dict)


def collect(prom: Prometheus, job: str, start: float, end: float, card_path: Path) -> Figures:
    sel, endpoints = f'job="{job}"', f'endpoint=~"{"|".join(ENDPOINTS)}"'
    if not prom.query(f"count_over_time(up{{{sel}}}[{int(end - start)}s])", end):
        raise ReportError(f"Prometheus at {prom.url} scraped no target of job {job!r} in the window: a wrong --job?")
    versions = sorted(
        {
            r["metric"].get("version", "")
            for r in prom.query(f"last_over_time(model_info{{{sel}}}[{int(end - start)}s])", end)
        }
        - {""}
    )
    accuracy = prom.query(f"max(last_over_time(model_test_accuracy{{{sel}}}[{int(end - start)}s]))", end)
    card, note = read_card(card_path, versions)
    buckets = counted(
        prom, f"flask_http_request_duration_seconds_bucket{{{sel},{endpoints}}}", ("endpoint", "le"), start, end
    )
    latency = {}
    for endpoint in ENDPOINTS:
        cumulative = {float(le): n for (e, le), n in buckets.items() if e == endpoint}
        latency[endpoint] = {f"p{round(q * 100)}": quantile(q, cumulative) for q in (0.5, 0.95, 0.99)}
    return Figures(
        job=job,
        start=start,
        end=end,
        versions=versions,
        card=card,
        card_note=note,
        test_accuracy=float(accuracy[0]["value"][1]) if accuracy else None,
        predictions={k[0]: v for k, v in counted(prom, f"predictions_total{{{sel}}}", ("class",), start, end).items()},
        not_a_pet={k[0]: v for k, v in counted(prom, f"not_a_pet_total{{{sel}}}", ("class",), start, end).items()},
        feedback={
            (k[0], k[1]): v
            for k, v in counted(prom, f"feedback_total{{{sel}}}", ("class", "result"), start, end).items()
        },
        rejected={
            k[0]: v for k, v in counted(prom, f"rejected_inputs_total{{{sel}}}", ("reason",), start, end).items() if v
        },
        requests={
            (k[0], k[1]): v
            for k, v in counted(
                prom,
                f"flask_http_request_duration_seconds_count{{{sel},{endpoints}}}",
                ("endpoint", "status"),
                start,
                end,
            ).items()
            if v
        },
        latency=latency,
        series=over_time(prom, sel, start, end),
    )


def read_card(path: Path, versions: list[str]) -> tuple[dict[str, Any] | None, str]:
    """The model card for per-class test figures, said plainly when it is not the served model's."""
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"No model card read from {path} ({type(exc).__name__}): per-class test figures are missing."
    if versions and card.get("version") not in versions:
        served = ", ".join(versions)
        return (
            None,
            f"The card at {path} is for {card.get('version')}, not the served {served}: no per-class test figures.",
        )
    return card, f"Test figures: the model card of {card.get('version')} ({path})."


def over_time(prom: Prometheus, sel: str, start: float, end: float) -> dict[str, Any]:
    """Curves for the pictures: predictions per second by class, and /predict's latency."""
    step = max(1.0, (end - start) / 120)
    window = f"{int(max(60, 4 * step))}s"
    bucket = f'flask_http_request_duration_seconds_bucket{{{sel},endpoint="api.predict"}}'
    curves: dict[str, Any] = {
        "by_class": prom.query_range(f"sum by (class) (rate(predictions_total{{{sel}}}[{window}]))", start, end, step)
    }
    for q in (0.5, 0.95, 0.99):
        expr = f"histogram_quantile({q}, sum by (le) (rate({bucket}[{window}])))"
        curves[f"p{round(q * 100)}"] = prom.query_range(expr, start, end, step)
    return curves


def confusion(feedback: dict[tuple[str, str], float]) -> list[list[int]]:
    """Rows: the class staff said; columns: the class the service answered (binary, so a wrong
    answer is the other class)."""
    cm = [[0, 0], [0, 0]]
    for (true, result), n in feedback.items():
        if true in CLASSES:
            i = CLASSES.index(true)
            cm[i][i if result == "correct" else 1 - i] += round(n)
    return cm


def scores(cm: list[list[int]]) -> dict[str, Any]:
    """Accuracy with its 95% Wilson interval, and per class precision, recall (the class's live
    accuracy), F1 and support."""
    n = sum(map(sum, cm))
    right = sum(cm[i][i] for i in range(len(CLASSES)))
    per_class = {}
    for i, c in enumerate(CLASSES):
        support, answered = sum(cm[i]), sum(row[i] for row in cm)
        precision = cm[i][i] / answered if answered else None
        recall = cm[i][i] / support if support else None
        f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if support else None)
        per_class[c] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
            "interval": wilson(cm[i][i], support),
        }
    return {"n": n, "accuracy": right / n if n else None, "interval": wilson(right, n), "per_class": per_class}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The 95% Wilson score interval of k successes in n: honest for the few dozen answers staff
    may give in a window, where k/n ± 2σ would run past 100%."""
    if n == 0:
        return None
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_png(live: dict[str, Any], test: dict[str, float | None], path: Path) -> Path:
    """Live accuracy (with its interval) beside the test split's, overall and per class."""
    import matplotlib.pyplot as plt

    groups = ["all", *CLASSES]
    fig, ax = plt.subplots(figsize=(5.6, 3.4), dpi=120)
    lows = [t for t in test.values() if t is not None]
    for i, group in enumerate(groups):
        value, bounds = live[group]
        if value is not None and bounds is not None:
            err = [[value - bounds[0]], [bounds[1] - value]]
            ax.bar(i - 0.18, value, 0.34, yerr=err, capsize=4, color="#4C72B0", label="live (feedback)")
            lows.append(bounds[0])
        expected = test.get(group)
        if expected is not None:
            ax.bar(i + 0.18, expected, 0.34, color="#BBBBBB", label="test split (card)")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        ax.legend(unique.values(), unique.keys(), loc="lower right", fontsize=8)
    ax.set_ylim(max(0.0, min(lows, default=0.55) - 0.05), 1.01)
    ax.set_xticks(range(len(groups)), labels=groups)
    ax.set_ylabel("accuracy")
    ax.set_title("Live accuracy (95% interval) and test accuracy")
    fig.tight_layout()
    return save_png(fig, path)


def traffic_png(series: dict[str, Any], start: float, end: float, path: Path) -> Path:
    """Predictions per second by class, and /predict's latency percentiles, over the window."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    def points(result: dict[str, Any]) -> tuple[list[datetime], list[float]]:
        pairs = [(datetime.fromtimestamp(float(t), UTC), float(v)) for t, v in result["values"]]
        pairs = [(t, v) for t, v in pairs if math.isfinite(v)]
        return [t for t, _ in pairs], [v for _, v in pairs]

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 4.8), dpi=120, sharex=True)
    for result in series["by_class"]:
        top.plot(*points(result), label=result["metric"].get("class", "?"))
    top.set_ylabel("photos / s")
    top.set_title("Predictions by class")
    for name in ("p50", "p95", "p99"):
        for result in series[name]:
            times, values = points(result)
            bottom.plot(times, [v * 1000 for v in values], label=name)
    bottom.set_ylabel("ms")
    bottom.set_title("/predict latency")
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))
    bottom.set_xlabel("UTC")
    bottom.set_xlim(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))
    for ax in (top, bottom):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no traffic", transform=ax.transAxes, ha="center", va="center", color="grey")
    fig.tight_layout()
    return save_png(fig, path)


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def share(part: float, whole: float) -> str:
    return f" ({part / whole:.1%})" if whole else ""


def ms(x: float | None) -> str:
    return "–" if x is None else f"{1000 * x:.0f} ms" if x >= 0.01 else f"{1000 * x:.1f} ms"


def interval(i: tuple[float, float] | None) -> str:
    return "" if i is None else f" ({pct(i[0])}–{pct(i[1])})"


def test_figures(f: Figures) -> dict[str, float | None]:
    """Overall from the served model's own gauge; per class (recall) from its card."""
    per_class = (f.card or {}).get("test_metrics", {}).get("per_class", {})
    return {"all": f.test_accuracy, **{c: per_class.get(c, {}).get("recall") for c in CLASSES}}


def verdict(live: dict[str, Any], test: float | None) -> str:
    if live["accuracy"] is None:
        return "No staff feedback in the window: live accuracy is unknown."
    if test is None:
        return "The served model's test accuracy is unknown: nothing to compare live accuracy with."
    low, high = live["interval"]
    if test > high:
        return (
            f"**Below the test split**: even the interval's top, {pct(high)}, is under the test accuracy {pct(test)}."
        )
    if test < low:
        return f"Above the test split: the interval's bottom, {pct(low)}, is over the test accuracy {pct(test)}."
    return f"Consistent with the test split: its accuracy {pct(test)} lies inside the live interval."


def markdown(f: Figures, live: dict[str, Any], pictures: dict[str, str]) -> str:
    test = test_figures(f)
    start, end = (datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S") for t in (f.start, f.end))
    served = sum(f.predictions.values())
    total = sum(f.requests.values())
    errors = sum(n for (_, status), n in f.requests.items() if status.startswith("5"))
    p = f.latency["api.predict"]
    flagged = sum(f.not_a_pet.values())
    lines = [
        "# Pet classifier: report after deploy",
        "",
        f"Window {start} to {end} UTC, job `{f.job}`. Model served: {', '.join(f.versions) or 'none seen'}.",
        "",
        "## Summary",
        "",
        "| measure | in the window |",
        "|---|---|",
        f"| Photos classified | {served:.0f} ({', '.join(f'{c} {f.predictions.get(c, 0):.0f}' for c in CLASSES)}) |",
        f"| Flagged as not a pet | {flagged:.0f}{share(flagged, served)} |",
        f"| Uploads refused | {sum(f.rejected.values()):.0f} |",
        f"| Server errors (5xx) | {errors:.0f} of {total:.0f} requests |",
        f"| Staff feedback | {live['n']} |",
        f"| Live accuracy (95% interval) | {pct(live['accuracy'])}{interval(live['interval'])} |",
        f"| Test accuracy (model card) | {pct(test['all'])} |",
        f"| /predict latency | p50 {ms(p['p50'])}, p95 {ms(p['p95'])}, p99 {ms(p['p99'])} |",
        "",
        verdict(live, test["all"]),
        "",
        "## Live accuracy against the model card",
        "",
        "Live accuracy is the share of staff feedback that agreed with the answer; a class's is its recall.",
        f.card_note,
        "",
        "| class | feedback | live accuracy (95% interval) | test accuracy |",
        "|---|---:|---:|---:|",
        f"| all | {live['n']} | {pct(live['accuracy'])}{interval(live['interval'])} | {pct(test['all'])} |",
        *(
            f"| {c} | {live['per_class'][c]['support']} | {pct(live['per_class'][c]['recall'])}"
            f"{interval(live['per_class'][c]['interval'])} | {pct(test[c])} |"
            for c in CLASSES
        ),
        "",
        f"![Live and test accuracy]({pictures['accuracy']})",
        "",
        "## Precision, recall and F1 from feedback",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {c} | {pct(s['precision'])} | {pct(s['recall'])} | {pct(s['f1'])} | {s['support']} |"
            for c, s in live["per_class"].items()
        ),
        "",
        f"![Confusion matrix from feedback]({pictures['confusion']})",
        "",
        "## Traffic and latency",
        "",
        "| endpoint | requests | 5xx | p50 | p95 | p99 |",
        "|---|---:|---:|---:|---:|---:|",
        *endpoint_rows(f),
        "",
        f"![Predictions and latency over the window]({pictures['traffic']})",
        "",
        "## Refused uploads by reason",
        "",
        *(
            [
                "| reason | uploads |",
                "|---|---:|",
                *(f"| {r} | {n:.0f} |" for r, n in sorted(f.rejected.items(), key=lambda kv: -kv[1])),
            ]
            if f.rejected
            else ["None."]
        ),
        "",
        "## Photos flagged as not a pet",
        "",
        f"{flagged:.0f} of {served:.0f} photos classified{share(flagged, served)} were flagged as showing neither a "
        "cat nor a dog (`not_a_pet` in the answer); the answer still named the likelier class: "
        + (", ".join(f"{c} {f.not_a_pet.get(c, 0):.0f}" for c in CLASSES) if flagged else "none flagged")
        + ". On the test split the release flags "
        + (
            f"{f.card['not_a_pet']['test_flagged']:.2%} of pets."
            if f.card and f.card.get("not_a_pet", {}).get("test_flagged") is not None
            else "an unknown share of pets (no not_a_pet.test_flagged in the model card)."
        ),
        "",
        "---",
        f"Counts are exact, read from each counter's raw samples in Prometheus; curves use `rate()`. "
        f"Written {datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S')} UTC by `make report`.",
        "",
    ]
    return "\n".join(lines)


def endpoint_rows(f: Figures) -> list[str]:
    rows = []
    for endpoint in ENDPOINTS:
        n = sum(v for (e, _), v in f.requests.items() if e == endpoint)
        errors = sum(v for (e, s), v in f.requests.items() if e == endpoint and s.startswith("5"))
        lat = f.latency.get(endpoint, {})
        percentiles = " | ".join(ms(lat.get(p)) for p in ("p50", "p95", "p99"))
        rows.append(f"| {endpoint} | {n:.0f} | {errors:.0f} | {percentiles} |")
    return rows


HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Pet classifier: report after deploy</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5rem 0; }} th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.6rem; }}
img {{ max-width: 100%; }} code {{ background: #f3f3f3; padding: 0 0.2rem; }}
</style></head><body>
{body}</body></html>
"""


def html(md: str, out: Path, pictures: dict[str, str]) -> str:
    """The Markdown as one HTML file with its pictures inside it, to open or mail on its own."""
    from markdown_it import MarkdownIt

    for name in pictures.values():
        data = base64.b64encode((out / name).read_bytes()).decode()
        md = md.replace(f"]({name})", f"](data:image/png;base64,{data})")
    return HTML.format(body=MarkdownIt("commonmark").enable("table").render(md))


def write(f: Figures, out: Path) -> Path:
    """The pictures, then report.md and report.html; each file whole or not at all."""
    cm = confusion(f.feedback)
    live = scores(cm)
    groups = {"all": (live["accuracy"], live["interval"])}
    groups.update({c: (s["recall"], s["interval"]) for c, s in live["per_class"].items()})
    pictures = {"accuracy": "accuracy.png", "confusion": "confusion.png", "traffic": "traffic.png"}
    accuracy_png(groups, test_figures(f), out / pictures["accuracy"])
    confusion_png(cm, out / pictures["confusion"], title="From staff feedback")
    traffic_png(f.series, f.start, f.end, out / pictures["traffic"])
    md = markdown(f, live, pictures)
    with atomic_writer(out / "report.md") as fh:
        fh.write(md)
    with atomic_writer(out / "report.html") as fh:
        fh.write(html(md, out, pictures))
    return out / "report.html"


def settle(prom: Prometheus, job: str, since: float, timeout: float) -> float:
    """Wait for a scrape of every target of ``job`` after ``since``, so the last requests count;
    the time of the oldest last scrape (the window's end)."""
    deadline = time.monotonic() + timeout
    while True:
        last = prom.query(f'min(timestamp(up{{job="{job}"}}))', time.time())
        if not last:  # no target of that job at all: nothing to wait for (collect says so)
            return since
        scraped = float(last[0]["value"][1])
        if scraped >= since or time.monotonic() > deadline:
            return min(time.time(), max(scraped, since))
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090", help="its URL (Kind and the local stack: :9090)")
    ap.add_argument("--job", default="pet-classifier", help="the API's scrape job")
    ap.add_argument("--window", type=duration, default=duration("1h"), help="how far back from now: 15m, 1h, 2d...")
    ap.add_argument(
        "--card", type=Path, default=ROOT / "models" / "model.json", help="the model card (per-class test figures)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "report")
    ap.add_argument("--settle", type=float, default=60, help="seconds to wait for a scrape after now")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", args.job):
        ap.error(f"--job {args.job!r}: a scrape job's name, such as pet-classifier")
    prom = Prometheus(args.prometheus)
    try:
        end = settle(prom, args.job, time.time(), args.settle)
        figures = collect(prom, args.job, end - args.window, end, args.card)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    page = write(figures, args.out)
    print(
        f"report: {page} (and report.md): {sum(figures.predictions.values()):.0f} photos, "
        f"{sum(figures.feedback.values()):.0f} feedback, model {', '.join(figures.versions) or 'none seen'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
