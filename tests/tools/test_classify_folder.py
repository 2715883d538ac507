"""`make classify`: a folder through /predict/batch, resumable, retried, one CSV row per photo."""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.conftest import jpeg_bytes
from tools.classify_folder import FIELDS, main
from tools.local_server import gunicorn


def shelter_folder(root: Path) -> Path:
    """Seven photos, two in a sub-folder; a file named as a photo that is none; files to skip."""
    for i in range(7):
        path = root / ("kennel-b" if i >= 5 else "") / f"pet-{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes((40 * i, 90, 200 - 20 * i), seed=i))
    (root / "notes.jpg").write_text("adoption notes, not a photo")
    (root / ".DS_Store").write_bytes(b"\0\0")
    (root / "readme.txt").write_text("not sent")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.jpg").write_bytes(jpeg_bytes((1, 2, 3)))
    return root


def rows(out: Path) -> list[dict[str, str]]:
    with out.open(newline="") as fh:
        return list(csv.DictReader(fh))


def uploads_seen(url: str) -> float:
    """Photos the service answered or refused so far."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    names = ("predictions_total{", "rejected_inputs_total{")
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(names))


@pytest.mark.servers
def test_a_folder_is_classified_and_an_interrupted_run_resumes(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, out = shelter_folder(tmp_path / "photos"), tmp_path / "answers.csv"
    (tmp_path / "svc").mkdir()
    with gunicorn(tmp_path / "svc", tiny_model, workers=1) as server:
        assert main([str(folder), "--out", str(out), "--url", server.url, "--batch", "3"]) == 0
        first = rows(out)
        assert uploads_seen(server.url) == 8
        by_path = {r["path"]: r for r in first}
        assert sorted(by_path) == ["kennel-b/pet-5.jpg", "kennel-b/pet-6.jpg", "notes.jpg"] + [
            f"pet-{i}.jpg" for i in range(5)
        ]
        assert by_path["notes.jpg"]["error"] == "not_an_image" and by_path["notes.jpg"]["status"] == "415"
        for i in range(7):
            name = f"kennel-b/pet-{i}.jpg" if i >= 5 else f"pet-{i}.jpg"
            alone = requests.post(f"{server.url}/predict", files={"file": (folder / name).open("rb")}, timeout=10)
            assert by_path[name]["prediction"] == alone.json()["prediction"], name
            assert float(by_path[name]["confidence"]) == alone.json()["confidence"]
            assert by_path[name]["not_a_pet"] == "" and alone.json()["not_a_pet"] is None  # tiny: no detector
        assert "8 photos answered" in capsys.readouterr().out  # a refusal is an answer too

        # Interrupted: three rows written, a fourth that was never sent, a fifth cut short.
        header = ",".join(FIELDS)
        kept = [",".join(r[f] for f in FIELDS) for r in first[:3]]
        out.write_text("\n".join([header, *kept, f"{first[3]['path']},,,,not_sent,0", "pet-4.j"]))
        before = uploads_seen(server.url)
        assert main([str(folder), "--out", str(out), "--url", server.url]) == 0
        assert uploads_seen(server.url) - before == 5  # only what the first run did not answer
    again = rows(out)
    assert sorted(r["path"] for r in again) == sorted(by_path)  # each photo once
    assert {r["path"]: r["prediction"] for r in again} == {p: r["prediction"] for p, r in by_path.items()}
    assert "8 photos answered" in capsys.readouterr().out


HANG_UP = 0  # the fake service closes the connection without an answer


@contextmanager
def fake_service(answers: list[int]) -> Iterator[tuple[str, list[int]]]:
    """A service that answers /predict/batch with each status of ``answers`` in turn (then 200)."""
    seen: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._reply(200, {"ready": True})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = answers[len(seen)] if len(seen) < len(answers) else 200
            seen.append(status)
            if status == HANG_UP:
                self.close_connection = True
                return
            photos = body.count(b'name="file"')
            results = [{"status": 200, "prediction": "cat", "confidence": 0.9}] * photos
            self._reply(status, {"results": results} if status == 200 else {"error": "busy", "detail": "x"})

        def _reply(self, status: int, payload: object) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_busy_service_is_retried(tmp_path: Path) -> None:
    folder, out = shelter_folder(tmp_path / "photos"), tmp_path / "answers.csv"
    with fake_service([503, 429]) as (url, seen):
        assert main([str(folder), "--out", str(out), "--url", url, "--batch", "32", "--concurrency", "1"]) == 0
    assert seen == [503, 429, 200]
    assert [r["status"] for r in rows(out)] == ["200"] * 8


def test_photos_that_could_not_be_sent_are_listed_and_retried_on_the_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, out = shelter_folder(tmp_path / "photos"), tmp_path / "answers.csv"
    args = [str(folder), "--out", str(out), "--batch", "4", "--retries", "1", "--concurrency", "1"]
    with fake_service([503, 503]) as (url, seen):  # the first batch fails twice: tried once more, no more
        assert main([*args, "--url", url]) == 3
    assert seen == [503, 503, 200]
    written = rows(out)
    assert [r["status"] for r in written] == ["0"] * 4 + ["200"] * 4 and written[0]["error"] == "busy"
    assert "4 photos could not be sent" in capsys.readouterr().out
    with fake_service([]) as (url, seen):
        assert main([*args, "--url", url]) == 0
    assert seen == [200]  # only the four
    assert sorted(r["status"] for r in rows(out)) == ["200"] * 8


def test_a_connection_lost_is_a_photo_not_sent_never_a_crash(tmp_path: Path) -> None:
    folder, out = shelter_folder(tmp_path / "photos"), tmp_path / "answers.csv"
    with fake_service([HANG_UP]) as (url, seen):
        assert main([str(folder), "--out", str(out), "--url", url, "--retries", "0", "--concurrency", "1"]) == 3
    assert seen == [HANG_UP]
    assert {(r["status"], r["error"]) for r in rows(out)} == {("0", "ConnectionError")}


def test_bad_arguments_get_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = shelter_folder(tmp_path / "photos")
    assert main([str(folder), "--out", str(tmp_path / "a.csv"), "--url", "http://127.0.0.1:9"]) == 2
    assert "cannot reach the service at http://127.0.0.1:9" in capsys.readouterr().err
    with pytest.raises(SystemExit) as no_folder:
        main([str(tmp_path / "missing")])
    assert no_folder.value.code == 2 and "is not a folder" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    other.write_text("name,score\nx,1\n")
    with fake_service([]) as (url, _), pytest.raises(SystemExit, match="not a CSV this command wrote"):
        main([str(folder), "--out", str(other), "--url", url])
    assert other.read_text() == "name,score\nx,1\n"  # someone's own file is left as it was
