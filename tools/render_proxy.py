"""The pod's nginx configuration (deploy/k8s/app/nginx.conf, the one source) for loopback.

    python -m tools.render_proxy --listen 127.0.0.1:8080 --upstream 127.0.0.1:8000 \
        --status 127.0.0.1:8081 --out .monitor/proxy/nginx.conf
    nginx -p .monitor/proxy/ -c .monitor/proxy/nginx.conf -e stderr -g "$(python -m tools.render_proxy --globals)"

Only its three addresses change: where nginx listens, where Gunicorn is, and where nginx serves
stub_status for the exporter (tools/local_server.proxy_conf, which `make bench-serve` and
tests/deploy/test_proxy.py use as well).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.local_server import nginx_globals, proxy_conf


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", help="host:port nginx listens on")
    ap.add_argument("--upstream", help="host:port of Gunicorn")
    ap.add_argument("--status", help="host:port of nginx's stub_status, which the exporter reads")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--globals", action="store_true", help="print the -g directives to start it with, and stop")
    args = ap.parse_args(argv)
    if args.globals:
        print(nginx_globals())
        return 0
    if not (args.listen and args.upstream and args.status and args.out):
        ap.error("--listen, --upstream, --status and --out are needed")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(proxy_conf(args.listen, args.upstream, args.status))
    tmp.replace(args.out)  # a half-written file is never the config
    return 0


if __name__ == "__main__":
    sys.exit(main())
