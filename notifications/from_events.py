"""Pushes from realtime events: which events become which push, to whom, in which words.

`push_notification_create_for_event(*, event, offline_user_ids=None)` — the pipeline's beat job
`events.hand_undelivered_to_push` (`events.handoff.events_hand_to_push`) calls it for every
*individual* event once its grace period after fan-out has passed, passing the users it addressed
who had no live socket (default: the event's `target_user_id`; pass `[]` when everyone was
online). It creates one push per offline recipient. Relatives are not pushed from their child's
event: they get family notices of their own (events/family.py), which come here like any event.
Idempotent: a second call for the same event creates nothing. Call it inside the listener's
platform context (or a staff tenant context of the event's school); delivery is queued on commit.

Notices (events/notices.py: family notices, deadline reminders, announcements) carry their texts
in every language; their push copies them.

Prayer reminders are the culture app's `system_announcement` events (payload type
`prayer_time_reminder`); handed over like any event, they become `prayer_time` pushes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from culture.messages import ATTENDANCE_STATUSES, PRAYER_NAMES
from events.models import RealtimeEvent
from events.notices import NEVER_HELD, PUSH_TYPES
from school.models import (
    Achievement,
    Attendance,
    HomeTask,
    Student,
    StudentAchievement,
    StudentRanking,
    User,
)

from . import content
from .models import EVENT_PRIORITY_TO_PUSH, PushNotification
from .services import push_notification_create

logger = logging.getLogger(__name__)


EVENT_TO_NOTIFICATION = {
    "student_ranking_update": "ranking_update",
    "task_assignment": "task_assigned",
    "achievement_earned": "achievement_earned",
    "attendance_sync": "attendance_reminder",
    "teacher_communication": "teacher_message",
    "notification_broadcast": "system_alert",
    "system_announcement": "system_alert",
}


# The student preference (students.realtime_preferences) that silences a kind of push to them.
STUDENT_PREFERENCE = {
    "ranking_update": "ranking_updates",
    "task_assigned": "task_notifications",
    "achievement_earned": "achievement_alerts",
}


def _student_of_event(event: RealtimeEvent) -> Student | None:
    payload = event.event_payload if isinstance(event.event_payload, dict) else {}
    source_models = {
        "student_achievements": StudentAchievement,
        "student_rankings": StudentRanking,
        "home_tasks": HomeTask,
        "attendance": Attendance,
    }
    model = source_models.get(event.source_table or "")
    if model is not None and event.source_record_id:
        record = model.objects.filter(pk=event.source_record_id).select_related("student").first()
        if record is not None:
            return record.student
    if payload.get("student_id"):
        return Student.objects.filter(pk=payload["student_id"]).first()
    if event.target_user_id:
        return Student.objects.filter(user_id=event.target_user_id).first()
    return None


def _source_record(event: RealtimeEvent, model):
    if event.source_record_id and event.source_table == model._meta.db_table:
        return model.objects.filter(pk=event.source_record_id).first()
    return None


def _text_param(payload: Mapping[str, Any], *keys: str, default: str = "") -> str:
    for key in keys:
        value = payload.get(key)
        if isinstance(value, dict):
            value = value.get("en") or next(iter(value.values()), "")
        if value not in (None, ""):
            return str(value)
    return default


def _event_params(event: RealtimeEvent, notification_type: str, student: Student | None) -> dict[str, Any]:
    payload = event.event_payload if isinstance(event.event_payload, dict) else {}
    params: dict[str, Any] = {"student": student.full_name if student else ""}
    if notification_type == "achievement_earned":
        award = _source_record(event, StudentAchievement)
        achievement_name = award.achievement.name if award else None
        if achievement_name is None and payload.get("achievement_id"):
            achievement = Achievement.objects.filter(pk=payload["achievement_id"]).first()
            achievement_name = achievement.name if achievement else None
        params["achievement"] = achievement_name or _text_param(payload, "achievement_name", "name")
    elif notification_type == "ranking_update":
        ranking = _source_record(event, StudentRanking)
        if ranking is None and student is not None:
            ranking = StudentRanking.objects.filter(student_id=student.pk).first()
        rank = payload.get("current_rank") or payload.get("new_rank") or (ranking.current_rank if ranking else "?")
        params["rank"] = rank
    elif notification_type == "task_assigned":
        task = _source_record(event, HomeTask)
        params["task"] = task.title if task else _text_param(payload, "title", "task_title")
    elif notification_type == "attendance_reminder":
        attendance = _source_record(event, Attendance)
        status = attendance.status if attendance else _text_param(payload, "status")
        params["status"] = ATTENDANCE_STATUSES.get(status, status)  # translated inside the sentence
    elif notification_type == "teacher_message":
        sender = User.objects.filter(pk=event.created_by_id).first() if event.created_by_id else None
        params["teacher"] = (sender.full_name if sender else None) or _text_param(payload, "teacher_name", "sender")
        params["message"] = _text_param(payload, "message", "body", "text")
    elif notification_type == "prayer_time":
        reminder = payload.get("payload") or {}
        params["prayer"] = PRAYER_NAMES.get(reminder.get("prayerName"), reminder.get("prayerName", ""))
        params["time"] = reminder.get("prayerTime", "")
        params["minutes"] = int(reminder.get("timeUntilPrayer") or 0)
    elif notification_type == "system_alert":
        params["message"] = _text_param(payload, "message", "body", "title", default=event.event_type)
    return params


def _is_prayer_reminder(event: RealtimeEvent) -> bool:
    payload = event.event_payload if isinstance(event.event_payload, dict) else {}
    return event.event_type == "system_announcement" and payload.get("type") == "prayer_time_reminder"


def _event_fields(event: RealtimeEvent, notification_type: str, audience: str, params: dict) -> dict[str, Any]:
    payload = event.event_payload if isinstance(event.event_payload, dict) else {}
    fields = content.localized(notification_type, audience, params)
    # Texts the event already carries in every language (the spec's MultilingualText), e.g. the
    # culture app's PrayerTimeNotificationEvent under payload.payload.
    texts = payload.get("payload") if isinstance(payload.get("payload"), dict) else payload
    if notification_type in ("system_alert", "prayer_time") and isinstance(texts.get("message"), dict):
        fields.update(content.per_language(texts["message"], "body"))
        if isinstance(texts.get("title"), dict):
            fields.update(content.per_language(texts["title"], "title"))
    now = timezone.now()
    prayer = notification_type == "prayer_time"
    return {
        **fields,
        "organization_id": event.organization_id,
        "realtime_event": event,
        "notification_type": notification_type,
        "priority": EVENT_PRIORITY_TO_PUSH.get(event.priority, "normal"),
        "scheduled_for": max(event.scheduled_for or now, now),
        "expires_at": event.expires_at or now + timedelta(hours=24),
        "cultural_context": {"audience": audience, "event_seq": event.seq, "event_type": event.event_type},
        "islamic_greeting": prayer or bool((event.cultural_context or {}).get("islamic_greeting", False)),
        # A prayer reminder is about the prayer itself; holding it for the window would defeat it.
        "prayer_time_aware": not prayer,
    }


def _notice_fields(event: RealtimeEvent, kind: str) -> dict[str, Any]:
    """A notice's own texts in every language (the recipient's device picks one)."""
    translations = event.event_payload.get("translations") or {}
    return {
        **content.per_language(translations.get("title") or event.event_payload.get("title", ""), "title"),
        **content.per_language(translations.get("message") or event.event_payload.get("message", ""), "body"),
        "cultural_context": {"audience": "notice", "notice_kind": kind, "event_seq": event.seq},
        "prayer_time_aware": kind not in NEVER_HELD,
    }


def _student_silenced(user_id: str, student: Student | None, notification_type: str) -> bool:
    preference = STUDENT_PREFERENCE.get(notification_type)
    if not preference or student is None or str(student.user_id) != str(user_id):
        return False
    return (student.realtime_preferences or {}).get(preference, True) is False


@transaction.atomic
def push_notification_create_for_event(
    *, event: RealtimeEvent, offline_user_ids: Iterable[uuid.UUID | str] | None = None
) -> list[PushNotification]:
    """Pushes for one realtime event, to its offline recipients.

    See the module docstring for the contract with the pipeline. Events with no push kind
    (lesson_progress) create nothing.
    """
    notice_kind = (event.event_metadata or {}).get("notice_kind")
    if notice_kind:
        notification_type = PUSH_TYPES[notice_kind]
    elif _is_prayer_reminder(event):
        notification_type = "prayer_time"
    else:
        notification_type = EVENT_TO_NOTIFICATION.get(event.event_type)
    if notification_type is None:
        return []
    if offline_user_ids is None:
        offline_user_ids = [event.target_user_id] if event.target_user_id else []
    student = _student_of_event(event)
    params = _event_params(event, notification_type, student)
    created: list[PushNotification] = []
    for user_id in {str(u) for u in offline_user_ids}:
        if _student_silenced(user_id, student, notification_type):
            continue
        audience = (
            "family" if student and str(student.user_id) != user_id and notification_type != "system_alert" else "self"
        )
        if (notification_type, audience) not in content.TEMPLATES:
            audience = "self"
        fields = _event_fields(event, notification_type, audience, params)
        if notice_kind:
            fields.update(_notice_fields(event, notice_kind))
        row = push_notification_create(target_user_id=user_id, **fields)
        if row is not None:
            created.append(row)
    return created
