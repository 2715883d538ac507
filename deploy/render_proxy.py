"""The pod's nginx configuration (deploy/k8s/app/nginx.conf, the one source) for loopback.

    python deploy/render_proxy.py --listen 127.0.0.1:8080 --upstream 127.0.0.1:8000 --out .monitor/proxy/nginx.conf
    nginx -p .monitor/proxy/ -c .monitor/proxy/nginx.conf -e stderr -g "$(python deploy/render_proxy.py --globals)"

Only the address nginx listens on and Gunicorn's change. The local stack (deploy/local-stack.sh)
and tests/service/test_proxy.py run the result as above.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "k8s" / "app" / "nginx.conf"


def render(listen: str, upstream: str, source: Path = SOURCE) -> str:
    conf = source.read_text()
    conf, listens = re.subn(r"^(\s*)listen 8080;", rf"\g<1>listen {listen};", conf, flags=re.MULTILINE)
    conf, servers = re.subn(r"^(\s*)server 127\.0\.0\.1:8000;", rf"\g<1>server {upstream};", conf, flags=re.MULTILINE)
    if (listens, servers) != (1, 1):
        raise ValueError(f"{source} should have one 'listen 8080;' and one 'server 127.0.0.1:8000;'")
    return conf


def nginx_globals() -> str:
    """The -g directives: in the foreground, and as root with workers that can reach a private folder
    (nginx would hand them to 'nobody'); the pod runs it as a non-root user, where this is not needed."""
    return "daemon off;" + (" user root;" if os.geteuid() == 0 else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", help="host:port nginx listens on")
    ap.add_argument("--upstream", help="host:port of Gunicorn")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--globals", action="store_true", help="print the -g directives to start it with, and stop")
    args = ap.parse_args(argv)
    if args.globals:
        print(nginx_globals())
        return 0
    if not (args.listen and args.upstream and args.out):
        ap.error("--listen, --upstream and --out are needed")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(render(args.listen, args.upstream))
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
