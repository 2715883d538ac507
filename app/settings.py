"""Service settings, read from the environment (12-factor) here and nowhere else: `Settings`
for the Flask app (overridable in tests), `ServerSettings` for Gunicorn (gunicorn.conf.py) and
its worker (app/gunicorn_worker.py). Each variable's default lives once, below."""

from __future__ import annotations

import logging
import os
import re
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


_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?")


def cors_origins(raw: str) -> tuple[str, ...]:
    """CORS_ORIGINS: comma-separated origins (scheme://host[:port]), or * for any."""
    origins = tuple(o.strip() for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise SettingsError(f"CORS_ORIGINS: {origin!r} is not an origin (scheme://host[:port], or *)")
    return origins


@dataclass(frozen=True)
class Settings:
    model_dir: str = "models"
    model_package: str = ""  # the ONNX graph of model_dir (ml/export.py); "" = eager PyTorch
    max_upload_bytes: int = 10 * 1024 * 1024  # a whole request, a batch's photos together
    max_batch_files: int = 32  # photos in one POST /predict/batch
    # Feedback tokens are signed with this key; every replica must share it (a Kubernetes Secret).
    feedback_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    feedback_ttl_seconds: int = 7 * 24 * 3600
    feedback_dir: str = ""  # where used tokens are remembered per replica; "" = a temp folder
    torch_threads: int = 1  # threads of one forward pass, in ONNX Runtime or PyTorch (TORCH_THREADS)
    service_version: str = "0.1.0"
    # A switch that makes /predict fail with 500s, for alerting tests only: never set in production.
    fault_injection: bool = False
    # Origins whose browser pages may call the API (a platform front end elsewhere); none by default.
    cors_origins: tuple[str, ...] = ()

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
            max_batch_files=env_int("MAX_BATCH_FILES", cls.max_batch_files),
            feedback_secret=secret or secrets.token_hex(32),
            feedback_ttl_seconds=env_int("FEEDBACK_TTL_SECONDS", cls.feedback_ttl_seconds),
            feedback_dir=os.environ.get("FEEDBACK_DIR", ""),
            torch_threads=env_int("TORCH_THREADS", cls.torch_threads),
            service_version=os.environ.get("SERVICE_VERSION", cls.service_version),
            fault_injection=os.environ.get("FAULT_INJECTION", "") == "1",
            cors_origins=cors_origins(os.environ.get("CORS_ORIGINS", "")),
        )

    def to_flask(self) -> dict[str, Any]:
        return {k.upper(): v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ServerSettings:
    """How Gunicorn serves: bind, workers, timeouts, and the limits on reading a request."""

    host: str = "127.0.0.1"  # the image sets 0.0.0.0
    port: int = 8000
    workers: int = 2
    timeout: int = 30
    graceful_timeout: int = 20  # SIGTERM: finish in-flight requests
    max_requests: int = 5000  # 0: never restart a worker
    max_requests_jitter: int = 500
    log_level: str = "info"
    # Past either, 408 during the upload and closed during the headers.
    upload_idle_seconds: float = 10.0  # of client silence
    upload_deadline_seconds: float = 20.0  # for the whole request to arrive

    @classmethod
    def from_env(cls) -> ServerSettings:
        server = cls(
            host=os.environ.get("HOST") or cls.host,
            port=env_int("PORT", cls.port),
            workers=env_int("WEB_CONCURRENCY", cls.workers),
            timeout=env_int("GUNICORN_TIMEOUT", cls.timeout),
            graceful_timeout=env_int("GRACEFUL_TIMEOUT", cls.graceful_timeout),
            max_requests=env_int("GUNICORN_MAX_REQUESTS", cls.max_requests, minimum=0),
            max_requests_jitter=env_int("GUNICORN_MAX_REQUESTS_JITTER", cls.max_requests_jitter, minimum=0),
            log_level=os.environ.get("LOG_LEVEL") or cls.log_level,
            upload_idle_seconds=env_float("UPLOAD_IDLE_SECONDS", cls.upload_idle_seconds, minimum=0.1),
            upload_deadline_seconds=env_float("UPLOAD_DEADLINE_SECONDS", cls.upload_deadline_seconds, minimum=0.1),
        )
        if server.timeout <= server.upload_deadline_seconds:
            # Otherwise a slow upload is killed with its worker, and its client gets an HTML 500.
            raise SettingsError(
                f"UPLOAD_DEADLINE_SECONDS ({server.upload_deadline_seconds:g}) must be below "
                f"GUNICORN_TIMEOUT ({server.timeout})"
            )
        return server

    @property
    def bind(self) -> str:
        return f"{self.host}:{self.port}"
