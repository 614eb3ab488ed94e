"""Family notices: what a parent or guardian hears about their child, as notices (events/notices.py)
to each relative (`user_relationships`: parent, guardian, family) whose `family_engagement` is on.

- `attendance` INSERT/UPDATE -> `family_attendance`: the child is marked absent or late (or a mark
  changes to one of them); once per child, lesson day and status.
- `attendance` UPDATE -> `family_attendance_correction`: a mark the relative was told about changes
  to another status; once per child, day and new status.
- `home_tasks` INSERT -> `family_task`: the child is under 16 (payload `parentNotificationRequired`).
- `student_achievements` INSERT -> `family_achievement`: the child is under 16
  (`sharing.familyNotification`).
- `student_rankings` -> `family_ranking`: a milestone (rank up, level up, 100+ points) of a child
  aged 10-12 (`culturalCelebration.familyNotificationRequired`).

The listener derives them from each batch before fanning it out (`family_notices_create`) and
writes the relatives notified into the source event's `event_metadata.family_notices`, which is
what the payload flags above report: a flag is true exactly when a notice was stored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext_lazy as _

from culture.messages import ATTENDANCE_STATUSES, multilingual
from events.models import RealtimeEvent
from events.notices import Notice, notice_keys_sent, notices_store
from events.topics import notifications_topic
from school.models import Student, User

FAMILY_ATTENDANCE_STATUSES = frozenset({"absent", "late"})
UNDER_16 = frozenset({"10-12", "13-15"})
SOURCES = frozenset({"attendance", "home_tasks", "student_achievements", "student_rankings"})

ATTENDANCE_TITLE = _("Attendance of %(student)s")
ATTENDANCE_MESSAGE = _("%(student)s was marked %(status)s on %(date)s.")
CORRECTION_MESSAGE = _("Correction: %(student)s is now marked %(status)s on %(date)s (not %(previous)s).")
TASK_TITLE = _("New task for %(student)s")
TASK_MESSAGE = _("%(student)s has a new task: “%(task)s”.")
# The same messages as the achievement and ranking pushes (notifications/content.py).
ACHIEVEMENT_TITLE = _("%(student)s earned an achievement")
ACHIEVEMENT_MESSAGE = _("%(student)s earned “%(achievement)s”.")
RANKING_TITLE = _("%(student)s's ranking changed")
RANKING_MESSAGE = _("%(student)s is now number %(rank)s in the ranking.")


@dataclass(frozen=True)
class _Draft:
    """A notice about one source event, before its recipients are known."""

    source: RealtimeEvent
    kind: str
    key: str
    event_type: str
    priority: str
    payload: dict
    title: Any
    message: Any
    params: dict
    # Only relatives who were told about this key before (a correction's earlier notice).
    told_key: str | None = None


def _attendance(event: RealtimeEvent, data: dict, op: str, old: dict) -> _Draft | None:
    status, previous = data.get("status"), old.get("status") if op == "UPDATE" else None
    if op == "DELETE" or status == previous:
        return None
    base = f"attendance:{data['student_id']}:{data['attendance_date']}"
    payload = {
        "studentId": data["student_id"],
        "groupId": data["group_id"],
        "attendanceId": data["attendance_id"],
        "attendanceDate": data["attendance_date"],
        "status": status,
        "previousStatus": previous,
        "sourceEventId": event.seq,
    }
    params = {
        "status": ATTENDANCE_STATUSES.get(status, status),
        "previous": ATTENDANCE_STATUSES.get(previous, previous),
        "date": data["attendance_date"],
    }
    if status in FAMILY_ATTENDANCE_STATUSES:
        kind, message, told = "family_attendance", ATTENDANCE_MESSAGE, None
    elif previous in FAMILY_ATTENDANCE_STATUSES:
        kind, message, told = "family_attendance_correction", CORRECTION_MESSAGE, f"{base}:{previous}"
    else:
        return None
    payload["correction"] = kind == "family_attendance_correction"
    # Attendance notices are about a child's whereabouts: high priority, and (as attendance)
    # never held for prayer (culture/delivery.py LIVE_KINDS).
    return _Draft(
        event, kind, f"{base}:{status}", "attendance_sync", "high", payload, ATTENDANCE_TITLE, message, params, told
    )


def _task(event: RealtimeEvent, data: dict, op: str) -> _Draft | None:
    if op != "INSERT" or data.get("age_group") not in UNDER_16:
        return None
    payload = {"studentId": data["student_id"], "taskId": data["task_id"], "dueDate": data.get("due_date")}
    params = {"task": data.get("title") or ""}
    return _Draft(
        event, "family_task", f"task:{data['task_id']}", "notification_broadcast", "medium", payload,
        TASK_TITLE, TASK_MESSAGE, params,
    )  # fmt: skip


def _achievement(event: RealtimeEvent, data: dict, op: str) -> _Draft | None:
    if op != "INSERT" or not data.get("family_notification"):
        return None
    payload = {
        "studentId": data["student_id"],
        "achievementId": data["achievement_id"],
        "achievementName": data.get("name", ""),
    }
    params = {"achievement": data.get("name", "")}
    key = f"achievement:{event.source_record_id}"
    return _Draft(
        event, "family_achievement", key, "notification_broadcast", "medium", payload,
        ACHIEVEMENT_TITLE, ACHIEVEMENT_MESSAGE, params,
    )  # fmt: skip


def _ranking(event: RealtimeEvent, data: dict) -> _Draft | None:
    if not (data.get("family_notification_required") and data.get("celebration_triggered")):
        return None
    payload = {
        "studentId": data["student_id"],
        "newRank": data["new_rank"],
        "newLevel": data["new_level"],
        "pointsGained": data["points_change"],
    }
    params = {"rank": data["new_rank"]}
    return _Draft(
        event, "family_ranking", f"ranking:{event.seq}", "notification_broadcast", "medium", payload,
        RANKING_TITLE, RANKING_MESSAGE, params,
    )  # fmt: skip


def _draft(event: RealtimeEvent) -> _Draft | None:
    meta = event.event_metadata or {}
    if event.source_table not in SOURCES or not isinstance(event.event_payload, dict):
        return None
    if not (meta.get("audience") or {}).get("family_user_ids"):
        return None
    change = meta.get("change") or {}
    data, op = event.event_payload, change.get("type")
    if event.source_table == "attendance":
        return _attendance(event, data, op, change.get("old_record") or {})
    if event.source_table == "home_tasks":
        return _task(event, data, op)
    if event.source_table == "student_achievements":
        return _achievement(event, data, op)
    return _ranking(event, data) if meta.get("domain_event", True) else None


def _engaged_relatives(drafts: list[_Draft]) -> dict[str, User]:
    ids = {str(u) for d in drafts for u in d.source.event_metadata["audience"]["family_user_ids"]}
    users = User.objects.filter(pk__in=ids, is_active=True, family_engagement=True).only("pk", "role", "language")
    return {str(u.pk): u for u in users}


def family_notices_create(events: Iterable[RealtimeEvent]) -> list[RealtimeEvent]:
    """Store the family notices these captured events call for, and record on each source event
    (in memory and stored) whom it notified. Returns the stored notices.

    Platform context (the listener's). Idempotent: a notice already stored is not stored again.
    """
    drafts = [d for d in (_draft(e) for e in events) if d is not None]
    if not drafts:
        return []
    relatives = _engaged_relatives(drafts)
    students = Student.objects.filter(pk__in={d.payload["studentId"] for d in drafts})
    names = {str(pk): name for pk, name in students.values_list("pk", "full_name")}
    told = notice_keys_sent(recipient_ids=relatives, keys={d.told_key for d in drafts if d.told_key})
    notices: list[Notice] = []
    for draft in drafts:
        audience = draft.source.event_metadata["audience"]
        student = names.get(str(draft.payload["studentId"]), "")
        params = {**draft.params, "student": student}
        texts = {"title": multilingual(draft.title, **params), "message": multilingual(draft.message, **params)}
        for user_id in audience["family_user_ids"]:
            user = relatives.get(str(user_id))
            if user is None or (draft.told_key and (str(user_id), draft.told_key) not in told):
                continue
            notices.append(
                Notice(
                    organization_id=draft.source.organization_id,
                    recipient_id=user.pk,
                    recipient_role=user.role,
                    language=user.language,
                    topic=notifications_topic(draft.source.organization_id, user.role),
                    event="family_notice",
                    kind=draft.kind,
                    notice_key=draft.key,
                    event_type=draft.event_type,
                    event_category="communication",
                    priority=draft.priority,
                    payload={**draft.payload, "studentName": student},
                    texts=texts,
                    audience={k: v for k, v in audience.items() if k != "target_user_id"},
                    source_record_id=None,
                )
            )
    stored = notices_store(notices)
    _record_on_sources(drafts, stored)
    return stored


def _record_on_sources(drafts: list[_Draft], stored: list[RealtimeEvent]) -> None:
    notified: dict[str, set[str]] = defaultdict(set)
    for row in stored:
        notified[row.event_metadata["notice_key"]].add(str(row.target_user_id))
    updates: list[tuple[RealtimeEvent, dict]] = []
    for draft in drafts:
        users = notified.pop(draft.key, None)  # one source event per key; later repeats told no one
        if users:
            updates.append((draft.source, {**draft.source.event_metadata, "family_notices": sorted(users)}))
    if updates:
        rows = [RealtimeEvent(pk=event.pk, event_metadata=metadata) for event, metadata in updates]
        RealtimeEvent.objects.bulk_update(rows, ["event_metadata"])
        # In memory only once stored, so the payloads built from it never claim more than is stored.
        for event, metadata in updates:
            event.event_metadata = metadata
