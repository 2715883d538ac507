"""Feedback tokens: a prediction can be confirmed or corrected later, on any worker or replica.

The token is signed with a shared key (itsdangerous: HMAC-SHA256 with a timestamp), so any
replica can check it with no shared database. Each replica remembers the tokens it has seen
in a folder shared by its workers (one empty file per token, created atomically), so the same
token twice on one replica is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class FeedbackError(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


@dataclass(frozen=True)
class Ticket:
    request_id: str
    prediction: str
    model_version: str


# itsdangerous signs with SHA-1 unless told otherwise; releases before this one did, so their
# tokens, valid for up to FEEDBACK_TTL_SECONDS (7 days), are still checked that way, and only
# checked: a replica mid-rollout must not refuse feedback on an older replica's prediction.
_DIGEST, _OLD_DIGEST = hashlib.sha256, hashlib.sha1
SALT = "pet-classifier-feedback"


class FeedbackTokens:
    def __init__(self, secret: str, ttl_seconds: int, seen_dir: Path) -> None:
        self.serializer = URLSafeTimedSerializer(
            secret,
            salt=SALT,
            signer_kwargs={"digest_method": _DIGEST},
            fallback_signers=[{"digest_method": _OLD_DIGEST}],
        )
        self.ttl = ttl_seconds
        self.seen_dir = seen_dir
        seen_dir.mkdir(parents=True, exist_ok=True)

    def issue(self, request_id: str, prediction: str, model_version: str) -> str:
        return self.serializer.dumps({"rid": request_id, "p": prediction, "v": model_version})

    def redeem(self, token: Any) -> Ticket:
        """Verify a token and mark it used; FeedbackError says why it cannot be used."""
        if not isinstance(token, str) or not token:
            raise FeedbackError(400, "invalid_request", "feedback_token must be a non-empty string")
        try:
            if not token.isascii():  # ours are, and a lone surrogate ("\ud800" in JSON) cannot be encoded: was a 500
                raise BadSignature("not ASCII")
            payload = self.serializer.loads(token, max_age=self.ttl)
        except SignatureExpired:
            raise FeedbackError(410, "token_expired", f"feedback tokens are valid for {self.ttl} s") from None
        except BadSignature:
            raise FeedbackError(403, "invalid_token", "the feedback token was not issued by this service") from None
        marker = self.seen_dir / hashlib.sha256(token.encode()).hexdigest()
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise FeedbackError(
                409, "duplicate_feedback", "feedback for this prediction was already received"
            ) from None
        self._forget_expired()
        return Ticket(payload["rid"], payload["p"], payload["v"])

    def _forget_expired(self) -> None:
        """Markers older than the token lifetime can never match again; drop a few each time."""
        cutoff = time.time() - self.ttl
        with os.scandir(self.seen_dir) as entries:
            for entry in itertools.islice(entries, 64):
                # Another worker may drop the same marker between the listing and the stat.
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
