"""`make report`: the post-deployment report, from a real Prometheus after real traffic, and the
arithmetic it rests on (exact counts across restarts, histogram quantiles, Wilson intervals)."""

from __future__ import annotations

import json
import math
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.conftest import jpeg_bytes
from tests.helpers import save_tiny_release
from tests.stack import prometheus, query, wait_for
from tools.local_server import free_port, gunicorn
from tools.report import Prometheus, collect, confusion, duration, increase, main, quantile, scores, settle, wilson

# --- the arithmetic -------------------------------------------------------------------------


def test_a_counter_counts_what_rose_in_the_window_across_a_restart() -> None:
    samples = [(0, 5.0), (10, 7.0), (20, 9.0), (30, 2.0), (40, 4.0)]
    # From 10: +2 (to 9), a restart that had counted 2, then +2.
    assert increase(samples, 10) == 6
    # A series first seen inside the window was born at zero: its first value counts.
    assert increase([(15, 3.0), (25, 4.0)], 10) == 4
    assert increase(samples, 40) == 0


def test_quantiles_interpolate_as_prometheus_does() -> None:
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, math.inf: 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.7, buckets) == pytest.approx(0.1 + 0.4 * 20 / 40)
    assert quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * 9 / 10)
    assert quantile(0.99, {0.1: 1.0, math.inf: 10.0}) == 0.1  # past the last bound: that bound
    assert quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None


def test_feedback_makes_the_confusion_matrix_and_scores() -> None:
    feedback = {("cat", "correct"): 8.0, ("cat", "incorrect"): 2.0, ("dog", "correct"): 9.0, ("dog", "incorrect"): 1.0}
    cm = confusion(feedback)
    assert cm == [[8, 2], [1, 9]]  # rows: what staff said; a wrong answer is the other class
    s = scores(cm)
    assert s["n"] == 20 and s["accuracy"] == pytest.approx(17 / 20)
    assert s["per_class"]["cat"]["recall"] == pytest.approx(0.8)
    assert s["per_class"]["cat"]["precision"] == pytest.approx(8 / 9)
    assert s["per_class"]["dog"]["f1"] == pytest.approx(2 * (9 / 11) * 0.9 / (9 / 11 + 0.9))
    assert scores([[0, 0], [0, 0]])["accuracy"] is None


def test_wilson_intervals_stay_inside_zero_and_one() -> None:
    low, high = wilson(10, 10) or (0, 0)
    assert high == 1.0 and 0.65 < low < 0.75  # 10 of 10 is not proof of 100%
    low, high = wilson(50, 100) or (0, 0)
    assert low == pytest.approx(0.404, abs=1e-3) and high == pytest.approx(0.596, abs=1e-3)
    assert wilson(0, 0) is None


@pytest.mark.parametrize("text", ["0s", "1x", "", "h", "-5m", "32d", "1h 30m"])
def test_a_window_that_is_no_duration_is_refused(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--window", text])
    assert exc.value.code == 2 and "--window" in capsys.readouterr().err


def test_durations_read_as_prometheus_writes_them() -> None:
    assert duration("90m") == duration("1h30m") == 5400
    assert duration("2d") == 172800 and duration("15s") == 15


def test_without_prometheus_it_says_where_it_looked_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["--prometheus", url, "--out", str(tmp_path / "report"), "--settle", "0"]) == 2
    err = capsys.readouterr().err
    assert f"no Prometheus answers at {url}" in err and "make monitor-up" in err
    assert not (tmp_path / "report").exists()


# --- a real Prometheus after real traffic ----------------------------------------------------


@pytest.mark.servers
def test_a_report_from_a_real_prometheus_after_real_traffic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"  # a detector with threshold -1 flags every photo as not a pet
    card = save_tiny_release(model, not_a_pet_threshold=-1.0, test_metrics={"accuracy": 0.5, "n": 0})
    card["test_metrics"]["per_class"] = {"cat": {"recall": 0.97}, "dog": {"recall": 0.99}}
    card["not_a_pet"]["test_flagged"] = 0.0046
    (tmp_path / "card.json").write_text(json.dumps(card))
    with ExitStack() as stack:
        server = stack.enter_context(gunicorn(tmp_path, model, workers=2))
        target = server.url.removeprefix("http://")
        prom = prometheus(stack, tmp_path, {"pet-classifier": [target]}, free_port())
        wait_for("a scrape", lambda: query(prom, 'up{job="pet-classifier"} == 1'), 30)
        answers, told = [], {"correct": 0, "incorrect": 0}
        for i in range(12):  # over six seconds: the curves need more than one scrape of traffic
            time.sleep(0.5)
            resp = requests.post(
                f"{server.url}/predict", files={"file": ("p.jpg", jpeg_bytes((20 * i, 90, 40), seed=i))}
            )
            assert resp.status_code == 200, resp.text
            answers.append(resp.json())
        for i, answer in enumerate(answers[:10]):  # feedback on ten: 7 agree, 3 say the other class
            wrong = i % 3 == 0 and told["incorrect"] < 3
            label = ({"cat": "dog", "dog": "cat"}[answer["prediction"]]) if wrong else answer["prediction"]
            told["incorrect" if wrong else "correct"] += 1
            fb = requests.post(
                f"{server.url}/feedback", json={"feedback_token": answer["feedback_token"], "label": label}
            )
            assert fb.status_code == 200, fb.text
        assert requests.post(f"{server.url}/predict", files={"file": ("e.jpg", b"")}).status_code == 400
        assert requests.post(f"{server.url}/predict", files={"file": ("n.jpg", b"not a photo")}).status_code == 415
        out = tmp_path / "report"
        code = main(["--prometheus", prom, "--window", "5m", "--card", str(tmp_path / "card.json"), "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        curves = collect(Prometheus(prom), "pet-classifier", time.time() - 300, time.time(), model / "model.json")
        rates = [float(v) for r in curves.series["by_class"] for _, v in r["values"]]
        p50 = [float(v) for r in curves.series["p50"] for _, v in r["values"] if v != "NaN"]
        assert max(rates) > 0 and p50 and max(p50) > 0, curves.series
        # A job Prometheus never scraped is a mistake said plainly, not an empty report.
        assert (
            main(["--prometheus", prom, "--job", "pet-clasifier", "--settle", "0", "--out", str(tmp_path / "x")]) == 2
        )
        assert "no target of job 'pet-clasifier'" in capsys.readouterr().err

    md = (out / "report.md").read_text()
    cats = sum(a["prediction"] == "cat" for a in answers)
    assert f"| Photos classified | 12 (cat {cats}, dog {12 - cats}) |" in md
    assert "| Flagged as not a pet | 12 (100.0%) |" in md
    assert "12 of 12 photos classified (100.0%) were flagged" in md and f"cat {cats}, dog {12 - cats}." in md
    assert "On the test split the release flags 0.46% of pets." in md
    assert "| Uploads refused | 2 |" in md and "| empty | 1 |" in md and "| not_an_image | 1 |" in md
    assert "| Server errors (5xx) | 0 of 24 requests |" in md  # 14 uploads and 10 feedback
    assert "| Staff feedback | 10 |" in md
    assert "| Live accuracy (95% interval) | 70.0% (39.7%–89.2%) |" in md
    assert f"Model served: {card['version']}." in md
    assert "| cat |" in md and "97.0%" in md and "99.0%" in md  # the card's per-class test accuracy
    assert "/predict latency | p50 " in md and "p50 –" not in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "](accuracy.png)" not in html
    assert "<table>" in html
    for name in ("accuracy.png", "confusion.png", "traffic.png"):
        with Image.open(out / name) as picture:
            assert picture.format == "PNG" and picture.width >= 400


class NoTargets:
    """A Prometheus with no series of the job: `up` answers nothing."""

    url = "http://prometheus.invalid"

    def query(self, expr: str, at: float) -> list[dict[str, object]]:
        return []


@pytest.mark.timeout(20)
def test_with_no_target_of_the_job_it_does_not_wait_for_a_scrape() -> None:
    # An hour's --settle would time the test out: nothing is scraped that could be waited for.
    assert settle(NoTargets(), "pet-clasifier", since=1000.0, timeout=3600) == 1000.0
