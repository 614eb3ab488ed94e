"""Applying offline operations exactly once: upload, retry and manual conflict resolution.

How an upload is applied (`operations_upload`):

1. One transaction per chunk of `OPERATIONS_PER_TRANSACTION` operations (priority order), in the
   user's `tenant_context`. The first also reads the writer's role and relations once.
2. Claim: one `INSERT ... ON CONFLICT (device_id, operation_id) DO NOTHING RETURNING` writes the
   chunk's queue rows as `processing`. Only claimed operations are applied. An operation already
   stored, or claimed by a concurrent upload (the INSERT waits for that transaction; ids go in a
   fixed order, so two uploads cannot deadlock), gets its stored outcome as a `duplicate`.
3. Each claimed operation runs under its own SAVEPOINT: a refusal, conflict or database error
   (constraint, lock timeout) rolls back that operation only; the others of the chunk stand. The
   savepoint statements ride along with the operation's first query (`OperationSavepoints`), and
   what the chunk's INSERTs need to know (free record ids, free lesson days) is read in bulk
   first (`Known`). INSERTs that need nothing more are written table by table, one multi-row
   statement each (`_ChunkRun`); a statement that fails is undone and its operations run alone.
4. One UPDATE stores every operation's outcome row, then the chunk commits: each change commits
   together with its outcome row, never one without the other, so exactly-once holds.

Why savepoints and not one transaction per operation (the issue's wording): the isolation of
failures is the same, since a failed operation's savepoint undoes exactly its own writes and its
outcome row still records the failure, while commits (and their WAL flushes) drop from one per
operation to one per chunk. What changes is durability timing: an operation's change is durable
when its chunk commits, not when it finishes. If the server crashes or loses the connection
mid-chunk, the whole chunk rolls back, changes and outcome rows alike, and the device (which got
no response) uploads it again: nothing is lost or applied twice. An unexpected exception in one
operation (a bug) keeps the operations before it: their outcomes are stored and committed, the
claims of the rest are dropped, and the error propagates (HTTP 500), as when each operation
committed on its own. Chunks stay below 64 operations because every savepoint that writes takes
a subtransaction id and PostgreSQL caches only 64 per backend before all sessions' snapshots
overflow to pg_subtrans; a chunk also bounds how long an upload holds its row locks.

Retries (`operation_retry`) and manual resolution (`conflict_resolve`) work on one stored row in
one transaction each.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import psycopg
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, IntegrityError, connection, connections, transaction
from django.db.models import Model
from django.utils import timezone

from harry_realtime import jsonutil
from harry_realtime.tenancy import Tenant, dangerously_platform_context, tenant_context
from school.models import (
    Attendance,
    Group,
    Organization,
    Role,
    Student,
    StudentGroupEnrollment,
    Teacher,
    User,
)
from school.selectors import active_group_ids_of_teacher

from .models import OfflineSyncOperation
from .policy import AUTHORITY_ROLES, Resolution, effective_priority, resolve_conflict
from .tables import (
    CULTURAL_COMPLIANCE_TABLES,
    TABLES,
    OperationRefused,
    TableSpec,
    clean_changes,
    field_of,
    record_of,
    values_of,
)

# SQLSTATEs worth retrying later: lock timeout, serialization failure, deadlock, statement timeout.
TRANSIENT_SQLSTATES = {"55P03", "40001", "40P01", "57014"}
ATTENDANCE_MAX_OFFLINE = timedelta(hours=24)
# Operations applied per transaction, each under its own savepoint. Each savepoint that writes
# takes a subtransaction id; PostgreSQL caches 64 per backend, beyond which every session's
# snapshots overflow to pg_subtrans (a known slowdown), so stay below it. It also bounds how long
# one upload holds its row locks.
OPERATIONS_PER_TRANSACTION = 50


@dataclass
class IncomingOperation:
    """One operation of an upload (or of a stored row being retried), already shape-checked."""

    operation_id: str
    operation_type: str
    table_name: str
    record_id: uuid.UUID | None
    data: dict[str, Any]
    local_timestamp: datetime
    requested_priority: int = 5
    strategy: str = "teacher_authority"
    client_sync_version: int | None = None
    offline_data_hash: str | None = None
    old_data: dict[str, Any] | None = None
    cultural_context: dict[str, Any] = field(default_factory=dict)
    prayer_time_context: str | None = None
    islamic_calendar_date: str | None = None
    timezone: str = "Asia/Tashkent"
    size_bytes: int | None = None
    index: int = 0
    priority: int = 5

    def sort_key(self) -> tuple:
        # Deterministic whatever order the device sent: priority, then the device's clock, then id.
        return (-self.priority, -self.requested_priority, self.local_timestamp, self.operation_id)


@dataclass
class Actor:
    """Who writes, with the relations their writes are checked against (read once per batch)."""

    tenant: Tenant
    role: str
    user_id: uuid.UUID
    teacher_id: uuid.UUID | None = None
    teacher_group_ids: set[str] = field(default_factory=set)
    # (student_id, group_id) of active enrollments in the teacher's groups.
    enrolled_pairs: set[tuple[str, str]] = field(default_factory=set)
    own_student_id: uuid.UUID | None = None
    cultural_compliance_required: bool = False

    # Students, groups and teachers this batch already found (they are never hard-deleted while
    # rows point at them: foreign keys guard that), so a batch asks about each once.
    known_existing: set[tuple[str, Any]] = field(default_factory=set)

    @functools.cached_property
    def taught_student_ids(self) -> set[str]:
        return {s for s, _ in self.enrolled_pairs}


def actor_load(*, tenant: Tenant) -> Actor:
    """Read the writer's role and relations under their own tenant context."""
    with tenant_context(tenant):
        return _actor_read(tenant)


def _actor_read(tenant: Tenant) -> Actor:
    """`actor_load` inside a transaction that already runs in the tenant's context."""
    user = User.objects.only("id", "role").get(pk=tenant.user_id)
    org = Organization.objects.only("settings").get(pk=tenant.organization_id)
    actor = Actor(
        tenant=tenant,
        role=user.role,
        user_id=user.pk,
        cultural_compliance_required=bool((org.settings or {}).get("cultural_compliance_required")),
    )
    if user.role == Role.TEACHER:
        teacher = Teacher.objects.filter(user_id=user.pk, is_active=True, deleted_at__isnull=True).first()
        if teacher is not None:
            actor.teacher_id = teacher.pk
            actor.teacher_group_ids = active_group_ids_of_teacher(teacher.pk)
            actor.enrolled_pairs = {
                (str(s), str(g))
                for s, g in StudentGroupEnrollment.objects.filter(
                    group_id__in=actor.teacher_group_ids, status=StudentGroupEnrollment.Status.ACTIVE
                ).values_list("student_id", "group_id")
            }
    elif user.role == Role.STUDENT:
        actor.own_student_id = Student.objects.filter(user_id=user.pk).values_list("pk", flat=True).first()
    return actor


# ---------------------------------------------------------------------------------------------
# Authorization of the records an operation names or touches


def _require_exists(actor: Actor, model, pk, label: str) -> None:
    key = (label, pk)
    if key in actor.known_existing:
        return
    if not model.objects.filter(pk=pk).exists():
        raise OperationRefused("not_found", f"No {label} with this id.", {"id": str(pk)})
    actor.known_existing.add(key)


def _check_student_group(actor: Actor, student_id, group_id) -> None:
    """The student must exist, be enrolled in the group, and a teacher must teach that group."""
    if actor.role == Role.TEACHER and (str(student_id), str(group_id)) in actor.enrolled_pairs:
        return
    _require_exists(actor, Student, student_id, "student")
    _require_exists(actor, Group, group_id, "group")
    if actor.role == Role.TEACHER and str(group_id) not in actor.teacher_group_ids:
        raise OperationRefused("permission_denied", "You do not teach this group.")
    key = ("enrollment", (student_id, group_id))
    if key in actor.known_existing:
        return
    enrolled = StudentGroupEnrollment.objects.filter(
        student_id=student_id, group_id=group_id, status=StudentGroupEnrollment.Status.ACTIVE
    ).exists()
    if not enrolled:
        raise OperationRefused("student_not_in_group", "The student is not enrolled in this group.")
    actor.known_existing.add(key)


def _check_student(actor: Actor, student_id) -> None:
    if actor.role == Role.TEACHER and str(student_id) in actor.taught_student_ids:
        return
    _require_exists(actor, Student, student_id, "student")
    if actor.role == Role.TEACHER:
        raise OperationRefused("permission_denied", "You do not teach this student.")


def _check_new_values(actor: Actor, table: str, merged: dict[str, Any]) -> None:
    """The student/group/teacher a written row points at must be ones the writer may use."""
    student_id, group_id = merged.get("student_id"), merged.get("group_id")
    if table == "students":
        return
    if group_id is not None:
        _check_student_group(actor, student_id, group_id)
    else:
        _check_student(actor, student_id)
    if actor.role == Role.ADMIN and "teacher_id" in merged and merged["teacher_id"] is not None:
        _require_exists(actor, Teacher, merged["teacher_id"], "teacher")


def _check_row_access(actor: Actor, table: str, obj) -> None:
    """May this writer touch this existing row at all (beyond the organization, which RLS enforces)?"""
    if actor.role == Role.ADMIN:
        return
    if actor.role == Role.STUDENT:
        own = obj.pk if table == "students" else getattr(obj, "student_id", None)
        if actor.own_student_id is None or own != actor.own_student_id:
            raise OperationRefused("permission_denied", "This record is not yours.")
        return
    group_id = getattr(obj, "group_id", None)
    if group_id is not None and str(group_id) in actor.teacher_group_ids:
        return
    if group_id is None and str(getattr(obj, "student_id", "")) in actor.taught_student_ids:
        return
    raise OperationRefused("permission_denied", "You do not teach this record's group or student.")


# ---------------------------------------------------------------------------------------------
# Writing


def _prep(model, values: dict[str, Any]) -> tuple[list[str], list[Any]]:
    columns, params = [], []
    for name, value in values.items():
        f = field_of(model, name)
        columns.append(f.column)
        params.append(f.get_db_prep_save(value, connection))
    return columns, params


def _update_row(spec: TableSpec, obj, values: dict[str, Any], expected_version: int):
    """UPDATE ... WHERE sync_version = the version read; returns the row with its new version."""
    model = spec.model
    columns, params = _prep(model, values)
    assignments = ", ".join(f'"{c}" = %s' for c in columns)
    returned = [f.column for f in model._meta.concrete_fields]
    sql = (
        f'UPDATE "{model._meta.db_table}" SET {assignments} WHERE id = %s AND sync_version = %s'
        f" RETURNING {', '.join(f'{chr(34)}{c}{chr(34)}' for c in returned)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, obj.pk, expected_version])
        row = cursor.fetchone()
    if row is None:
        # The row is locked FOR UPDATE by this transaction, so its version cannot move under us.
        raise DatabaseError("sync_version changed under a row lock")
    fields = model._meta.concrete_fields
    values = [
        f.from_db_value(v, None, connection) if hasattr(f, "from_db_value") else v
        for f, v in zip(fields, row, strict=True)
    ]
    return model.from_db(connection.alias, [f.attname for f in fields], values)


@dataclass
class Known:
    """What a batch read up front about the rows its INSERTs create, so each need not ask again.

    Only absence is remembered. It can go stale in one direction only: another transaction
    commits the row after the read. The INSERT then violates the primary key or the lesson-day
    unique constraint, the operation's savepoint rolls back, and it runs again without `Known`.
    """

    absent_ids: set[uuid.UUID] = field(default_factory=set)
    # (student_id, group_id, attendance_date) of lesson days without an attendance mark.
    absent_marks: set[tuple[uuid.UUID, uuid.UUID, Any]] = field(default_factory=set)

    def written(self, op: IncomingOperation, record: dict[str, Any]) -> None:
        """After an operation's savepoint is released: the row it wrote exists now."""
        self.absent_ids.discard(op.record_id)
        if op.table_name == "attendance" and (key := _mark_key(record)) is not None:
            self.absent_marks.discard(key)

    def take(self, op: IncomingOperation, changes: dict[str, Any]) -> bool:
        """Claim the free record id and lesson day a planned INSERT will use; False if either may be taken."""
        mark = _lesson_day(changes) if op.table_name == "attendance" else None
        if (op.record_id is not None and op.record_id not in self.absent_ids) or (
            mark is not None and mark not in self.absent_marks
        ):
            return False
        self.absent_ids.discard(op.record_id)
        self.absent_marks.discard(mark)
        return True


def _lesson_day(changes: dict[str, Any]) -> tuple[Any, Any, date]:
    """The attendance mark's (student, group, day) of cleaned changes: the lesson-day unique key."""
    return (changes["student_id"], changes["group_id"], changes.get("attendance_date") or timezone.localdate())


def _mark_key(data: dict[str, Any]) -> tuple[uuid.UUID, uuid.UUID, Any] | None:
    try:
        day = data.get("attendance_date")
        day = timezone.localdate() if day is None else date.fromisoformat(day) if isinstance(day, str) else day
        return (uuid.UUID(str(data["student_id"])), uuid.UUID(str(data["group_id"])), day)
    except (KeyError, TypeError, ValueError):
        return None


def known_read(ops: list[IncomingOperation]) -> Known:
    """Two queries per table for a batch's INSERTs: which record ids and lesson days are free."""
    known = Known()
    ids: dict[str, set[uuid.UUID]] = {}
    marks: set[tuple[uuid.UUID, uuid.UUID, Any]] = set()
    for op in ops:
        if op.operation_type != "INSERT" or op.table_name not in TABLES:
            continue
        if op.record_id is not None:
            ids.setdefault(op.table_name, set()).add(op.record_id)
        if op.table_name == "attendance" and (key := _mark_key(op.data)) is not None:
            marks.add(key)
    for table, wanted in ids.items():
        taken = set(TABLES[table].model.objects.filter(pk__in=wanted).values_list("pk", flat=True))
        known.absent_ids |= wanted - taken
    if marks:
        students, groups, days = (set(column) for column in zip(*marks, strict=True))
        taken = set(
            Attendance.objects.filter(
                student_id__in=students, group_id__in=groups, attendance_date__in=days
            ).values_list("student_id", "group_id", "attendance_date")
        )
        known.absent_marks = marks - taken
    return known


def _new_row(spec: TableSpec, actor: Actor, op: IncomingOperation, changes: dict[str, Any], *, id_free: bool) -> Model:
    """The unsaved row an INSERT writes, with what the server adds; refused if its id is taken."""
    model = spec.model
    values = dict(changes)
    values["organization_id"] = actor.tenant.organization_id
    if op.record_id is not None:
        values["id"] = op.record_id
    if op.table_name == "attendance":
        values.setdefault("teacher_id", actor.teacher_id)
        values.update(marked_by_id=actor.user_id, created_by_id=actor.user_id, updated_by_id=actor.user_id)
    elif op.table_name == "home_tasks":
        values.setdefault("teacher_id", actor.teacher_id)
    elif op.table_name == "feedback_entries":
        values.setdefault("teacher_id", actor.teacher_id)
        values["author_id"] = actor.user_id
    if op.table_name == "attendance" and values.get("teacher_id") is None:
        raise OperationRefused("missing_field", "An admin marking attendance names the teacher.", ["teacher_id"])
    if op.record_id is not None and not id_free and model.objects.filter(pk=op.record_id).exists():
        raise OperationRefused("already_exists", "A record with this id already exists.")
    return model(**values)


def _offline_marks(actor: Actor, op: IncomingOperation) -> dict[str, Any]:
    """What the server adds to an offline write, so the change events say it came from a device."""
    if op.table_name == "attendance":
        return {
            "marked_offline": True,
            "offline_timestamp": op.local_timestamp,
            "sync_priority": op.priority,
            "sync_status": "synced",
            "updated_by_id": actor.user_id,
        }
    if op.table_name == "home_tasks" and "student_response" in op.data:
        marks = {"grading_status": "submitted"}
        if "submission_timestamp" not in op.data:
            marks["submission_timestamp"] = op.local_timestamp
        return marks
    return {}


@dataclass
class Outcome:
    status: str  # completed | conflict | failed | pending
    record: dict | None = None
    sync_version: int | None = None
    resolution: Resolution | None = None
    conflict_type: str | None = None
    error: dict | None = None

    @property
    def queue_status(self) -> str:
        if self.status == "conflict":
            return "conflict" if self.resolution and self.resolution.pending else "completed"
        return self.status

    def as_result(self, op: IncomingOperation) -> dict:
        result: dict[str, Any] = {
            "id": op.operation_id,
            "status": self.status,
            "tableName": op.table_name,
            "recordId": str(op.record_id) if op.record_id else None,
            "priority": op.priority,
        }
        if self.record is not None:
            result["record"] = self.record
            result["recordId"] = self.record["id"]
            result["syncVersion"] = self.sync_version
        if self.resolution is not None:
            result["conflict"] = {
                "type": self.conflict_type,
                "resolved": not self.resolution.pending,
                **self.resolution.as_metadata(),
            }
        if self.error is not None:
            result["error"] = self.error
        return result


def _completed(obj) -> Outcome:
    return Outcome(status="completed", record=record_of(obj), sync_version=obj.sync_version)


def _check_operation_rules(actor: Actor, op: IncomingOperation) -> None:
    if op.table_name == "attendance" and timezone.now() - op.local_timestamp > ATTENDANCE_MAX_OFFLINE:
        raise OperationRefused(
            "offline_timeout", "Attendance marked more than 24 hours ago can no longer be synced from a device."
        )
    if (
        actor.cultural_compliance_required
        and op.table_name in CULTURAL_COMPLIANCE_TABLES
        and op.cultural_context.get("islamic_values_compliant") is not True
    ):
        raise OperationRefused(
            "cultural_compliance_required",
            "This school requires culturalContext.islamic_values_compliant for feedback and home tasks.",
        )


def _is_stale(op: IncomingOperation, obj) -> bool:
    if op.client_sync_version is not None and op.client_sync_version != obj.sync_version:
        return True
    server_hash = getattr(obj, "offline_data_hash", None)
    return op.offline_data_hash is not None and server_hash is not None and op.offline_data_hash != server_hash


def _apply_resolution(spec, actor, op, obj, changes, conflict_type: str, resolution: Resolution) -> Outcome:
    if resolution.pending or not resolution.changes:
        return Outcome(
            status="conflict",
            record=record_of(obj),
            sync_version=obj.sync_version,
            resolution=resolution,
            conflict_type=conflict_type,
        )
    _check_relation_changes(actor, op.table_name, obj, resolution.changes)
    # After a merge the server's grading fields stand, so a submission does not restamp them.
    marks = _offline_marks(actor, op) if op.table_name == "attendance" else {}
    updated = _update_row(spec, obj, {**resolution.changes, **marks}, obj.sync_version)
    return Outcome(
        status="conflict",
        record=record_of(updated),
        sync_version=updated.sync_version,
        resolution=resolution,
        conflict_type=conflict_type,
    )


def _check_relation_changes(actor: Actor, table: str, obj, changes: dict[str, Any]) -> None:
    """An update that moves a row to another student, group or teacher is checked like an insert."""
    keys = {k for k in ("student_id", "group_id", "teacher_id") if hasattr(obj, k)}
    if keys & changes.keys():
        _check_new_values(actor, table, {**values_of(obj, keys), **changes})


def _resolve(actor: Actor, op: IncomingOperation, obj, changes: dict[str, Any]) -> Resolution:
    return resolve_conflict(
        table_name=op.table_name,
        role=actor.role,
        requested_strategy=op.strategy,
        client_changes=changes,
        server_values=values_of(obj, changes.keys()),
        base_values=op.old_data,
    )


def _checked_changes(actor: Actor, op: IncomingOperation) -> tuple[TableSpec, dict[str, Any]]:
    """The table and the device's cleaned data, once the operation passed the rules for its kind."""
    spec = TABLES.get(op.table_name)
    if spec is None:
        raise OperationRefused("unknown_table", f"Offline writes to {op.table_name!r} are not supported.")
    changes = clean_changes(spec, actor.role, op.operation_type, op.data if op.operation_type != "DELETE" else {})
    _check_operation_rules(actor, op)
    if op.operation_type == "INSERT":
        _check_new_values(actor, op.table_name, changes)
    return spec, changes


def insert_plan(*, actor: Actor, op: IncomingOperation, known: Known) -> Model | None:
    """The unsaved row of an INSERT that needs no lookup, to be written with others in one statement.

    None when the operation must go through `operation_apply` (not an INSERT, or its record id or
    lesson day may be taken). Refuses exactly as `operation_apply` would.
    """
    if op.operation_type != "INSERT" or op.table_name not in TABLES:
        return None
    spec, changes = _checked_changes(actor, op)
    if not known.take(op, changes):
        return None
    return _new_row(spec, actor, op, {**changes, **_offline_marks(actor, op)}, id_free=True)


def operation_apply(*, actor: Actor, op: IncomingOperation, known: Known | None = None) -> Outcome:
    """Apply one operation inside the caller's transaction; raises OperationRefused on a refusal."""
    spec, changes = _checked_changes(actor, op)
    model = spec.model

    if op.operation_type == "INSERT":
        existing = None
        if op.table_name == "attendance":
            student_id, group_id, day = mark = _lesson_day(changes)
            if known is None or mark not in known.absent_marks:
                # Another device (or the web app) marked the same student for the same lesson day.
                existing = (
                    model.objects.select_for_update()
                    .filter(student_id=student_id, group_id=group_id, attendance_date=day)
                    .first()
                )
        if existing is None:
            id_free = known is not None and op.record_id in known.absent_ids
            obj = _new_row(spec, actor, op, {**changes, **_offline_marks(actor, op)}, id_free=id_free)
            obj.save(force_insert=True)
            return _completed(obj)
        _check_row_access(actor, op.table_name, existing)
        resolution = _resolve(actor, op, existing, changes)
        return _apply_resolution(spec, actor, op, existing, changes, "offline_vs_online", resolution)

    if op.record_id is None:
        raise OperationRefused("missing_field", "UPDATE and DELETE name the record.", ["recordId"])
    obj = model.objects.select_for_update().filter(pk=op.record_id).first()
    if obj is None or (spec.soft_delete and obj.deleted_at is not None):
        raise OperationRefused("not_found", "No such record.", {"id": str(op.record_id)})
    _check_row_access(actor, op.table_name, obj)
    if op.client_sync_version is None and op.offline_data_hash is None:
        raise OperationRefused(
            "sync_version_required", "UPDATE and DELETE carry the syncVersion the device last saw.", ["syncVersion"]
        )
    stale = _is_stale(op, obj)

    if op.operation_type == "DELETE":
        if not spec.soft_delete:
            raise OperationRefused("operation_not_allowed", "Records of this table are not deleted from devices.")
        delete = {"deleted_at": timezone.now()}
        if hasattr(obj, "deleted_by_id"):
            delete["deleted_by_id"] = actor.user_id
        if stale:
            resolution = _resolve(actor, op, obj, delete)
            if resolution.pending or not resolution.changes:
                return _apply_resolution(spec, actor, op, obj, delete, "concurrent_update", resolution)
            updated = _update_row(spec, obj, delete, obj.sync_version)
            return Outcome(
                status="conflict",
                record=record_of(updated),
                sync_version=updated.sync_version,
                resolution=resolution,
                conflict_type="concurrent_update",
            )
        return _completed(_update_row(spec, obj, delete, obj.sync_version))

    if stale:
        return _apply_resolution(spec, actor, op, obj, changes, "concurrent_update", _resolve(actor, op, obj, changes))
    _check_relation_changes(actor, op.table_name, obj, changes)
    return _completed(_update_row(spec, obj, {**changes, **_offline_marks(actor, op)}, obj.sync_version))


# ---------------------------------------------------------------------------------------------
# The queue row


_DJANGO_JSON = DjangoJSONEncoder()


def _json(value) -> str | None:
    return None if value is None else jsonutil.dumps(value, default=_DJANGO_JSON.default).decode()


# Written when an operation is claimed, before it is applied: (column, SQL type).
CLAIM_COLUMNS = (
    ("organization_id", "uuid"),
    ("user_id", "uuid"),
    ("device_id", "text"),
    ("operation_id", "text"),
    ("operation_type", "text"),
    ("table_name", "text"),
    ("record_id", "uuid"),
    ("old_data", "jsonb"),
    ("new_data", "jsonb"),
    ("client_sync_version", "bigint"),
    ("offline_data_hash", "text"),
    ("priority", "integer"),
    ("sync_status", "text"),
    ("retry_count", "integer"),
    ("max_retries", "integer"),
    ("conflict_resolution_strategy", "text"),
    ("result", "jsonb"),
    ("cultural_context", "jsonb"),
    ("islamic_calendar_date", "text"),
    ("prayer_time_context", "text"),
    ("local_timestamp", "timestamptz"),
    ("timezone", "text"),
    ("bandwidth_used_bytes", "integer"),
)
# Written with the outcome, in the same transaction.
OUTCOME_COLUMNS = (
    ("record_id", "uuid"),
    ("sync_status", "text"),
    ("next_retry_at", "timestamptz"),
    ("failed_at", "timestamptz"),
    ("completed_at", "timestamptz"),
    ("conflict_detected", "boolean"),
    ("conflict_metadata", "jsonb"),
    ("result", "jsonb"),
    ("operation_duration_ms", "integer"),
    ("error_message", "text"),
)


def _recordset(columns) -> str:
    return ", ".join(f"{c} {t}" for c, t in columns)


# A whole chunk's rows travel as one jsonb parameter: one short, constant statement to parse,
# whatever the chunk size (a JSON null becomes an SQL NULL).
CLAIM_SQL = (
    f"INSERT INTO offline_sync_queue ({', '.join(c for c, _ in CLAIM_COLUMNS)})"
    f" SELECT {', '.join(c for c, _ in CLAIM_COLUMNS)}"
    f" FROM jsonb_to_recordset(%s::jsonb) AS x({_recordset(CLAIM_COLUMNS)}) ORDER BY operation_id"
    " ON CONFLICT (device_id, operation_id) DO NOTHING RETURNING operation_id"
)
STORE_OUTCOMES_SQL = (
    f"UPDATE offline_sync_queue AS q SET {', '.join(f'{c} = v.{c}' for c, _ in OUTCOME_COLUMNS)}"
    f" FROM jsonb_to_recordset(%s::jsonb) AS v(operation_id text, {_recordset(OUTCOME_COLUMNS)})"
    " WHERE q.device_id = %s AND q.operation_id = v.operation_id AND q.sync_status = 'processing'"
)


def _claim_row(actor: Actor, device_id: str, op: IncomingOperation) -> dict:
    return {
        "organization_id": actor.tenant.organization_id,
        "user_id": actor.user_id,
        "device_id": device_id,
        "operation_id": op.operation_id,
        "operation_type": op.operation_type,
        "table_name": op.table_name,
        "record_id": op.record_id,
        "old_data": op.old_data,
        "new_data": op.data,
        "client_sync_version": op.client_sync_version,
        "offline_data_hash": op.offline_data_hash,
        "priority": op.priority,
        "sync_status": "processing",
        "retry_count": 0,
        "max_retries": settings.SYNC_MAX_RETRIES,
        "conflict_resolution_strategy": op.strategy,
        "result": {},
        "cultural_context": op.cultural_context,
        "islamic_calendar_date": op.islamic_calendar_date,
        "prayer_time_context": op.prayer_time_context,
        "local_timestamp": _timestamp(op.local_timestamp),
        "timezone": op.timezone,
        "bandwidth_used_bytes": op.size_bytes,
    }


def _timestamp(value: datetime | None) -> str | None:
    """Full precision: DjangoJSONEncoder would cut a timestamp column to milliseconds."""
    return None if value is None else value.isoformat()


def _claim(actor: Actor, device_id: str, ops: list[IncomingOperation]) -> set[str]:
    """Insert the queue rows of `ops` as `processing`; returns the operation ids this call now owns.

    `ON CONFLICT (device_id, operation_id) DO NOTHING`: an id already stored, or claimed by a
    concurrent upload that commits first (this statement waits for it), is not ours to apply.
    Rows go in operation-id order, so two uploads claiming overlapping sets wait, never deadlock.
    """
    if not ops:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(CLAIM_SQL, [_json([_claim_row(actor, device_id, op) for op in ops])])
        return {row[0] for row in cursor.fetchall()}


def _outcome_values(op: IncomingOperation, outcome: Outcome, started: float) -> dict:
    now = timezone.now()
    result = outcome.as_result(op)
    metadata = {}
    if outcome.resolution is not None:
        metadata = {"conflict_type": outcome.conflict_type, "resolved_at": now.isoformat(), **result["conflict"]}
    return {
        "record_id": result["recordId"],
        "sync_status": outcome.queue_status,
        "next_retry_at": now + retry_delay(0) if outcome.status == "pending" else None,
        "failed_at": now if outcome.status == "failed" else None,
        "completed_at": now if outcome.queue_status == "completed" else None,
        "conflict_detected": outcome.resolution is not None,
        "conflict_metadata": metadata,
        "result": result,
        "operation_duration_ms": int((time.perf_counter() - started) * 1000),
        "error_message": outcome.error["message"] if outcome.error else None,
    }


def _store_outcomes(device_id: str, done: list[tuple[str, dict]]) -> None:
    """One UPDATE writes the outcome of every operation this transaction applied or refused."""
    if not done:
        return
    rows = _json(
        [
            {
                "operation_id": operation_id,
                **values,
                **{c: _timestamp(values[c]) for c, t in OUTCOME_COLUMNS if t == "timestamptz"},
            }
            for operation_id, values in done
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(STORE_OUTCOMES_SQL, [rows, device_id])
        if cursor.rowcount != len(done):
            raise DatabaseError(f"stored {cursor.rowcount} of {len(done)} sync outcomes")


def _release_claims(device_id: str, operation_ids: list[str]) -> None:
    """Drop the claims of operations not applied, so a retried upload applies them."""
    if operation_ids:
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM offline_sync_queue WHERE device_id = %s AND operation_id = ANY(%s)"
                " AND sync_status = 'processing'",
                [device_id, operation_ids],
            )


def _stored_results(device_id: str, operation_ids: list[str]) -> dict[str, dict]:
    """Results for operations another upload stored; an id of another user's device is refused."""
    if not operation_ids:
        return {}
    stored = dict(
        OfflineSyncOperation.objects.filter(device_id=device_id, operation_id__in=operation_ids).values_list(
            "operation_id", "result"
        )
    )
    results = {}
    for operation_id in operation_ids:
        if operation_id in stored:
            results[operation_id] = {"id": operation_id, "status": "duplicate", "original": stored[operation_id]}
        else:
            # The pair is taken by another user's device: their row is invisible here.
            results[operation_id] = {
                "id": operation_id,
                "status": "failed",
                "error": {
                    "code": "operation_id_taken",
                    "message": "This device and operation id belong to another user.",
                },
            }
    return results


def retry_delay(retry_count: int) -> timedelta:
    return timedelta(seconds=settings.SYNC_RETRY_BASE_SECONDS * (2**retry_count))


def _transient(exc: DatabaseError) -> bool:
    return getattr(getattr(exc, "__cause__", None), "sqlstate", None) in TRANSIENT_SQLSTATES


def _set_lock_timeout() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{settings.SYNC_LOCK_TIMEOUT_MS}ms"])


class OperationSavepoints:
    """A savepoint per operation, without a round trip of its own.

    Installed as the connection's execute wrapper for a chunk. `SAVEPOINT` (and the previous
    operation's `RELEASE SAVEPOINT`) travel in front of the operation's first statement, in one
    simple-protocol query (psycopg's client-side binding cursor, Django's default). An operation
    refused before it touched the database never creates one. Only a rollback costs a round trip.
    """

    def __init__(self, using: str = "default"):
        self.using = using
        self.pending: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        if not self.pending:
            return execute(sql, params, many, context)
        prefix, self.pending = self.pending, []
        raw = context["cursor"].cursor
        if many or not isinstance(raw, psycopg.ClientCursor):
            for statement in prefix:
                raw.execute(statement)
            return execute(sql, params, many, context)
        result = execute("; ".join([*prefix, sql]), params, many, context)
        for _ in prefix:
            raw.nextset()  # the caller reads the result of its own statement, the last one
        return result

    def flush(self) -> None:
        if self.pending:
            with connections[self.using].cursor() as cursor:
                cursor.execute("SELECT 1")

    @contextmanager
    def operation(self) -> Iterator[None]:
        # One name for all: operations run one after another, each released before the next,
        # and constant statements keep psycopg's query cache useful.
        name = "sync_operation"
        start = f"SAVEPOINT {name}"
        self.pending.append(start)
        try:
            yield
        except BaseException:
            if start in self.pending:
                self.pending.remove(start)  # never sent: nothing to undo
            else:
                # As Django's own atomic() does: clear the flag its error handling may have set,
                # roll back to the savepoint, and flag the whole transaction if even that fails.
                transaction.set_rollback(False, using=self.using)
                try:
                    with connections[self.using].cursor() as cursor:
                        cursor.execute(f"ROLLBACK TO SAVEPOINT {name}")
                except BaseException:
                    transaction.set_rollback(True, using=self.using)
                    raise
                self.pending.append(f"RELEASE SAVEPOINT {name}")
            raise
        if start in self.pending:
            self.pending.remove(start)
        else:
            self.pending.append(f"RELEASE SAVEPOINT {name}")


def _apply_isolated(actor: Actor, op: IncomingOperation, known: Known, savepoints: OperationSavepoints) -> Outcome:
    """Apply one claimed operation under its own savepoint: a failure undoes this operation only.

    Unexpected errors (bugs, a lost connection) propagate after the savepoint rolled back.
    """
    for attempt in range(2):
        try:
            with savepoints.operation():
                outcome = operation_apply(actor=actor, op=op, known=known if attempt == 0 else None)
            if outcome.record is not None:
                known.written(op, outcome.record)
            return outcome
        except OperationRefused as refusal:
            return Outcome(status="failed", error=refusal.as_error())
        except IntegrityError as exc:
            # Another transaction created the row or lesson-day mark since it was read: look again.
            if attempt == 0:
                continue
            return Outcome(status="failed", error={"code": "integrity_error", "message": str(exc).split("\n")[0]})
        except DatabaseError as exc:
            if not _transient(exc):
                raise
            return Outcome(
                status="pending",
                error={"code": "transient_error", "message": str(exc).split("\n")[0], "retryable": True},
            )
    raise AssertionError("unreachable")


def _plan_isolated(
    actor: Actor, op: IncomingOperation, known: Known, savepoints: OperationSavepoints
) -> Model | Outcome | None:
    """`insert_plan` under the operation's savepoint: a row to write with others, a refusal, or
    None (the operation takes `_apply_isolated`, which also judges any database error here)."""
    try:
        with savepoints.operation():
            return insert_plan(actor=actor, op=op, known=known)
    except OperationRefused as refusal:
        return Outcome(status="failed", error=refusal.as_error())
    except DatabaseError:
        return None


def _insert_together(rows: list[Model], savepoints: OperationSavepoints) -> bool:
    """One multi-row INSERT under one savepoint; False (and nothing written) if any row failed."""
    try:
        with savepoints.operation():
            type(rows[0]).objects.bulk_create(rows)
    except DatabaseError:
        return False
    return True


class _ChunkRun:
    """Applies a chunk's claimed operations and collects their outcome rows, in priority order.

    INSERTs that need no lookup are planned (`insert_plan`) and written table by table, one
    multi-row statement each (`_insert_together`): per row, the parse, plan, executor start and
    trigger set-up of a statement are most of what the database spends. Any other operation
    first writes what was planned before it, so it sees those rows. Within a table the rows keep
    the priority order, and so do their change events. Across tables no reader can tell the
    order of the writes, since the chunk commits at once, except by event seq: home tasks and
    feedback share a student's `tasks:` topic, and there a chunk's events come table by table.
    If a statement fails (a lesson day or id taken meanwhile, a lock timeout), its savepoint
    undoes it and each of its operations runs again on its own, with its own outcome.
    """

    def __init__(self, actor: Actor, ops: list[IncomingOperation], results: dict[str, dict]):
        self.actor, self.results = actor, results
        self.position = {op.operation_id: index for index, op in enumerate(ops)}
        self.known = known_read(ops)
        self.savepoints = OperationSavepoints()
        self.planned: dict[type[Model], list[tuple[IncomingOperation, Model, float]]] = {}
        self.done: list[tuple[str, dict]] = []

    def apply(self, op: IncomingOperation) -> None:
        started = time.perf_counter()
        try:
            planned = _plan_isolated(self.actor, op, self.known, self.savepoints)
        except Exception:
            self.flush()  # the operations planned before this one stand
            raise
        if isinstance(planned, Outcome):
            self._record(op, planned, started)
        elif planned is not None:
            self.planned.setdefault(type(planned), []).append((op, planned, started))
        else:
            self.flush()
            self._record(op, _apply_isolated(self.actor, op, self.known, self.savepoints), started)

    def flush(self) -> None:
        while self.planned:
            planned = self.planned.pop(next(iter(self.planned)))
            if _insert_together([row for _, row, _ in planned], self.savepoints):
                for op, row, started in planned:
                    outcome = _completed(row)
                    self.known.written(op, outcome.record)
                    self._record(op, outcome, started)
                continue
            for op, _, started in planned:
                self._record(op, _apply_isolated(self.actor, op, self.known, self.savepoints), started)

    def finished(self) -> list[tuple[str, dict]]:
        """(operation id, outcome row) of every operation done, in the chunk's priority order."""
        return sorted(self.done, key=lambda item: self.position[item[0]])

    def _record(self, op: IncomingOperation, outcome: Outcome, started: float) -> None:
        values = _outcome_values(op, outcome, started)
        self.results[op.operation_id] = values["result"]
        self.done.append((op.operation_id, values))


def _run_chunk(actor: Actor, device_id: str, ops: list[IncomingOperation], results: dict[str, dict]) -> list[str]:
    """Claim, apply and record `ops` (priority order) in the current transaction.

    Fills `results` by operation id and returns the ids applied here. An unexpected error in
    one operation stops the chunk: the operations finished before it keep their outcomes, the
    claims of the rest are released, and the error is re-raised once the caller has committed.
    """
    # The claim waits as long as a concurrent upload of the same operations takes to commit (one
    # chunk); the lock timeout, which turns a wait into a `pending` outcome, is for the operations.
    claimed = _claim(actor, device_id, ops)
    _set_lock_timeout()
    mine = [op for op in ops if op.operation_id in claimed]
    run = _ChunkRun(actor, mine, results)
    crash: Exception | None = None
    with connection.execute_wrapper(run.savepoints):
        try:
            for op in mine:
                run.apply(op)
            run.flush()
        except Exception as exc:  # noqa: BLE001 - re-raised by the caller after the commit
            crash = exc
            finished = {operation_id for operation_id, _ in run.done}
            _release_claims(device_id, [op.operation_id for op in mine if op.operation_id not in finished])
        done = run.finished()
        _store_outcomes(device_id, done)
        run.savepoints.flush()
    results.update(_stored_results(device_id, [op.operation_id for op in ops if op.operation_id not in claimed]))
    if crash is not None:
        raise _ChunkCrashed(crash)
    return [operation_id for operation_id, _ in done]


class _ChunkCrashed(Exception):
    """Carries an unexpected error out of a chunk whose finished operations are to be kept."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


# Chunk transactions open at once per server process. Under ASGI every request runs in a
# thread of its own, so twenty devices would otherwise keep twenty transactions open, each
# mostly waiting for the GIL while holding its locks and subtransaction ids (which every other
# session's snapshot must then carry and search). Waiting here, before BEGIN, costs nothing.
_chunk_slots = threading.BoundedSemaphore(settings.SYNC_CONCURRENT_TRANSACTIONS)


def _run_chunk_committed(tenant: Tenant, run) -> Any:
    """Run `run()` in its own tenant transaction; commit what a crashed chunk finished, then re-raise."""
    crashed = None
    with _chunk_slots, tenant_context(tenant):
        try:
            value = run()
        except _ChunkCrashed as exc:
            crashed = exc.error
    if crashed is not None:
        raise crashed
    return value


def operations_upload(
    *, tenant: Tenant, device_id: str, operations: list[IncomingOperation | dict], battery_mode: str = "standard"
) -> dict:
    """Apply a device's batch: new operations in priority order, stored outcomes for repeats.

    `operations` holds parsed operations, or for an operation refused on its shape, its failed result.
    Results come back in the order the device sent them.
    """
    results: list[dict | None] = [None] * len(operations)
    first_of: dict[str, int] = {}
    to_apply: list[IncomingOperation] = []
    by_id: dict[str, dict] = {}
    applied: list[str] = []

    def first_chunk() -> Actor:
        actor = _actor_read(tenant)
        for index, op in enumerate(operations):
            if not isinstance(op, IncomingOperation):
                results[index] = op
                continue
            op.index = index
            op.priority = effective_priority(
                table_name=op.table_name,
                data=op.data,
                role=actor.role,
                cultural_context=op.cultural_context,
                prayer_time_context=op.prayer_time_context,
                battery_mode=battery_mode,
            )
            if op.operation_id not in first_of:
                first_of[op.operation_id] = index
                to_apply.append(op)
        to_apply.sort(key=IncomingOperation.sort_key)
        applied.extend(_run_chunk(actor, device_id, to_apply[:OPERATIONS_PER_TRANSACTION], by_id))
        return actor

    actor = _run_chunk_committed(tenant, first_chunk)
    for start in range(OPERATIONS_PER_TRANSACTION, len(to_apply), OPERATIONS_PER_TRANSACTION):
        chunk = to_apply[start : start + OPERATIONS_PER_TRANSACTION]
        applied.extend(_run_chunk_committed(tenant, lambda chunk=chunk: _run_chunk(actor, device_id, chunk, by_id)))
    for index, op in enumerate(operations):
        if results[index] is not None:
            continue
        if first_of[op.operation_id] == index:
            results[index] = by_id[op.operation_id]
        else:
            results[index] = {"id": op.operation_id, "status": "duplicate", "original": by_id[op.operation_id]}
    summary: dict[str, int] = {}
    for result in results:
        summary[result["status"]] = summary.get(result["status"], 0) + 1
    return {"deviceId": device_id, "results": results, "appliedOrder": applied, "summary": summary}


# ---------------------------------------------------------------------------------------------
# Stored operations: retry and manual resolution


def _operation_from_row(row: OfflineSyncOperation) -> IncomingOperation:
    return IncomingOperation(
        operation_id=row.operation_id,
        operation_type=row.operation_type,
        table_name=row.table_name,
        record_id=row.record_id,
        data=row.new_data or {},
        local_timestamp=row.local_timestamp,
        strategy=row.conflict_resolution_strategy,
        client_sync_version=row.client_sync_version,
        offline_data_hash=row.offline_data_hash,
        old_data=row.old_data,
        cultural_context=row.cultural_context or {},
        prayer_time_context=row.prayer_time_context,
        islamic_calendar_date=row.islamic_calendar_date,
        timezone=row.timezone,
        priority=row.priority,
    )


def _finish_row(row: OfflineSyncOperation, op: IncomingOperation, outcome: Outcome, **extra) -> None:
    now = timezone.now()
    row.result = outcome.as_result(op)
    row.sync_status = outcome.queue_status
    row.error_message = outcome.error["message"] if outcome.error else None
    row.completed_at = now if row.sync_status == "completed" else None
    row.failed_at = now if row.sync_status == "failed" else None
    if outcome.resolution is not None:
        row.conflict_detected = True
        row.conflict_metadata = {
            "conflict_type": outcome.conflict_type,
            "resolved_at": now.isoformat(),
            **row.result["conflict"],
            **extra,
        }
    row.save()


def due_operations(*, limit: int = 200) -> list[tuple[uuid.UUID, Tenant]]:
    """Pending operations whose retry time has come, across schools, with the tenant each runs as."""
    with dangerously_platform_context():
        rows = (
            OfflineSyncOperation.objects.filter(sync_status="pending", next_retry_at__lte=timezone.now())
            .order_by("-priority", "next_retry_at")
            .values_list("pk", "organization_id", "user_id", "user__role")[:limit]
        )
        return [(pk, Tenant(organization_id=org, user_id=user, role=role)) for pk, org, user, role in rows]


def operation_retry(*, operation_pk: uuid.UUID, tenant: Tenant) -> str | None:
    """Retry one pending operation in its owner's tenant context; returns its new status.

    None when another worker holds it or it is no longer due.
    """
    actor = actor_load(tenant=tenant)
    failure: Outcome | None = None
    try:
        with tenant_context(tenant):
            _set_lock_timeout()
            row = (
                OfflineSyncOperation.objects.select_for_update(skip_locked=True)
                .filter(pk=operation_pk, sync_status="pending", next_retry_at__lte=timezone.now())
                .first()
            )
            if row is None:
                return None
            op = _operation_from_row(row)
            outcome = operation_apply(actor=actor, op=op)
            row.retry_count += 1
            row.last_retry_at = timezone.now()
            row.next_retry_at = None
            _finish_row(row, op, outcome)
            return row.sync_status
    except OperationRefused as refusal:
        failure = Outcome(status="failed", error=refusal.as_error())
    except DatabaseError as exc:
        if not _transient(exc):
            raise
        failure = Outcome(status="pending", error={"code": "transient_error", "message": str(exc).split("\n")[0]})
    with tenant_context(tenant):
        row = OfflineSyncOperation.objects.select_for_update().get(pk=operation_pk)
        if row.sync_status != "pending":
            return row.sync_status
        op = _operation_from_row(row)
        row.retry_count += 1
        row.last_retry_at = timezone.now()
        if failure.status == "pending" and row.retry_count >= row.max_retries:
            message = f"Gave up after {row.retry_count} tries: {failure.error['message']}"
            failure = Outcome(status="failed", error={"code": "retries_exhausted", "message": message})
        row.next_retry_at = row.last_retry_at + retry_delay(row.retry_count) if failure.status == "pending" else None
        _finish_row(row, op, failure)
        return row.sync_status


@transaction.atomic
def conflict_resolve(
    *,
    user: User,
    conflict_id: uuid.UUID,
    resolution: str,
    teacher_override: bool = False,
    admin_approval: bool = False,
    cultural_considerations: dict | None = None,
) -> dict:
    """Settle a conflict the device left to the user (`prompt_user`). Runs in the caller's context."""
    from harry_realtime.api import ApiError

    row = OfflineSyncOperation.objects.select_for_update().filter(pk=conflict_id).first()
    if row is None:
        raise ApiError("not_found", "No such conflict.", status_code=404)
    if row.user_id != user.pk and user.role != Role.ADMIN:
        raise ApiError("permission_denied", "Only the user themself or an admin resolves a conflict.", status_code=403)
    if row.sync_status != "conflict":
        raise ApiError("conflict_not_pending", "This conflict is not pending.", status_code=409)
    if admin_approval and user.role != Role.ADMIN:
        raise ApiError("admin_approval_requires_admin", "Only an admin gives admin approval.", status_code=403)
    if teacher_override and user.role not in AUTHORITY_ROLES:
        raise ApiError("teacher_override_requires_teacher", "Only teachers and admins override.", status_code=403)
    tenant = Tenant(organization_id=row.organization_id, user_id=user.pk, role=user.role)
    actor = actor_load(tenant=tenant)
    op = _operation_from_row(row)
    spec = TABLES[op.table_name]
    try:
        changes = clean_changes(spec, actor.role, op.operation_type, op.data)
        obj = spec.model.objects.select_for_update().filter(pk=op.record_id).first()
        if obj is None:
            raise OperationRefused("not_found", "The record is gone.", {"id": str(op.record_id)})
        _check_row_access(actor, op.table_name, obj)
        chosen = "client_wins" if (teacher_override or admin_approval) else resolution
        result = resolve_conflict(
            table_name="manual",
            role=actor.role,
            requested_strategy=chosen,
            client_changes=changes,
            server_values=values_of(obj, changes.keys()),
            base_values=op.old_data,
        )
        result.rule = f"manual:{chosen}"
        outcome = _apply_resolution(spec, actor, op, obj, changes, "concurrent_update", result)
    except OperationRefused as refusal:
        raise ApiError(refusal.code, refusal.message, status_code=400, details=refusal.details) from refusal
    _finish_row(
        row,
        op,
        outcome,
        resolved_by=str(user.pk),
        teacher_override=teacher_override,
        admin_approval=admin_approval,
        cultural_considerations=cultural_considerations or {},
    )
    return {
        "conflictId": str(row.pk),
        "status": "resolved",
        "resolution": chosen,
        "result": row.result,
        "record": outcome.record,
        "syncVersion": outcome.sync_version,
    }
