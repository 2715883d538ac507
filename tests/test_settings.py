"""The service's settings from the environment (app/settings.py, gunicorn.conf.py): a value the
service cannot run with stops it at start with the variable's name, never later or silently."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import MIN_SECRET_CHARS, Settings, SettingsError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("TORCH_THREADS", "0", "TORCH_THREADS must be at least 1, got '0'"),
        ("TORCH_THREADS", "two", "TORCH_THREADS must be a number, got 'two'"),
        ("MAX_UPLOAD_BYTES", "-5", "MAX_UPLOAD_BYTES must be at least 1"),  # every upload would be a 413
        ("FEEDBACK_TTL_SECONDS", "0", "FEEDBACK_TTL_SECONDS must be at least 1"),
        ("FEEDBACK_SECRET", "hunter2", f"FEEDBACK_SECRET must be at least {MIN_SECRET_CHARS} characters, got 7"),
    ],
)
def test_an_unusable_value_is_refused_by_name(
    name: str, value: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        Settings.from_env()
    assert str(refused.value).startswith(says), refused.value


def test_values_are_read_and_empty_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_UPLOAD_BYTES", "1048576")
    monkeypatch.setenv("TORCH_THREADS", "")
    monkeypatch.setenv("FEEDBACK_SECRET", "s" * MIN_SECRET_CHARS)
    settings = Settings.from_env()
    assert (settings.max_upload_bytes, settings.torch_threads, settings.feedback_secret) == (1048576, 1, "s" * 32)


def test_without_a_secret_each_server_signs_with_its_own_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("FEEDBACK_SECRET", raising=False)
    with caplog.at_level(logging.WARNING, logger="app.settings"):
        first, second = Settings.from_env(), Settings.from_env()
    assert len(first.feedback_secret) == 64 and first.feedback_secret != second.feedback_secret
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["FEEDBACK_SECRET is unset"] * 2


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("WEB_CONCURRENCY", "0", "WEB_CONCURRENCY must be at least 1, got '0'"),
        ("PORT", "http", "PORT must be a number, got 'http'"),
        ("UPLOAD_DEADLINE_SECONDS", "-1", "UPLOAD_DEADLINE_SECONDS must be at least 0.1"),
    ],
)
def test_gunicorn_refuses_an_unusable_value_by_name(name: str, value: str, says: str) -> None:
    env = {**os.environ, name: value}
    run = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--check-config"]
    checked = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert checked.returncode != 0 and f"SettingsError: {says}" in checked.stderr, checked.stderr[-2000:]
