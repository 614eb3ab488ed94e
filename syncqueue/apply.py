"""Applying one offline operation: who may write what, the checked write, and its outcome.

`operation_apply` is the single path every operation takes (upload, retry, manual resolution):
the actor's checks (`Actor`, read once per upload), the table rules (`tables.py`), conflict
detection by sync version and the policy's resolution (`policy.py`), then one raw UPDATE or an
INSERT. What it returns is an `Outcome`; `row_finish` writes an outcome onto a stored queue row.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection
from django.db.models import Model
from django.utils import timezone

from harry_realtime.tenancy import Tenant, tenant_context
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
from .policy import Resolution, resolve_conflict
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
        return actor_read(tenant)


def actor_read(tenant: Tenant) -> Actor:
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


def check_row_access(actor: Actor, table: str, obj) -> None:
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
        raise record_id_unavailable()
    return model(**values)


def record_id_unavailable() -> OperationRefused:
    """The one answer to an INSERT whose record id cannot be used, wherever the id is taken."""
    return OperationRefused("already_exists", "This record id cannot be used; create the record with a new id.")


def integrity_refusal(op: IncomingOperation, exc: IntegrityError) -> OperationRefused:
    """The refusal for a constraint the checks could not see, without constraint names or SQL.

    An INSERT whose record id is taken by a row this user cannot see (another school's, hidden
    by row-level security) reaches the primary key: it answers exactly as an id this user sees
    taken (`record_id_unavailable`), so the answer tells nothing about other schools.
    """
    constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None) or ""
    if op.operation_type == "INSERT" and op.record_id is not None and constraint.endswith("_pkey"):
        return record_id_unavailable()
    return OperationRefused("integrity_error", "This write conflicts with an existing record.")


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


def completed_outcome(obj) -> Outcome:
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


def apply_resolution(spec, actor, op, obj, changes, conflict_type: str, resolution: Resolution) -> Outcome:
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
            return completed_outcome(obj)
        check_row_access(actor, op.table_name, existing)
        resolution = _resolve(actor, op, existing, changes)
        return apply_resolution(spec, actor, op, existing, changes, "offline_vs_online", resolution)

    if op.record_id is None:
        raise OperationRefused("missing_field", "UPDATE and DELETE name the record.", ["recordId"])
    obj = model.objects.select_for_update().filter(pk=op.record_id).first()
    if obj is None or (spec.soft_delete and obj.deleted_at is not None):
        raise OperationRefused("not_found", "No such record.", {"id": str(op.record_id)})
    check_row_access(actor, op.table_name, obj)
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
                return apply_resolution(spec, actor, op, obj, delete, "concurrent_update", resolution)
            updated = _update_row(spec, obj, delete, obj.sync_version)
            return Outcome(
                status="conflict",
                record=record_of(updated),
                sync_version=updated.sync_version,
                resolution=resolution,
                conflict_type="concurrent_update",
            )
        return completed_outcome(_update_row(spec, obj, delete, obj.sync_version))

    if stale:
        return apply_resolution(spec, actor, op, obj, changes, "concurrent_update", _resolve(actor, op, obj, changes))
    _check_relation_changes(actor, op.table_name, obj, changes)
    return completed_outcome(_update_row(spec, obj, {**changes, **_offline_marks(actor, op)}, obj.sync_version))


def retry_delay(retry_count: int) -> timedelta:
    return timedelta(seconds=settings.SYNC_RETRY_BASE_SECONDS * (2**retry_count))


def is_transient(exc: DatabaseError) -> bool:
    return getattr(getattr(exc, "__cause__", None), "sqlstate", None) in TRANSIENT_SQLSTATES


def set_lock_timeout() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{settings.SYNC_LOCK_TIMEOUT_MS}ms"])


def operation_from_row(row: OfflineSyncOperation) -> IncomingOperation:
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


def row_finish(row: OfflineSyncOperation, op: IncomingOperation, outcome: Outcome, **extra) -> None:
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
