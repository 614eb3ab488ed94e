"""Tokens never reach a log: a filter that masks them in every record a handler writes.

Clients put their JWT in URLs (`?apikey=...` on the WebSocket, `?access_token=...`), and the ASGI
server logs URLs (uvicorn: `"WebSocket /realtime/v1/websocket?...&apikey=..." [accepted]`, and its
access log). The filter masks secret query parameters and anything shaped like a JWT in the
message, in its arguments (keeping their shape: uvicorn's access formatter reads them by
position) and in the structured fields passed as `extra`.
"""

from __future__ import annotations

import logging
import re

_SECRET_PARAMETER = re.compile(r"(?i)\b(apikey|api_key|access_token|refresh_token|refresh|token)=[^&\s\"'#]+")
_JWT = re.compile(r"\beyJ[\w-]*\.[\w-]+\.[\w-]*")
REDACTED = "[REDACTED]"
# Attributes every LogRecord has; the others came from `extra` (structured fields).
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def redact(text: str) -> str:
    """`text` with secret query parameters and JWT-shaped strings masked."""
    if "=" not in text and "eyJ" not in text:
        return text
    return _JWT.sub(REDACTED, _SECRET_PARAMETER.sub(rf"\1={REDACTED}", text))


def _redact_value(value):
    return redact(value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_value(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {name: _redact_value(arg) for name, arg in record.args.items()}
        for name, value in list(vars(record).items()):
            if name not in _STANDARD and isinstance(value, str):
                setattr(record, name, redact(value))
        return True


def install() -> None:
    """Add the filter to every handler configured so far (the ASGI server's own included).

    uvicorn configures its handlers before it imports the application, so they exist when the
    apps are ready; idempotent.
    """
    loggers = [logging.getLogger()] + [
        logger for logger in logging.root.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets())
