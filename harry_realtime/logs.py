"""Structured logs: every record is one JSON line on stderr.

Fields: `ts`, `level`, `logger`, `message`, and what the caller passed in `extra` (request,
connection and event ids, the organization, durations). The request middleware writes one line
per HTTP request (harry_realtime/middleware.py), the socket one per lifecycle event
(events/lifecycle.py), Celery one per job (harry_realtime/celery.py).

Query strings are never logged (the WebSocket's carries the access token as `apikey`), and
neither are request bodies or headers. `LOG_FORMAT=plain` gives the old one-line text format.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


# What the ASGI server logs as an error with a traceback although the client caused it and the
# server handled it: uvicorn closes a text frame that is not UTF-8 with 1007. As errors, anyone
# could write tracebacks into the log (and set off error alerts) at will.
_CLIENT_FAULTS = {("uvicorn.error", "Invalid UTF-8 sequence received from client.")}


class ClientFaultsAsWarnings(logging.Filter):
    """A one-line WARNING, without the traceback, for each record in `_CLIENT_FAULTS`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.name, record.msg) in _CLIENT_FAULTS:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def install_client_fault_filter() -> None:
    """On the loggers of `_CLIENT_FAULTS` (a logger's filter sees its records before any handler);
    idempotent."""
    for name in {name for name, _ in _CLIENT_FAULTS}:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ClientFaultsAsWarnings) for f in logger.filters):
            logger.addFilter(ClientFaultsAsWarnings())
