"""`make classify DIR=folder`: a shelter's folder of any size through POST /predict/batch.

    python -m tools.classify_folder photos/ --out answers.csv --url http://127.0.0.1:8000

Walks the folder (sub-folders too), sends its photos in batches with bounded concurrency,
retries what the service could not take just then (429, 502-504, a lost connection: urllib3's
Retry, honouring Retry-After), shows a progress bar with ETA and writes one CSV row per photo:
path, prediction, confidence, not_a_pet, error, status. Interrupted, it is run again with the same --out:
photos already answered are skipped, photos that could not be sent are tried again, and a row
cut short by the interruption is dropped and redone. Exit status: 0 when every photo got an
answer (a photo the service refuses, say not an image, is an answer), 3 when some could not
be sent (listed at the end; run again to retry them), 2 when the service cannot be reached.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util.retry import Retry

from tools.smoke import service_url

FIELDS = ["path", "prediction", "confidence", "not_a_pet", "error", "status"]
_FLAG = {True: "true", False: "false"}  # null (a model without the detector) stays empty
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif", ".bmp", ".heic", ".heif"}
RETRY_STATUSES = (429, 502, 503, 504)  # the service or its proxy busy or restarting: worth a retry
FORM_ROOM = 64 * 1024  # multipart headers around the photos, kept out of the upload limit
NOT_SENT = 0  # the status of a row whose photo never got an answer (retried on the next run)


@dataclass(frozen=True)
class Options:
    url: str
    batch: int
    max_bytes: int
    timeout: float
    retries: int


def photos_in(folder: Path) -> list[Path]:
    """The folder's photos by name, sub-folders included; hidden files and folders skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath, f) for f in sorted(filenames) if not f.startswith(".")]
    return [p for p in found if p.suffix.lower() in PHOTO_SUFFIXES]


def answered(out: Path) -> dict[str, dict[str, str]]:
    """Rows of an earlier run that need no retry, by path; the file is rewritten to hold just
    those, so that a row cut short by an interruption is gone before new rows follow it."""
    text = out.read_text(encoding="utf-8") if out.exists() else ""
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # the interrupted last row
    if text and text.split("\n", 1)[0].strip() != ",".join(FIELDS):
        raise SystemExit(f"{out} is not a CSV this command wrote (columns {', '.join(FIELDS)}): choose another --out")
    rows = list(csv.DictReader(io.StringIO(text)))
    kept = {r["path"]: r for r in rows if r["status"] and int(r["status"]) != NOT_SENT}
    write_rows(out, list(kept.values()))
    return kept


def write_rows(out: Path, rows: list[dict[str, Any]]) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out)


def batches(paths: list[Path], opts: Options) -> Iterator[list[Path]]:
    """Batches of at most opts.batch photos whose bytes fit the upload limit together."""
    batch: list[Path] = []
    size = 0
    for path in paths:
        n = path.stat().st_size
        if batch and (len(batch) >= opts.batch or size + n + FORM_ROOM > opts.max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(path)
        size += n
    if batch:
        yield batch


def session(opts: Options) -> requests.Session:
    retry = Retry(
        total=opts.retries,
        backoff_factor=0.5,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"POST", "GET"}),  # a batch sent twice is only counted twice
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    s = requests.Session()
    s.mount("http://", HTTPAdapter(max_retries=retry))
    s.mount("https://", HTTPAdapter(max_retries=retry))
    return s


def send(client: requests.Session, batch: list[Path], root: Path, opts: Options) -> list[dict[str, Any]]:
    """One row per photo of the batch: the service's answer, its error, or why it was not sent."""
    names = [p.relative_to(root).as_posix() for p in batch]
    too_big = [p for p in batch if p.stat().st_size + FORM_ROOM > opts.max_bytes]
    if too_big:  # alone in its batch (see batches): the service would refuse it unread
        return [row(names[0], 413, error="file_too_large")]
    files = [("file", (name, path.read_bytes())) for name, path in zip(names, batch, strict=True)]
    try:
        resp = client.post(f"{opts.url}/predict/batch", files=files, timeout=opts.timeout)
        body = resp.json()
    except (requests.RequestException, ValueError) as exc:
        return [row(name, NOT_SENT, error=type(exc).__name__) for name in names]  # ConnectionError, ReadTimeout...
    if resp.status_code != 200:
        # The whole batch refused (still unavailable, or over a limit of the service's that the
        # options exceed): not these photos' fault, so they are tried again on the next run.
        error = body.get("error", "") if isinstance(body, dict) else ""
        return [row(name, NOT_SENT, error=error or f"http_{resp.status_code}") for name in names]
    return [
        row(
            name,
            r["status"],
            r.get("prediction", ""),
            r.get("confidence", ""),
            r.get("error", ""),
            _FLAG.get(r.get("not_a_pet"), ""),
        )
        for name, r in zip(names, body["results"], strict=True)
    ]


def row(
    path: str, status: int, prediction: str = "", confidence: Any = "", error: str = "", not_a_pet: str = ""
) -> dict[str, Any]:
    return {
        "path": path,
        "prediction": prediction,
        "confidence": confidence,
        "not_a_pet": not_a_pet,
        "error": error,
        "status": status,
    }


def classify_folder(folder: Path, out: Path, opts: Options, workers: int) -> Counter[str]:
    """Send what an earlier run did not answer; append each batch's rows as it comes back."""
    done = answered(out)
    todo = [p for p in photos_in(folder) if p.relative_to(folder).as_posix() not in done]
    outcome: Counter[str] = Counter(answered=len(done))
    client = session(opts)
    with (
        out.open("a", newline="", encoding="utf-8") as fh,
        ThreadPoolExecutor(workers) as pool,
        tqdm(total=len(todo), unit="photo", desc="classifying", dynamic_ncols=True) as bar,
    ):
        writer = csv.DictWriter(fh, FIELDS)
        # map keeps at most the whole list in flight; each batch's rows are written as they return.
        for rows in pool.map(lambda b: send(client, b, folder, opts), batches(todo, opts)):
            writer.writerows(rows)
            fh.flush()
            bar.update(len(rows))
            for r in rows:
                outcome["not sent" if r["status"] == NOT_SENT else "answered"] += 1
                if r["error"]:
                    outcome[f"{'not sent' if r['status'] == NOT_SENT else 'refused'}: {r['error']}"] += 1
    return outcome


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--out", type=Path, default=Path("answers.csv"), help="the CSV written (and resumed)")
    ap.add_argument("--url", type=service_url, default="http://127.0.0.1:8000")
    ap.add_argument("--batch", type=int, default=16, help="photos per request (the service takes up to 32)")
    ap.add_argument("--max-bytes", type=int, default=10 * 1024 * 1024, help="the service's upload limit")
    ap.add_argument("--concurrency", type=int, default=2, help="requests in flight at once")
    ap.add_argument("--retries", type=int, default=4, help="tries per request after the first")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds for one batch's answer")
    args = ap.parse_args(argv)
    if not args.folder.is_dir():
        ap.error(f"{args.folder} is not a folder")
    if min(args.batch, args.concurrency) < 1 or args.retries < 0 or args.max_bytes <= FORM_ROOM:
        ap.error("--batch and --concurrency must be at least 1, --retries at least 0, --max-bytes above 64 KiB")
    try:
        session(Options(args.url, 1, 0, 10, 2)).get(f"{args.url}/ready", timeout=10)
    except requests.RequestException as exc:
        print(f"cannot reach the service at {args.url}: {type(exc).__name__}", file=sys.stderr)
        return 2
    opts = Options(args.url, args.batch, args.max_bytes, args.timeout, args.retries)
    outcome = classify_folder(args.folder, args.out, opts, args.concurrency)
    print(f"{outcome['answered']} photos answered in {args.out}, {outcome['not sent']} not sent")
    for key, n in sorted(outcome.items()):
        if ": " in key:
            print(f"  {n} {key.replace(':', ' as', 1) if key.startswith('refused') else key}")
    if outcome["not sent"]:
        print(f"{outcome['not sent']} photos could not be sent: run the same command again to retry them")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
