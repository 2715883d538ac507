"""Gunicorn configuration: the one used by `make serve`, the Docker image and the tests.

Its settings come from the environment through app/settings.py (`ServerSettings`: PORT, HOST,
WEB_CONCURRENCY, GUNICORN_TIMEOUT, GRACEFUL_TIMEOUT, UPLOAD_IDLE_SECONDS,
UPLOAD_DEADLINE_SECONDS...), which names any variable it cannot use. PROMETHEUS_MULTIPROC_DIR
is a fresh temp folder when unset.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
from typing import Any

# prometheus_client picks its multiprocess mode when first imported: set the folder first.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prometheus-multiproc-")
_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
os.makedirs(_metrics_dir, exist_ok=True)
# One replica's workers share the record of used feedback tokens.
os.environ.setdefault("FEEDBACK_DIR", os.path.join(_metrics_dir, "feedback-seen"))

from app.gunicorn_worker import READY_MESSAGE  # noqa: E402 (after the metrics folder is set)
from app.settings import ServerSettings  # noqa: E402

server_settings = ServerSettings.from_env()
wsgi_app = "app.wsgi:app"
bind = server_settings.bind
workers = server_settings.workers
# One request at a time per worker (inference is CPU-bound): Gunicorn's sync worker, plus
# UPLOAD_IDLE_SECONDS and UPLOAD_DEADLINE_SECONDS on reading each request (app/gunicorn_worker.py).
worker_class = "app.gunicorn_worker.TimeLimitedSyncWorker"
preload_app = True  # load the model once in the master; workers share its pages copy-on-write
timeout = server_settings.timeout
graceful_timeout = server_settings.graceful_timeout
keepalive = 5
# Gunicorn 25.1+ opens a control socket in $HOME/.gunicorn unless told not to: under the image's
# read-only root that is an ERROR at every start, and on a host one socket for every instance
# of a user. Nothing here uses gunicornc.
control_socket_disable = True
max_requests = server_settings.max_requests
max_requests_jitter = server_settings.max_requests_jitter
accesslog = None  # the app writes one JSON access line per request (with its request id)
errorlog = "-"
loglevel = server_settings.log_level
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "app.observability.JsonLineFormatter"},
    },
    "filters": {
        "client_timeouts": {"()": "app.gunicorn_worker.ClientTimeoutFilter"},
        "client_text": {"()": "app.gunicorn_worker.ClientTextFilter"},
    },
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
    "root": {"handlers": ["stdout"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {
            "handlers": ["stdout"],
            "level": "INFO",
            "propagate": False,
            "filters": ["client_timeouts", "client_text"],
        },
        "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}


def pre_fork(server: Any, worker: Any) -> None:
    # Out of the collector's reach, the preloaded app's objects stay shared: a full collection
    # in a worker took 240 ms and un-shared 112 MiB of them (see gc.freeze in Python's docs).
    gc.freeze()


def post_fork(server: Any, worker: Any) -> None:
    # PyTorch's threads are per process: set them in each worker, after the fork, to the number
    # the preloaded app settled on (app/settings.py), not a second reading of the environment.
    # Only where the eager model serves: the image has no PyTorch, and an ONNX Runtime session
    # keeps the thread count it was made with.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(server.app.wsgi().config["TORCH_THREADS"])


def post_worker_init(worker: Any) -> None:
    # The preloaded app's gauges were set in the master; this worker's samples start at 0.
    from app import publish_model_state

    publish_model_state(worker.wsgi)
    # The last step before the worker's accept loop: says when this worker, not just some
    # worker, takes requests (tools/local_server.py waits for one line per worker).
    worker.log.info(f"{READY_MESSAGE}: %s", worker.pid)


def worker_exit(server: Any, worker: Any) -> None:
    # Called in the worker as it leaves. A clean exit skips the interpreter's teardown of a
    # torch-laden process: it took about 350 ms, during which the master has yet to start the
    # replacement (after max_requests, about every 80 s per worker at full load). Logs are
    # flushed first; an exit with an error code (a boot failure) takes the normal path.
    import logging
    import sys

    leaving = sys.exc_info()[1]
    if isinstance(leaving, SystemExit) and leaving.code in (0, None):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

    GunicornInternalPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)


def on_exit(server: Any) -> None:
    if _metrics_dir.startswith(tempfile.gettempdir()) and "prometheus-multiproc-" in _metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
