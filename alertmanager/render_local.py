"""Derive a loopback Alertmanager configuration from alertmanager.yml (the one source).

    python alertmanager/render_local.py --smtp 127.0.0.1:1025 --out .monitor/alertmanager.yml [--fast]

Mail goes to a local SMTP sink without TLS or authentication; the dead man's switch receiver
sends nowhere (its heartbeat URL is a deployment setting, and nothing here may call out);
templates are referenced by absolute path; --fast shortens group_wait/group_interval for tests
and demos. Routes and inhibition rules stay exactly as written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


def render(smtp: str, fast: bool = False) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((HERE / "alertmanager.yml").read_text())
    config["global"].update(smtp_smarthost=smtp, smtp_require_tls=False)
    for key in ("smtp_auth_username", "smtp_auth_password_file"):
        config["global"].pop(key, None)
    config["templates"] = [str(HERE / "templates" / "*.tmpl")]
    for receiver in config["receivers"]:
        receiver.pop("webhook_configs", None)
    if fast:
        for route in [config["route"], *config["route"].get("routes", [])]:
            route.update(group_wait="1s", group_interval="2s", repeat_interval="1h")
    return config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smtp", default="127.0.0.1:1025")
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.write_text(yaml.safe_dump(render(args.smtp, args.fast), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
