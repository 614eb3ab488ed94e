"""postgres_changes bindings of a join: parse, validate and match (Supabase's filter syntax).

A client asks `{"event": "*"|"INSERT"|"UPDATE"|"DELETE", "schema": "public", "table": "attendance",
"filter": "group_id=eq.<uuid>"}`. The join reply must echo every entry exactly as sent plus an
integer `id` (realtime-js compares them by position), and change messages name the ids they match.
Only the tables that carry realtime data may be watched; which rows a socket receives is still
decided by the topic it joined, never by the filter alone.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from harry_realtime.errors import Invalid

EVENTS = ("*", "INSERT", "UPDATE", "DELETE")
OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "in")
SCHEMA = "public"
MAX_BINDINGS = 20
MAX_IN_VALUES = 100

# The tables whose changes the realtime pipeline publishes: exactly those with a change-capture
# trigger (events/migrations/0004_change_capture.py CAPTURED_TABLES).
REALTIME_TABLES = (
    "attendance",
    "student_rankings",
    "student_achievements",
    "home_tasks",
    "feedback_entries",
    "students",
    "groups",
    "student_group_enrollments",
    "push_notifications",
)
# Tables the spec lists for realtime that have no capture trigger: a binding would never fire, so
# the join is refused with the reason. The outbox and presence reach sockets as broadcasts and
# presence messages; achievements (the catalogue) and teacher assignments change rarely and
# their effects arrive through the captured tables (student_achievements, groups' topics).
UNCAPTURED_TABLES = ("achievements", "teacher_group_assignments", "realtime_events", "realtime_presence")

_ids = itertools.count(1)


class BindingError(Invalid):
    """A binding the server refuses; `reason` is the join's protocol error reply."""

    def __init__(self, reason: str):
        super().__init__("invalid_binding", reason)

    @property
    def reason(self) -> str:
        return self.message


@cache
def table_columns() -> dict[str, dict[str, str]]:
    """{table: {column: postgres type name}} for the realtime tables, read from the models."""
    from django.apps import apps
    from django.db import connection

    tables: dict[str, dict[str, str]] = {}
    for model in apps.get_models():
        table = model._meta.db_table
        if table in REALTIME_TABLES:
            tables[table] = {f.column: (f.db_type(connection) or "text") for f in model._meta.concrete_fields}
    return tables


@dataclass(frozen=True)
class Filter:
    column: str
    operator: str
    values: tuple[str, ...]

    def matches(self, record: dict[str, Any]) -> bool:
        if self.column not in record:
            return False
        value = record[self.column]
        if value is None:
            return False
        actual = _text(value)
        if self.operator == "eq":
            return actual == self.values[0]
        if self.operator == "neq":
            return actual != self.values[0]
        if self.operator == "in":
            return actual in self.values
        return _compare(actual, self.values[0], self.operator)


@dataclass
class Binding:
    id: int
    event: str
    schema: str
    table: str | None
    filter: Filter | None
    # The entry exactly as the client sent it, echoed back with the id.
    raw: dict[str, Any] = field(repr=False)

    def echo(self) -> dict[str, Any]:
        return {**self.raw, "id": self.id}

    def matches(self, *, table: str, change_type: str, record: dict[str, Any] | None) -> bool:
        """Whether a change (type INSERT/UPDATE/DELETE) of `table` with this row is for this binding."""
        if self.event != "*" and self.event != change_type:
            return False
        if self.table is not None and self.table != table:
            return False
        if self.filter is None:
            return True
        return record is not None and self.filter.matches(record)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _compare(actual: str, expected: str, operator: str) -> bool:
    try:
        left, right = Decimal(actual), Decimal(expected)
    except InvalidOperation:
        left, right = actual, expected
    if operator == "lt":
        return left < right
    if operator == "lte":
        return left <= right
    if operator == "gt":
        return left > right
    return left >= right


def parse_filter(text: str, table: str | None) -> Filter | None:
    if text == "":
        return None
    if table is None:
        raise BindingError("a filter needs a table")
    column, sep, rest = text.partition("=")
    operator, dot, value = rest.partition(".")
    if not sep or not dot or not column:
        raise BindingError(f"filter {text!r} is not column=operator.value")
    if operator not in OPERATORS:
        raise BindingError(f"unknown filter operator {operator!r}; use one of {', '.join(OPERATORS)}")
    if column not in table_columns()[table]:
        raise BindingError(f"table {table!r} has no column {column!r}")
    if operator == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise BindingError(f"filter {text!r}: in takes a list like in.(a,b)")
        values = tuple(v.strip().strip('"') for v in value[1:-1].split(","))
        if not values or any(v == "" for v in values):
            raise BindingError(f"filter {text!r} has an empty value in its list")
        if len(values) > MAX_IN_VALUES:
            raise BindingError(f"filter {text!r} lists more than {MAX_IN_VALUES} values")
        return Filter(column=column, operator=operator, values=values)
    if value == "":
        raise BindingError(f"filter {text!r} has no value")
    return Filter(column=column, operator=operator, values=(value,))


def parse_binding(raw: Any) -> Binding:
    if not isinstance(raw, dict):
        raise BindingError("each postgres_changes entry must be an object")
    event = raw.get("event")
    if event not in EVENTS:
        raise BindingError(f"unknown event {event!r}; use one of {', '.join(EVENTS)}")
    schema = raw.get("schema")
    if schema not in (SCHEMA, "*"):
        raise BindingError(f"unknown schema {schema!r}; only {SCHEMA!r} is published")
    table = raw.get("table")
    if table in (None, "", "*"):
        table = None
    elif table in UNCAPTURED_TABLES:
        raise BindingError(f"table {table!r} is not published for realtime: its changes are not captured")
    elif not isinstance(table, str) or table not in table_columns():
        raise BindingError(f"table {table!r} is not published for realtime")
    text = raw.get("filter")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise BindingError("filter must be a string")
    return Binding(id=next(_ids), event=event, schema=SCHEMA, table=table, filter=parse_filter(text, table), raw=raw)


def parse_bindings(entries: Any) -> list[Binding]:
    """Every binding of a join's `config.postgres_changes`, in the client's order."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise BindingError("postgres_changes must be a list")
    if len(entries) > MAX_BINDINGS:
        raise BindingError(f"at most {MAX_BINDINGS} postgres_changes bindings per channel")
    return [parse_binding(entry) for entry in entries]
