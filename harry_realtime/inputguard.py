"""The JSON input guard: values the pipeline cannot carry are refused at the door.

Every JSON body of the REST API goes through `GuardedJSONParser` (DRF's only parser, settings
`REST_FRAMEWORK`), including the unauthenticated `/api/auth/token`; `InputGuardMiddleware`
checks the URL path and query string of the API. What is refused, each with a 4xx and a
machine-readable code before anything runs or is written:

| input | answer |
|---|---|
| a body over `DATA_UPLOAD_MAX_MEMORY_SIZE` (2.5 MB) | 413 `payload_too_large` |
| not JSON, not UTF-8, `NaN`/`Infinity` | 400 `invalid_json` |
| containers nested deeper than `MAX_DEPTH` (32) | 400 `json_too_deep` |
| a string or key holding a NUL character or a lone UTF-16 surrogate | 400 `invalid_string` |
| an integer outside 64-bit signed (PostgreSQL bigint) | 400 `integer_out_of_range` |
| a number beyond double precision (`1e400`) | 400 `number_out_of_range` |
| a NUL or lone surrogate in the URL path or a query parameter | 400 `invalid_string` |

PostgreSQL text and jsonb cannot hold a NUL; UTF-8 cannot encode a lone surrogate.
`details.path` names where (`operations[3].data.notes`).

Dates have a plausible range, `DATE_MIN`..`DATE_MAX` = 1924-08-01..2077-11-16: the Umm al-Qura
table of the Hijri calendar (`hijridate`, 1343-1500 AH), which the pipeline applies to school
dates (an attendance event carries the Hijri date of its day; the culture API answers the same
range). Any school year of the product's life lies inside; a date outside would be accepted and
then fail in the listener (`OverflowError`), so the event would be lost. The API's date and
date-time input fields (`PlausibleDateField`, `PlausibleDateTimeField`) and the offline sync
operations' timestamps and date columns refuse what lies outside (`date_in_range`).

The offline sync upload parses with `SyncBatchJSONParser`: the envelope is checked like any body,
but a bad value inside one operation fails that operation alone (`problem_of`), as any malformed
operation does, so one bad note never blocks the rest of a device's queue.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from rest_framework import serializers
from rest_framework.parsers import JSONParser

from .errors import Invalid, TooLarge

MAX_DEPTH = 32
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# The Hijri calendar table's range (see the module docstring; harry_realtime/tests/test_inputguard.py
# checks it against hijridate).
DATE_MIN, DATE_MAX = date(1924, 8, 1), date(2077, 11, 16)
API_PREFIXES = ("/api/", "/realtime/v1/api/")

# A NUL character or a lone surrogate (a str holds surrogates only when unpaired).
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
# 19 digits or more: an integer literal orjson would turn into a float (beyond 64 bits) or that
# may lie beyond int64; such bodies are parsed by the standard library, which keeps it exact.
_LONG_NUMBER = re.compile(rb"\d{19,}")


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    path: str

    def as_error(self) -> Invalid:
        return Invalid(self.code, self.message, details={"path": self.path})


MESSAGES = {
    "json_too_deep": f"JSON is nested deeper than {MAX_DEPTH} levels.",
    "invalid_string": "Text may not contain NUL characters or unpaired UTF-16 surrogates.",
    "integer_out_of_range": f"Integers lie between {INT_MIN} and {INT_MAX}.",
    "number_out_of_range": "A number is too large to be carried.",
}


def _problem(code: str, path: str) -> Problem:
    return Problem(code, MESSAGES[code], path or "$")


def _child(path: str, key: Any) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


def problem_of(value: Any, *, path: str = "", depth: int = 0) -> Problem | None:
    """The first value in `value` the pipeline cannot carry, or None. Iterative, so any depth is
    safe to look at; a container deeper than MAX_DEPTH is itself the problem."""
    stack = [(value, path, depth)]
    while stack:
        item, where, level = stack.pop()
        if isinstance(item, str):
            if _BAD_CHAR.search(item):
                return _problem("invalid_string", where)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                return _problem("integer_out_of_range", where)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return _problem("number_out_of_range", where)
        elif isinstance(item, dict | list):
            if level >= MAX_DEPTH:
                return _problem("json_too_deep", where)
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str) and _BAD_CHAR.search(key):
                        return _problem("invalid_string", _child(where, "<key>"))
                    stack.append((child, _child(where, key), level + 1))
            else:
                stack.extend((child, _child(where, index), level + 1) for index, child in enumerate(item))
    return None


def check(value: Any) -> None:
    """Raise the first problem of `value` as a 400 (`Invalid`)."""
    found = problem_of(value)
    if found is not None:
        raise found.as_error()


def _refuse_constant(name: str) -> Any:
    raise Invalid("invalid_json", f"{name} is not JSON.")


def loads(body: bytes) -> Any:
    """JSON text to values, exactly (no integer becomes a float); refuses what is not JSON and
    nesting no parser should recurse into. Values are checked separately (`problem_of`)."""
    if not _LONG_NUMBER.search(body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if "depth limit" in str(exc):
                raise _problem("json_too_deep", "$").as_error() from exc
            # orjson refuses lone surrogates and very large numbers: the standard library below
            # parses them, so that they get their own codes.
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid("invalid_json", "The body is not UTF-8 encoded JSON.") from exc
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise _problem("json_too_deep", "$").as_error() from exc
    except ValueError as exc:
        raise Invalid("invalid_json", f"The body is not valid JSON: {exc}") from exc


def read_body(stream) -> bytes:
    """At most the body limit, or 413 `payload_too_large`."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body = stream.read(limit + 1) if stream is not None else b""
    if len(body) > limit:
        raise TooLarge("payload_too_large", f"The request body exceeds {limit} bytes.", details={"maxBytes": limit})
    return body


class GuardedJSONParser(JSONParser):
    """DRF's JSON parser with the guard: every JSON endpoint parses its body here."""

    def parse(self, stream, media_type=None, parser_context=None):
        value = loads(read_body(stream))
        check(value)
        return value


class SyncBatchJSONParser(JSONParser):
    """The offline sync upload: the envelope is checked as any body; each operation is checked by
    the view (`problem_of`), so that a bad value fails its operation only."""

    def parse(self, stream, media_type=None, parser_context=None):
        value = loads(read_body(stream))
        if isinstance(value, dict) and isinstance(value.get("operations"), list):
            check({k: v for k, v in value.items() if k != "operations"})
        else:
            check(value)
        return value


# ---------------------------------------------------------------------------------------------
# Dates


def date_in_range(value: date | datetime) -> bool:
    day = value.date() if isinstance(value, datetime) else value
    return DATE_MIN <= day <= DATE_MAX


DATE_RANGE_MESSAGE = f"Dates lie between {DATE_MIN.isoformat()} and {DATE_MAX.isoformat()}."


class PlausibleDateField(serializers.DateField):
    def to_internal_value(self, value):
        day = super().to_internal_value(value)
        if not date_in_range(day):
            raise serializers.ValidationError(DATE_RANGE_MESSAGE, code="date_out_of_range")
        return day


class PlausibleDateTimeField(serializers.DateTimeField):
    def to_internal_value(self, value):
        moment = super().to_internal_value(value)
        if not date_in_range(moment):
            raise serializers.ValidationError(DATE_RANGE_MESSAGE, code="date_out_of_range")
        return moment


# ---------------------------------------------------------------------------------------------
# URL path and query string


def _error(status: int, code: str, message: str, details: Any = None) -> JsonResponse:
    # The API's error shape (`api.error_body`); api.py is not imported here: DRF's settings
    # import this module (the parser) while rest_framework.views, which api.py needs, loads.
    return JsonResponse({"error": {"code": code, "message": message, "details": details}}, status=status)


class InputGuardMiddleware:
    """Before any view, authentication or query: a declared body over the limit gets 413, and the
    API's URL path and query parameters may not hold what no column can store (a NUL,
    `/api/realtime/sync/status/%00`)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.path.startswith(API_PREFIXES):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                message = f"The request body exceeds {limit} bytes."
                return _error(413, "payload_too_large", message, {"maxBytes": limit})
            if _BAD_CHAR.search(request.path):
                return _error(400, "invalid_string", MESSAGES["invalid_string"], {"path": "url"})
            for key, values in request.GET.lists():
                if _BAD_CHAR.search(key) or any(_BAD_CHAR.search(v) for v in values):
                    return _error(400, "invalid_string", MESSAGES["invalid_string"], {"path": f"query.{key}"})
        return self.get_response(request)
