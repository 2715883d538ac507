"""The service's settings from the environment (app/settings.py, gunicorn.conf.py): a value the
service cannot run with stops it at start with the variable's name, never later or silently."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from dataclasses import replace

import pytest

from app.settings import MIN_SECRET_CHARS, ServerSettings, Settings, SettingsError
from tests.helpers import ROOT


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


def test_the_clusters_settings_are_the_codes_defaults_but_where_it_must_differ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """deploy/k8s/app/settings.env shows operators every knob; its values are app/settings.py's
    defaults, except the few a pod must set otherwise, so the two cannot drift apart."""
    cluster = dict(
        line.split("=", 1) for line in (ROOT / "deploy" / "k8s" / "app" / "settings.env").read_text().splitlines()
    )
    must_differ = {
        "HOST": "0.0.0.0",
        "MODEL_DIR": "/srv/models",
        "PROMETHEUS_MULTIPROC_DIR": "/run/prometheus-multiproc",
    }
    assert {k: cluster[k] for k in must_differ} == must_differ
    for name in cluster:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FEEDBACK_SECRET", "s" * 32)
    defaults = (ServerSettings.from_env(), Settings.from_env())
    for name, value in cluster.items():
        monkeypatch.setenv(name, value)
    server, app_settings = ServerSettings.from_env(), Settings.from_env()
    assert replace(server, host=defaults[0].host) == defaults[0]
    assert replace(app_settings, model_dir=defaults[1].model_dir) == defaults[1]
    # And every setting the cluster names is one the service reads.
    read = set(re.findall(r'"([A-Z_]+)"', (ROOT / "app" / "settings.py").read_text())) | {"PROMETHEUS_MULTIPROC_DIR"}
    assert set(cluster) <= read, set(cluster) - read
