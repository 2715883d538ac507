from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.helpers import prepared
from tools.local_server import gunicorn
from tools.replay import main as replay_main

pytestmark = pytest.mark.servers


def feedback_counts(url: str) -> dict[str, float]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("feedback_total{"):
            result = line.split('result="')[1].split('"')[0]
            counts[result] = counts.get(result, 0) + float(line.split()[-1])
    return counts


@pytest.mark.parametrize("mislabel", [False, True])
def test_replay_sends_test_photos_and_feedback(
    synthetic_tree: Path, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], mislabel: bool
) -> None:
    manifest = prepared(synthetic_tree, tmp_path / "prepared")
    (tmp_path / "svc").mkdir()
    with gunicorn(tmp_path / "svc", tiny_model, workers=1) as server:
        args = [
            "--url",
            server.url,
            "--manifest",
            str(manifest),
            "--source",
            str(synthetic_tree),
            "--rate",
            "0",
            "--count",
            "6",
            "--feedback-share",
            "1",
        ] + (["--mislabel"] if mislabel else [])
        assert replay_main(args) == 0
        counts = feedback_counts(server.url)
    out = capsys.readouterr().out
    assert "sent 6, answered 6" in out and "feedback 6" in out and "errors 0" in out
    right = int(out.split("right ")[1].split(",")[0])
    # Feedback says "correct" exactly when the model agreed with the label we sent.
    expected_correct = (6 - right) if mislabel else right
    assert counts.get("correct", 0) == expected_correct
    assert sum(counts.values()) == 6
