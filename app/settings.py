"""Service settings, read once from the environment (12-factor), overridable in tests."""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


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
        return cls(
            model_dir=os.environ.get("MODEL_DIR", cls.model_dir),
            model_package=os.environ.get("MODEL_PACKAGE", cls.model_package),
            max_upload_bytes=_env_int("MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            feedback_secret=os.environ.get("FEEDBACK_SECRET") or secrets.token_hex(32),
            feedback_ttl_seconds=_env_int("FEEDBACK_TTL_SECONDS", cls.feedback_ttl_seconds),
            feedback_dir=os.environ.get("FEEDBACK_DIR", ""),
            torch_threads=_env_int("TORCH_THREADS", cls.torch_threads),
            service_version=os.environ.get("SERVICE_VERSION", cls.service_version),
            fault_injection=os.environ.get("FAULT_INJECTION", "") == "1",
        )

    def to_flask(self) -> dict[str, Any]:
        return {k.upper(): v for k, v in asdict(self).items()}
