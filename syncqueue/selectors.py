"""Reads for devices: sync status, pending conflicts and the delta pull. Run in a tenant context."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db import connection
from django.db.models import Avg, Count, Max, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from culture.messages import translated
from events import ferpa
from events.selectors import student_audiences
from harry_realtime import inputguard
from harry_realtime.tenancy import Tenant, dangerously_platform_context
from school.models import Role, StudentGroupEnrollment, User
from school.selectors import (
    active_group_ids_of_student,
    active_group_ids_of_teacher,
    children_of,
    student_for_user,
    teacher_for_user,
)

from .models import OfflineSyncOperation
from .policy import AUTHORITY_ROLES, PRAYERS
from .tables import TABLES, clean_changes, record_of

STATUS_SAMPLE = 200
TEACHER_AUTHORITY_ADVICE = _(
    "Your record as the teacher is suggested for attendance and feedback; settle the rest with the people involved."
)
SERVER_WINS_ADVICE = _("The school's record is kept; ask your teacher if something should change.")


def sync_status(*, device_id: str) -> dict:
    """The spec's SyncStatusResponse for one device (the caller's own rows; admins see the school's)."""
    rows = OfflineSyncOperation.objects.filter(device_id=device_id)
    counts = rows.aggregate(
        pending=Count("id", filter=Q(sync_status__in=["pending", "processing"])),
        conflicts=Count("id", filter=Q(sync_status="conflict")),
        last_sync=Max("completed_at"),
        avg_ms=Avg("operation_duration_ms", filter=Q(sync_status="completed")),
        avg_bytes=Avg("bandwidth_used_bytes"),
    )
    waiting = list(
        rows.filter(sync_status__in=["pending", "processing", "conflict"]).values(
            "prayer_time_context", "cultural_context"
        )[:STATUS_SAMPLE]
    )
    return {
        "deviceId": device_id,
        "pendingOperations": counts["pending"],
        "conflictsDetected": counts["conflicts"],
        "lastSuccessfulSync": counts["last_sync"],
        # Milliseconds: what the waiting operations took on average when they did apply.
        "estimatedSyncTime": round(counts["pending"] * (counts["avg_ms"] or 0)),
        "culturalBlockers": {
            "prayerTimeConflict": any((w["prayer_time_context"] or "").lower() in PRAYERS for w in waiting),
            "ramadanScheduleAdjustment": any((w["cultural_context"] or {}).get("ramadan_schedule") for w in waiting),
        },
        # batchingEnabled and compressionRatio are not reported: nothing here batches or
        # compresses a device's queue (docs/offline-sync.md).
        "networkOptimization": {"estimatedBandwidth": round(counts["pending"] * (counts["avg_bytes"] or 0))},
    }


def _conflict_item(row: OfflineSyncOperation, role: str, viewer: User) -> dict:
    spec = TABLES[row.table_name]
    server = spec.model.objects.filter(pk=row.record_id).first()
    server_data = None
    if server is not None:
        server_data = ferpa_filtered(viewer, row.table_name, {str(server.pk): record_of(server)})[str(server.pk)]
    try:
        changes = clean_changes(spec, role, row.operation_type, row.new_data or {})
    except Exception:  # noqa: BLE001 - a stored conflict stays listable even if rules changed since
        changes = {}
    fields = sorted(k for k, v in changes.items() if server is None or getattr(server, k) != v)
    return {
        "id": str(row.pk),
        "tableName": row.table_name,
        "recordId": str(row.record_id) if row.record_id else None,
        "conflictType": (row.conflict_metadata or {}).get("conflict_type", "concurrent_update"),
        "clientData": row.new_data,
        "serverData": server_data,
        "conflictFields": fields,
        "suggestedResolution": "teacher_authority" if role in AUTHORITY_ROLES else "server_wins",
        "culturalContext": row.cultural_context,
        "teacherInvolved": role in AUTHORITY_ROLES,
        "priority": row.priority,
        "deviceId": row.device_id,
        "operationId": row.operation_id,
        "createdAt": row.created_at,
    }


def pending_conflicts(*, user: User, viewer: User | None = None) -> dict:
    """The spec's PendingConflictsResponse for one user, as `viewer` (the user themself or an
    admin) may see it: the server's copy of a student row at the viewer's FERPA level."""
    rows = list(OfflineSyncOperation.objects.filter(user_id=user.pk, sync_status="conflict").order_by("-priority"))
    items = [_conflict_item(row, user.role, viewer or user) for row in rows]
    authority = user.role in AUTHORITY_ROLES
    return {
        "conflicts": items,
        "totalCount": len(items),
        # Follows the suggestions above, in the user's language: a teacher's or admin's own record
        # is suggested (teacher authority), anyone else's conflicts are settled by the server's.
        "culturalGuidance": {
            "islamicValuesSuggestion": translated(
                TEACHER_AUTHORITY_ADVICE if authority else SERVER_WINS_ADVICE, user.language
            ),
            "teacherAuthorityRespect": authority,
            "familyEngagementRequired": any(row.table_name in ("students", "feedback_entries") for row in rows),
        },
    }


# ---------------------------------------------------------------------------------------------
# Delta pull


@dataclass(frozen=True)
class Cursor:
    """Where a device is in the change log.

    A change's `xid` is its writing transaction's id, but transactions commit out of id order, so
    the position `(xid, seq)` alone could skip a change that commits after a later one was read.
    `floor` is the oldest transaction still running (in this database) when the device's previous
    pass began: every transaction below it had finished, so everything below it was delivered.
    A pass (pages until `hasMore` is false) reads everything committed at or above the floor; the
    next pass starts at the oldest running transaction its first page saw (`start`). Changes
    above that may come twice; never zero times.
    """

    floor: int = 0
    start: int | None = None
    xid: int = 0
    seq: int = 0

    def encode(self) -> str:
        return f"{self.floor}.{self.start if self.start is not None else ''}.{self.xid}.{self.seq}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        if not text:
            return cls()
        floor, start, xid, seq = text.split(".")
        cursor = cls(int(floor), int(start) if start else None, int(xid), int(seq))
        numbers = (cursor.floor, cursor.xid, cursor.seq, cursor.start or 0)
        if min(numbers) < 0 or max(numbers) > inputguard.INT_MAX or cursor.xid < cursor.floor:
            raise ValueError(text)
        return cursor


@dataclass
class Visibility:
    """Which change rows a user may see: all (admin), or by student and group."""

    everything: bool = False
    student_ids: tuple[str, ...] = ()
    group_ids: tuple[str, ...] = ()
    # Teachers see every row of their groups; students and families only the group rows themselves.
    group_rows_only: bool = True
    family: bool = False


def visibility_for(user: User) -> Visibility:
    if user.role == Role.ADMIN:
        return Visibility(everything=True)
    if user.role == Role.TEACHER:
        teacher = teacher_for_user(user)
        groups = active_group_ids_of_teacher(teacher.pk) if teacher else set()
        students = StudentGroupEnrollment.objects.filter(
            group_id__in=groups, status=StudentGroupEnrollment.Status.ACTIVE
        ).values_list("student_id", flat=True)
        return Visibility(student_ids=tuple(str(s) for s in students), group_ids=tuple(groups), group_rows_only=False)
    if user.role == Role.STUDENT:
        student = student_for_user(user)
        if student is None:
            return Visibility()
        ids = (str(student.pk),)
        groups = tuple(active_group_ids_of_student(student.pk))
        return Visibility(student_ids=ids, group_ids=groups)
    children = children_of(user)
    ids = tuple(str(s.pk) for s in children)
    groups = tuple({g for s in children for g in active_group_ids_of_student(s.pk)})
    return Visibility(student_ids=ids, group_ids=groups, family=True)


def ferpa_filtered(user: User, table: str, records: dict[str, dict]) -> dict[str, dict]:
    """Records of `table` by id as this user may see them: a student row at the user's FERPA
    level for that student (events/ferpa.py, the rule of every path); other tables carry no
    protected fields."""
    if table != "students" or not records:
        return records
    audiences = student_audiences(list(records))
    return {
        record_id: ferpa.filter_record(record, ferpa.access_level(user.pk, audiences.get(record_id), role=user.role))
        for record_id, record in records.items()
    }


# The oldest transaction that may still commit a change here: the snapshot's in-progress xids,
# less those known to run in another database of the cluster (a long transaction there holds the
# global xmin back but never writes our tables); with none left, the snapshot's xmax.
OLDEST_RUNNING_SQL = """
WITH snap AS (SELECT pg_current_snapshot() AS s)
SELECT coalesce(
    (SELECT min(x) FROM snap, pg_snapshot_xip(snap.s) AS x
     WHERE NOT EXISTS (
         SELECT 1 FROM pg_stat_activity a WHERE a.backend_xid = xid(x) AND a.datname <> current_database()
     )),
    (SELECT pg_snapshot_xmax(s) FROM snap)
)::text::bigint
"""


def _change_rows(visibility: Visibility, cursor: Cursor, tables: list[str], limit: int) -> tuple[int, list[tuple]]:
    where = ["xid >= %s", "(xid, seq) > (%s, %s)", "table_name = ANY(%s)"]
    with connection.cursor() as c:
        c.execute(OLDEST_RUNNING_SQL)
        xmin = c.fetchone()[0]
        params: list = [cursor.floor, cursor.xid, cursor.seq, tables]
        if not visibility.everything:
            if visibility.group_rows_only:
                where.append("(student_id = ANY(%s::uuid[]) OR (table_name = 'groups' AND group_id = ANY(%s::uuid[])))")
            else:
                where.append("(student_id = ANY(%s::uuid[]) OR group_id = ANY(%s::uuid[]))")
            params += [list(visibility.student_ids), list(visibility.group_ids)]
        c.execute(
            "SELECT seq, xid, table_name, record_id, operation, sync_version FROM sync_changes"
            f" WHERE {' AND '.join(where)} ORDER BY xid, seq LIMIT %s",
            [*params, limit],
        )
        return xmin, c.fetchall()


def _visible_record(visibility: Visibility, table: str, obj) -> bool:
    if table == "feedback_entries" and visibility.family and not obj.visible_to_family:
        return False
    return True


def changes_since(*, user: User, cursor: Cursor, tables: list[str], limit: int) -> dict:
    """Rows changed after the cursor that this user may see, deletions as tombstones, in pages."""
    visibility = visibility_for(user)
    xmin, rows = _change_rows(visibility, cursor, tables, limit)
    latest: dict[tuple[str, uuid.UUID], tuple] = {}
    for row in rows:
        latest[(row[2], row[3])] = row
    by_table: dict[str, list[uuid.UUID]] = {}
    for table, record_id in latest:
        by_table.setdefault(table, []).append(record_id)
    current: dict[tuple[str, uuid.UUID], object] = {}
    for table, ids in by_table.items():
        model = _model_of(table)
        for obj in model.objects.filter(pk__in=ids):
            current[(table, obj.pk)] = obj
    changes = []
    for (table, record_id), row in sorted(latest.items(), key=lambda item: (item[1][1], item[1][0])):
        obj = current.get((table, record_id))
        deleted = obj is None or getattr(obj, "deleted_at", None) is not None
        if deleted:
            changes.append({"table": table, "id": str(record_id), "op": "delete", "syncVersion": row[5]})
            continue
        if not _visible_record(visibility, table, obj):
            continue
        changes.append(
            {
                "table": table,
                "id": str(record_id),
                "op": "upsert",
                "syncVersion": obj.sync_version,
                "record": record_of(obj),
            }
        )
    students = ferpa_filtered(
        user, "students", {c["id"]: c["record"] for c in changes if c["table"] == "students" and "record" in c}
    )
    for change in changes:
        if change["table"] == "students" and "record" in change:
            change["record"] = students[change["id"]]
    has_more = len(rows) == limit
    start = cursor.start if cursor.start is not None else max(xmin, cursor.floor)
    if has_more:
        next_cursor = Cursor(cursor.floor, start, rows[-1][1], rows[-1][0])
    else:
        next_cursor = Cursor(start, None, start, 0)
    return {"changes": changes, "nextCursor": next_cursor.encode(), "hasMore": has_more}


def _model_of(table: str):
    from django.apps import apps

    for model in apps.get_app_config("school").get_models():
        if model._meta.db_table == table:
            return model
    raise LookupError(table)


def due_operations(*, limit: int = 200) -> list[tuple[uuid.UUID, Tenant]]:
    """Pending operations whose retry time has come, across schools, with the tenant each runs as."""
    with dangerously_platform_context():
        rows = (
            OfflineSyncOperation.objects.filter(sync_status="pending", next_retry_at__lte=timezone.now())
            .order_by("-priority", "next_retry_at")
            .values_list("pk", "organization_id", "user_id", "user__role")[:limit]
        )
        return [(pk, Tenant(organization_id=org, user_id=user, role=role)) for pk, org, user, role in rows]


def unfinished_operation_count(*, user: User, device_id: str) -> int:
    """The device's operations still pending or being applied. Caller's tenant context."""
    return OfflineSyncOperation.objects.filter(
        user=user, device_id=device_id, sync_status__in=["pending", "processing"]
    ).count()
