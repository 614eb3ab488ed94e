"""JSON for the hot paths (socket frames, sync batches): orjson, several times faster than the
standard library, which remains the fallback for what orjson refuses (integers beyond 64 bits).

Output is compact UTF-8 without `\\u` escapes, so its length is the size on the wire.
Datetimes go to `default` (orjson's own format would differ from Django's).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def dumps(value: Any, *, default: Callable[[Any], Any] | None = None) -> bytes:
    try:
        return orjson.dumps(value, default=default, option=_OPTIONS)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=default).encode()


loads = orjson.loads
