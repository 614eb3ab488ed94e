"""Attendance collaboration (spec "Teacher Attendance Real-time Collaboration"): marking claims
shared through Redis (`marking.py`) and the marks themselves, written to `school.Attendance`.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from events.messages import broadcast_message
from events.topics import attendance_topic, group_name
from harry_realtime.errors import Conflict, Forbidden, Invalid
from school import selectors as school_selectors
from school.models import Attendance, Group, Role, StudentGroupEnrollment, User

from . import marking, selectors

audit = logging.getLogger("harry.audit")


def _broadcast_on_commit(topic: str, event: str, payload: dict) -> None:
    """Marking notices are not stored (not replayable): a claim lapses within seconds, and the
    marks themselves are attendance rows that reach sockets as stored events."""
    message = broadcast_message(topic=topic, event=event, payload=payload)
    transaction.on_commit(lambda: async_to_sync(get_channel_layer().group_send)(group_name(topic), message))


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def _marking_group(user: User, group_id) -> Group:
    group = selectors.group_or_not_found(group_id)
    if user.role not in (Role.TEACHER, Role.ADMIN) or not school_selectors.user_may_watch_group(user, group.pk):
        raise Forbidden("forbidden", "Only the group's teachers and admins mark its attendance.")
    return group


def _enrolled_student_ids(group: Group, student_ids: list | None) -> list[str]:
    enrolled = StudentGroupEnrollment.objects.filter(group=group, status=StudentGroupEnrollment.Status.ACTIVE)
    ids = {str(s) for s in enrolled.values_list("student_id", flat=True)}
    if student_ids is None:
        return sorted(ids)
    wanted = [str(s) for s in student_ids]
    missing = [s for s in wanted if s not in ids]
    if missing:
        raise Invalid(
            "student_not_in_group", "These students are not enrolled in the group.", details={"studentIds": missing}
        )
    return list(dict.fromkeys(wanted))


def _marker(user: User) -> dict:
    teacher = school_selectors.teacher_for_user(user)
    return {"teacherId": str(teacher.pk) if teacher else None, "userId": str(user.pk), "name": user.full_name}


def _names(user_ids: list[str]) -> dict[str, str]:
    return {str(u.pk): u.full_name or u.username for u in User.objects.filter(pk__in=user_ids)}


def _claim_or_refuse(user: User, group: Group, student_ids: list[str], *, override: bool) -> int:
    if override and user.role != Role.ADMIN:
        raise Forbidden("forbidden", "Only an admin may override another teacher's marking.")
    result = marking.claim(group_id=str(group.pk), user_id=str(user.pk), student_ids=student_ids, override=override)
    if result.ok:
        if override:
            audit.info("attendance_override user=%s group=%s students=%s", user.pk, group.pk, student_ids)
        return result.expires_at_ms
    if result.limit_reached_by is not None:
        names = _names(result.limit_reached_by)
        audit.info("attendance_marking_limit user=%s group=%s", user.pk, group.pk)
        raise Conflict(
            "marking_limit_reached",
            f"{len(result.limit_reached_by)} teachers are already marking this group.",
            details={
                "maxConcurrentMarkers": settings.ATTENDANCE_MAX_CONCURRENT_MARKERS,
                "markingTeachers": [{"userId": u, "name": names.get(u)} for u in result.limit_reached_by],
            },
        )
    names = _names([c.user_id for c in result.conflicts])
    audit.info("attendance_concurrent_marking user=%s group=%s conflicts=%s", user.pk, group.pk, result.conflicts)
    raise Conflict(
        "concurrent_marking",
        "Another teacher is marking this student right now.",
        details={
            "conflicts": [
                {
                    "studentId": c.student_id,
                    "markingTeacher": {"userId": c.user_id, "name": names.get(c.user_id)},
                    "until": _iso_ms(c.expires_at_ms),
                }
                for c in result.conflicts
            ]
        },
    )


def attendance_marking_start(*, user: User, group_id, student_ids: list | None = None, override: bool = False) -> dict:
    """Start (or extend) the caller's marking of a group: claims the students for the marking
    window and tells the other teachers on the group's topic (`marking_in_progress`)."""
    group = _marking_group(user, group_id)
    students = _enrolled_student_ids(group, student_ids)
    expires_ms = _claim_or_refuse(user, group, students, override=override)
    payload = {
        "groupId": str(group.pk),
        "studentIds": students,
        "teacher": _marker(user),
        "until": _iso_ms(expires_ms),
        "timestamp": marking.now_ms(),
    }
    _broadcast_on_commit(attendance_topic(user.organization_id, group.pk), "marking_in_progress", payload)
    return {**payload, "markingTeachers": _active_markers(group)}


def _active_markers(group: Group) -> list[dict]:
    active = marking.active_markers(group_id=str(group.pk))
    names = _names(list(active))
    return [{"userId": u, "name": names.get(u), "until": _iso_ms(ms)} for u, ms in active.items()]


def attendance_marking_finish(*, user: User, group_id) -> dict:
    """End the caller's marking session in a group, releasing their students."""
    group = _marking_group(user, group_id)
    released = marking.release(group_id=str(group.pk), user_id=str(user.pk))
    payload = {
        "groupId": str(group.pk),
        "studentIds": sorted(released),
        "teacher": _marker(user),
        "sessionEnded": True,
        "timestamp": marking.now_ms(),
    }
    _broadcast_on_commit(attendance_topic(user.organization_id, group.pk), "marking_completed", payload)
    return payload


@transaction.atomic
def attendance_mark(
    *,
    user: User,
    group_id,
    student_id,
    status: str,
    notes: str | None = None,
    attendance_date: date | None = None,
    override: bool = False,
) -> Attendance:
    """Mark one student, unless another teacher is marking them inside the marking window
    (`concurrent_marking`) or the group already has its maximum of teachers marking.

    The claim stays with the caller for the window, so a colleague cannot silently overwrite a
    mark just made; `marking_in_progress` and `marking_completed` go out when the mark commits.
    """
    group = _marking_group(user, group_id)
    (student,) = _enrolled_student_ids(group, [student_id])
    expires_ms = _claim_or_refuse(user, group, [student], override=override)
    row = _attendance_written(
        user=user, group=group, student=student, status=status, notes=notes, day=attendance_date or timezone.localdate()
    )
    _announce_mark(user=user, group=group, student=student, status=status, row=row, expires_ms=expires_ms)
    return row


def _marking_teacher_id(user: User, group: Group) -> str:
    """The caller's teacher record, or for an admin (who marks on behalf of the group's teacher)
    the group's first teacher; _marking_group let a teacher in only if assigned."""
    teacher = school_selectors.teacher_for_user(user)
    teacher_ids = [str(teacher.pk)] if teacher else sorted(school_selectors.teacher_ids_of_group(group.pk))
    if not teacher_ids:
        raise Conflict("group_has_no_teacher", "Assign a teacher to the group before marking.")
    return teacher_ids[0]


def _attendance_written(
    *, user: User, group: Group, student: str, status: str, notes: str | None, day: date
) -> Attendance:
    teacher_id = _marking_teacher_id(user, group)
    row = Attendance.objects.select_for_update().filter(student_id=student, group=group, attendance_date=day).first()
    if row is None:
        row = Attendance(
            organization_id=user.organization_id,
            student_id=student,
            group=group,
            attendance_date=day,
            teacher_id=teacher_id,
            created_by=user,
        )
    row.status = status
    row.marked_by = user
    row.updated_by = user
    if notes is not None:
        row.notes = notes
    row.save()
    row.refresh_from_db()
    return row


def _announce_mark(*, user: User, group: Group, student: str, status: str, row: Attendance, expires_ms: int) -> None:
    topic = attendance_topic(user.organization_id, group.pk)
    marker = _marker(user)
    now_ms = marking.now_ms()
    _broadcast_on_commit(
        topic,
        "marking_in_progress",
        {
            "groupId": str(group.pk),
            "studentIds": [student],
            "studentId": student,
            "status": status,
            "teacher": marker,
            "until": _iso_ms(expires_ms),
            "timestamp": now_ms,
        },
    )
    _broadcast_on_commit(
        topic,
        "marking_completed",
        {
            "groupId": str(group.pk),
            "studentId": student,
            "status": status,
            "teacher": marker,
            "result": {
                "attendanceId": str(row.pk),
                "attendanceDate": row.attendance_date.isoformat(),
                "syncVersion": row.sync_version,
            },
            "timestamp": now_ms,
        },
    )
