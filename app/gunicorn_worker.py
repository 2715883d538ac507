"""Gunicorn's sync worker with a read timeout on each client socket from the moment it is
accepted (gunicorn.conf.py names it as ``worker_class``).

The stock worker reads with no timeout. A client that goes silent mid-headers or mid-upload
then holds the worker until Gunicorn's ``timeout`` kills it, and that client gets an HTML 500.
With a read timeout, silence during the headers closes the connection, and silence during
the upload reaches the app, which answers 408 (app/errors.py). Either way the worker lives on.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from gunicorn import util
from gunicorn.workers.sync import SyncWorker

# Read once, when Gunicorn loads this class, not on every accepted connection.
IDLE_SECONDS = float(os.environ.get("UPLOAD_IDLE_SECONDS", "10"))


class IdleTimeoutSyncWorker(SyncWorker):  # type: ignore[misc]
    def accept(self, listener: Any) -> None:
        client: socket.socket
        client, addr = listener.accept()
        client.settimeout(IDLE_SECONDS)
        util.close_on_exec(client)
        self.handle(listener, client, addr)


class ClientTimeoutFilter(logging.Filter):
    """Gunicorn logs a client that went silent mid-headers as an ERROR with a traceback. The
    client caused it, so it becomes one INFO line that says so (gunicorn.conf.py's logging)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TimeoutError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "client_timeout: silent for UPLOAD_IDLE_SECONDS, connection closed", ()
            record.exc_info = record.exc_text = None
        return True
