"""Feedback tokens (app/feedback.py): signed, single use per replica, and the record of used
ones forgets what can no longer match, safely while another worker does the same."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from app import feedback
from app.feedback import SALT, FeedbackError, FeedbackTokens

SECRET = "k" * 32


def tokens(seen: Path, ttl: int = 60) -> FeedbackTokens:
    return FeedbackTokens(SECRET, ttl, seen)


def old_release_token(request_id: str, age_seconds: int = 0) -> str:
    """A token as releases before SHA-256 signed them: itsdangerous' defaults (HMAC-SHA1)."""

    class Aged(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - age_seconds

    serializer = URLSafeTimedSerializer(SECRET, salt=SALT, signer=Aged)
    return str(serializer.dumps({"rid": request_id, "p": "dog", "v": "v6"}))


def test_a_token_is_signed_with_hmac_sha256(tmp_path: Path) -> None:
    """What the README promises, recomputed with hashlib and hmac alone: the signature is
    HMAC-SHA256 over payload and time, keyed by itsdangerous' derivation of the secret."""
    signed, signature = tokens(tmp_path).issue("req-0", "cat", "v7").rsplit(".", 1)
    key = hashlib.sha256(SALT.encode() + b"signer" + SECRET.encode()).digest()  # django-concat
    expected = hmac.new(key, signed.encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected


def test_a_token_of_the_release_before_is_still_taken_and_still_expires(tmp_path: Path) -> None:
    """Mid-rollout, feedback on an older replica's prediction reaches a new one (SHA-1 signed)."""
    assert tokens(tmp_path).redeem(old_release_token("req-old")) == feedback.Ticket("req-old", "dog", "v6")
    with pytest.raises(FeedbackError) as late:
        tokens(tmp_path, ttl=60).redeem(old_release_token("req-older", age_seconds=3600))
    assert (late.value.status, late.value.error) == (410, "token_expired")


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
