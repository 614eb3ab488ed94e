"""Which tables a device may write offline, which fields per role, and how values are checked."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from harry_realtime import inputguard
from harry_realtime.errors import Invalid
from school.models import Attendance, FeedbackEntry, HomeTask, Student, StudentRanking


class OperationRefused(Invalid):
    """A per-operation failure; nothing of the operation is written. In a batch it becomes that
    operation's failed result (`as_error()`); in a single request, a 400."""


ALL_OPERATIONS = frozenset({"INSERT", "UPDATE", "DELETE"})
# Keys a device may echo back from a record it pulled; they are never written from the device.
ECHOED_KEYS = frozenset({"id", "organization_id", "sync_version", "created_at", "updated_at"})


@dataclass(frozen=True)
class TableSpec:
    model: type[models.Model]
    # role -> (operations allowed, fields writable)
    access: Mapping[str, tuple[frozenset[str], frozenset[str]]]
    required_on_insert: frozenset[str] = frozenset()
    server_only: bool = False

    @property
    def soft_delete(self) -> bool:
        return any(f.name == "deleted_at" for f in self.model._meta.concrete_fields)


ATTENDANCE_FIELDS = frozenset(
    {
        "student_id",
        "group_id",
        "attendance_date",
        "status",
        "check_in_time",
        "check_out_time",
        "notes",
        "marking_method",
        "prayer_time_context",
        "ramadan_consideration",
        "cultural_notes",
    }
)
TASK_TEACHER_FIELDS = frozenset(
    {
        "student_id",
        "group_id",
        "title",
        "description",
        "task_type",
        "difficulty",
        "due_date",
        "estimated_minutes",
        "teacher_feedback",
        "grading_status",
        "score",
    }
)
TASK_STUDENT_FIELDS = frozenset({"student_response", "submission_timestamp"})
FEEDBACK_FIELDS = frozenset({"student_id", "group_id", "feedback_type", "content", "rating", "visible_to_family"})

TABLES: dict[str, TableSpec] = {
    "attendance": TableSpec(
        model=Attendance,
        access={
            "teacher": (ALL_OPERATIONS, ATTENDANCE_FIELDS),
            "admin": (ALL_OPERATIONS, ATTENDANCE_FIELDS | {"teacher_id"}),
        },
        required_on_insert=frozenset({"student_id", "group_id", "status"}),
    ),
    "home_tasks": TableSpec(
        model=HomeTask,
        access={
            "teacher": (ALL_OPERATIONS, TASK_TEACHER_FIELDS),
            "admin": (ALL_OPERATIONS, TASK_TEACHER_FIELDS | {"teacher_id"}),
            "student": (frozenset({"UPDATE"}), TASK_STUDENT_FIELDS),
        },
        required_on_insert=frozenset({"student_id", "title"}),
    ),
    "feedback_entries": TableSpec(
        model=FeedbackEntry,
        access={
            "teacher": (ALL_OPERATIONS, FEEDBACK_FIELDS),
            "admin": (ALL_OPERATIONS, FEEDBACK_FIELDS | {"teacher_id"}),
        },
        required_on_insert=frozenset({"student_id", "content"}),
    ),
    "students": TableSpec(
        model=Student,
        access={
            "admin": (
                frozenset({"UPDATE"}),
                frozenset({"full_name", "status", "personal_info", "realtime_preferences"}),
            ),
            "student": (frozenset({"UPDATE"}), frozenset({"realtime_preferences"})),
        },
    ),
    # "Only system can modify rankings": known, so the refusal names the rule, never writable.
    "student_rankings": TableSpec(model=StudentRanking, access={}, server_only=True),
}
CULTURAL_COMPLIANCE_TABLES = frozenset({"feedback_entries", "home_tasks"})


def field_of(model: type[models.Model], name: str) -> models.Field:
    """The model field a data key names; foreign keys are written by their `_id` attname."""
    for f in model._meta.concrete_fields:
        if f.attname == name:
            return f
    raise FieldDoesNotExist(name)


def clean_changes(spec: TableSpec, role: str, operation_type: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The device's data as typed values of writable fields, or OperationRefused."""
    operations, writable = spec.access.get(role, (frozenset(), frozenset()))
    if spec.server_only:
        raise OperationRefused("server_only_table", "This table is written by the server only; devices may not.")
    if operation_type not in operations:
        raise OperationRefused(
            "permission_denied", f"A {role} may not {operation_type} {spec.model._meta.db_table} records."
        )
    keys = set(data) - ECHOED_KEYS
    forbidden = sorted(keys - writable)
    if forbidden:
        raise OperationRefused("field_not_allowed", "These fields may not be written by this user.", forbidden)
    changes: dict[str, Any] = {}
    invalid: dict[str, list[str]] = {}
    for name in sorted(keys):
        f = field_of(spec.model, name)
        value = data[name]
        try:
            if f.is_relation:
                changes[name] = None if value is None and f.null else uuid.UUID(str(value))
            else:
                changes[name] = f.clean(value, None)
                if isinstance(changes[name], date) and not inputguard.date_in_range(changes[name]):
                    invalid[name] = [inputguard.DATE_RANGE_MESSAGE]
        except (ValidationError, ValueError, TypeError) as exc:
            invalid[name] = exc.messages if isinstance(exc, ValidationError) else ["Not a valid id."]
    if invalid:
        raise OperationRefused("invalid_value", "Some field values are not valid.", invalid)
    if operation_type == "INSERT":
        missing = sorted(n for n in spec.required_on_insert if changes.get(n) in (None, ""))
        if missing:
            raise OperationRefused("missing_field", "Required fields are missing.", missing)
    return changes


def record_of(instance: models.Model, *, hide: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A record as JSON-ready values, keyed like the table's columns."""
    encoder = DjangoJSONEncoder()
    out = {}
    for f in instance._meta.concrete_fields:
        if f.attname in hide:
            continue
        value = getattr(instance, f.attname)
        if value is not None and not isinstance(value, bool | int | str | dict | list | float):
            value = encoder.default(value)
        out[f.attname] = value
    return out


def values_of(instance: models.Model, names: list[str] | set[str]) -> dict[str, Any]:
    return {n: getattr(instance, n) for n in names}
