"""Feedback tokens (app/feedback.py): signed, single use per replica, and the record of used
ones forgets what can no longer match, safely while another worker does the same."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import feedback
from app.feedback import FeedbackError, FeedbackTokens


def tokens(seen: Path, ttl: int = 60) -> FeedbackTokens:
    return FeedbackTokens("k" * 32, ttl, seen)


def test_a_token_names_its_prediction_and_is_used_once(tmp_path: Path) -> None:
    store = tokens(tmp_path)
    token = store.issue("req-1", "cat", "v7")
    assert store.redeem(token) == feedback.Ticket("req-1", "cat", "v7")
    with pytest.raises(FeedbackError) as again:
        tokens(tmp_path).redeem(token)  # another worker of the replica: same folder
    assert (again.value.status, again.value.error) == (409, "duplicate_feedback")


def test_markers_older_than_a_token_lives_are_forgotten(tmp_path: Path) -> None:
    old, fresh = tmp_path / "old", tmp_path / "fresh"
    old.touch()
    fresh.touch()
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    store = tokens(tmp_path, ttl=60)
    store.redeem(store.issue("req-2", "dog", "v7"))
    assert not old.exists() and fresh.exists()
    assert len(list(tmp_path.iterdir())) == 2  # fresh, and the new token's marker


def test_a_marker_another_worker_removes_mid_scan_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers forget the same expired marker: the second finds it gone between listing
    and stat, and its client must still get its feedback counted, not a 500."""
    for name in ("a", "b"):
        (tmp_path / name).touch()
        os.utime(tmp_path / name, (0, 0))
    listing = os.scandir

    class RacedScan:
        def __init__(self, path: Path) -> None:
            self.inner = listing(path)

        def __enter__(self) -> Iterator[os.DirEntry[str]]:
            return iter(self)

        def __exit__(self, *exc: object) -> None:
            self.inner.close()

        def __iter__(self) -> Iterator[os.DirEntry[str]]:
            for entry in self.inner:
                if entry.name in ("a", "b"):
                    os.unlink(entry.path)  # the other worker was quicker
                yield entry

    store = tokens(tmp_path)
    token = store.issue("req-3", "cat", "v7")
    monkeypatch.setattr(feedback.os, "scandir", RacedScan)
    assert store.redeem(token).request_id == "req-3"
    assert len(list(tmp_path.iterdir())) == 1  # only the token's own marker is left
