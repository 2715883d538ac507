"""`make smoke` (tools/smoke.py) against the real server with the release model: it passes when
the deployment is right and fails, clearly, when it is not."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tools import local_server
from tools.local_server import ROOT, gunicorn
from tools.smoke import known_photos
from tools.smoke import main as smoke_main

pytestmark = pytest.mark.servers
PREDICTIONS = ROOT / "reports" / "test_predictions.csv"


def test_known_photos_are_confident_right_answers(real_photos: Path) -> None:
    photos = known_photos(PREDICTIONS, real_photos)
    assert photos["cat"].parent.name == "Cat" and photos["dog"].parent.name == "Dog"


def test_smoke_passes_against_the_release_model(
    real_photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with gunicorn(tmp_path, ROOT / "models", workers=2) as server:
        code = smoke_main(["--url", server.url, "--source", str(real_photos), "--wait", "5"])
    out = capsys.readouterr().out
    assert code == 0, out
    for check in ("health", "ready", "predict cat", "predict dog", "metrics"):
        assert f"ok  {check}" in out


def test_smoke_fails_when_the_service_answers_wrong(
    real_photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A "known cat" that is really a dog: the service (rightly) says dog, and smoke must fail.
    photos = known_photos(PREDICTIONS, real_photos)
    swapped = tmp_path / "predictions.csv"
    with swapped.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "actual", "predicted", "prob_dog"])
        w.writerow([f"Dog/{photos['dog'].name}", "cat", "cat", "0.0"])
        w.writerow([f"Dog/{photos['dog'].name}", "dog", "dog", "1.0"])
    with gunicorn(tmp_path, ROOT / "models", workers=1) as server:
        code = smoke_main(["--url", server.url, "--source", str(real_photos), "--predictions", str(swapped)])
    assert code == 1
    assert "known cat photo" in capsys.readouterr().err


def test_smoke_fails_when_the_model_is_not_ready(
    real_photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with gunicorn(tmp_path, tmp_path / "no-model", workers=1) as server:
        code = smoke_main(["--url", server.url, "--source", str(real_photos)])
    assert code == 1
    assert "/ready: 503" in capsys.readouterr().err


def test_smoke_fails_when_metrics_say_the_model_is_not_ready(
    real_photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """/ready true but model_ready 0 on /metrics: the workers did not publish their model state
    after the fork (as before gunicorn.conf.py's post_worker_init did), and the alert would page."""
    stale = tmp_path / "workers_publish_nothing.conf.py"
    stale.write_text(
        f"exec(open({str(ROOT / 'gunicorn.conf.py')!r}).read())\n"
        "def post_worker_init(worker):\n"
        "    worker.log.info(f'{READY_MESSAGE}: %s', worker.pid)\n"
    )
    monkeypatch.setattr(local_server, "GUNICORN_CMD", ["gunicorn", "-c", str(stale)])
    with local_server.gunicorn(tmp_path, ROOT / "models", workers=1) as server:
        code = smoke_main(["--url", server.url, "--source", str(real_photos), "--wait", "5"])
    assert code == 1
    assert "model_ready is 0.0 while /ready says ready" in capsys.readouterr().err


def test_smoke_says_when_nothing_listens(real_photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tools.local_server import free_port

    code = smoke_main(["--url", f"http://127.0.0.1:{free_port()}", "--source", str(real_photos), "--wait", "1"])
    assert code == 1
    assert "did not answer within 1 s" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["notaurl", "ftp://127.0.0.1:21", "http://"])
def test_smoke_and_replay_refuse_what_is_no_service_url_at_once(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from tools.replay import main as replay_main

    for main in (smoke_main, replay_main):
        with pytest.raises(SystemExit) as refused:
            main(["--url", url])
        assert refused.value.code == 2
        assert "argument --url: not an http(s) URL" in capsys.readouterr().err
