"""Service settings, read once from the environment (12-factor), overridable in tests."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

N = TypeVar("N", int, float)
# itsdangerous signs feedback tokens with HMAC-SHA256: a short key could be found offline from
# one token, and then anyone could forge feedback. 32 characters is what `openssl rand -hex 16` gives.
MIN_SECRET_CHARS = 32


class SettingsError(ValueError):
    """An environment variable the service cannot run with; the message names it."""


def _env(name: str, default: N, minimum: N, parse: Callable[[str], N]) -> N:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def env_int(name: str, default: int, minimum: int = 1) -> int:
    return _env(name, default, minimum, int)


def env_float(name: str, default: float, minimum: float) -> float:
    return _env(name, default, minimum, float)


@dataclass(frozen=True)
class Settings:
    model_dir: str = "models"
    model_package: str = ""  # the AOTInductor build of model_dir (ml/export.py); "" = eager PyTorch
    max_upload_bytes: int = 10 * 1024 * 1024
    # Feedback tokens are signed with this key; every replica must share it (a Kubernetes Secret).
    feedback_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    feedback_ttl_seconds: int = 7 * 24 * 3600
    feedback_dir: str = ""  # where used tokens are remembered per replica; "" = a temp folder
    torch_threads: int = 1
    service_version: str = "0.1.0"
    # A switch that makes /predict fail with 500s, for alerting tests only: never set in production.
    fault_injection: bool = False

    @classmethod
    def from_env(cls) -> Settings:
        secret = os.environ.get("FEEDBACK_SECRET", "")
        if not secret:
            logging.getLogger("app.settings").warning(
                "FEEDBACK_SECRET is unset: feedback tokens are signed with a random key, so only this "
                "server accepts them, until it restarts",
                extra={"event": "feedback_secret_unset"},
            )
        elif len(secret) < MIN_SECRET_CHARS:
            raise SettingsError(f"FEEDBACK_SECRET must be at least {MIN_SECRET_CHARS} characters, got {len(secret)}")
        return cls(
            model_dir=os.environ.get("MODEL_DIR", cls.model_dir),
            model_package=os.environ.get("MODEL_PACKAGE", cls.model_package),
            max_upload_bytes=env_int("MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            feedback_secret=secret or secrets.token_hex(32),
            feedback_ttl_seconds=env_int("FEEDBACK_TTL_SECONDS", cls.feedback_ttl_seconds),
            feedback_dir=os.environ.get("FEEDBACK_DIR", ""),
            torch_threads=env_int("TORCH_THREADS", cls.torch_threads),
            service_version=os.environ.get("SERVICE_VERSION", cls.service_version),
            fault_injection=os.environ.get("FAULT_INJECTION", "") == "1",
        )

    def to_flask(self) -> dict[str, Any]:
        return {k.upper(): v for k, v in asdict(self).items()}
