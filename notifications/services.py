"""Writes of push rows from people: explicit sends, teachers' messages, engagement, resends.

- `push_notification_send(...)` — explicit sends (the broadcast API's `push_notification` method).
- `push_notification_create_teacher_message(...)` — a teacher's message about a student.
- `push_notification_mark_opened` / `push_notification_record_action` — the recipient's engagement.
Pushes from realtime events are `from_events.py`; delivery (a job) is `delivery.py`; device
tokens are `devices.py`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from events.models import RealtimeEvent
from harry_realtime.errors import Forbidden, Invalid, NotFound
from school import selectors as school_selectors
from school.models import (
    Role,
    Student,
    User,
)

from . import content
from .delivery import delivery_enqueue
from .models import PushNotification

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Creating push rows


def push_notification_create(**fields: Any) -> PushNotification | None:
    """Insert one row; None when the (event, recipient) pair already has its push."""
    if "target_user_id" in fields:
        fields["target_user_id"] = uuid.UUID(str(fields["target_user_id"]))
    try:
        with transaction.atomic():
            notification = PushNotification.objects.create(**fields)
    except IntegrityError:
        if fields.get("realtime_event") is None and fields.get("realtime_event_id") is None:
            raise
        return None
    delivery_enqueue(notification)
    return notification


def _may_notify(sender: User, recipient: User) -> bool:
    """Admins reach their whole school; teachers their students and those students' families."""
    if sender.role == Role.ADMIN:
        return True
    if sender.role != Role.TEACHER:
        return False
    students = []
    if recipient.role == Role.STUDENT:
        students = [school_selectors.student_for_user(recipient)]
    elif recipient.role == Role.PARENT:
        students = school_selectors.children_of(recipient)
    return any(s is not None and school_selectors.user_may_watch_student(sender, s.pk) for s in students)


@transaction.atomic
def push_notification_send(
    *,
    sender: User,
    target_user_ids: Iterable[uuid.UUID | str],
    notification_type: str,
    title: str | Mapping[str, str],
    body: str | Mapping[str, str],
    priority: str = "normal",
    scheduled_for: datetime | None = None,
    expires_at: datetime | None = None,
    islamic_greeting: bool = False,
    prayer_time_aware: bool = True,
    ios_configuration: dict | None = None,
    android_configuration: dict | None = None,
    realtime_event: RealtimeEvent | None = None,
) -> list[PushNotification]:
    """Explicit pushes from a staff member, inside their tenant context. All or nothing."""
    ids = list(dict.fromkeys(str(u) for u in target_user_ids))
    recipients = {str(u.pk): u for u in User.objects.filter(pk__in=ids, organization_id=sender.organization_id)}
    missing = [u for u in ids if u not in recipients]
    if missing:
        raise Invalid("unknown_recipient", "Some recipients are not users of this school.", details=missing)
    refused = [u for u in ids if not _may_notify(sender, recipients[u])]
    if refused:
        raise Forbidden("recipient_not_allowed", "You may not notify some of these users.", details=refused)
    now = timezone.now()
    scheduled_for = scheduled_for or now
    expires_at = expires_at or scheduled_for + timedelta(hours=24)
    if expires_at <= scheduled_for:
        raise Invalid("invalid_expiry", "expires_at must be after scheduled_for.")
    fields = {
        **content.per_language(title, "title"),
        **content.per_language(body, "body"),
        "organization_id": sender.organization_id,
        "notification_type": notification_type,
        "priority": priority,
        "scheduled_for": scheduled_for,
        "expires_at": expires_at,
        "islamic_greeting": islamic_greeting,
        "prayer_time_aware": prayer_time_aware,
        "ios_configuration": ios_configuration or {},
        "android_configuration": android_configuration or {},
        "realtime_event": realtime_event,
        "cultural_context": {"sent_by": str(sender.pk)},
    }
    return [row for user_id in ids if (row := push_notification_create(target_user_id=user_id, **fields)) is not None]


def may_send_teacher_message(sender: User, student: Student) -> bool:
    """Admins of the school (RLS already hides other schools' students) and teachers of one of
    the student's active groups; never the student, a parent or another teacher."""
    if sender.role == Role.ADMIN:
        return True
    teacher = school_selectors.teacher_for_user(sender) if sender.role == Role.TEACHER else None
    if teacher is None:
        return False
    return bool(
        school_selectors.active_group_ids_of_teacher(teacher.pk)
        & school_selectors.active_group_ids_of_student(student.pk)
    )


@transaction.atomic
def push_notification_create_teacher_message(
    *, sender: User, student_id: uuid.UUID | str, message: str, include_family: bool = True, priority: str = "normal"
) -> list[PushNotification]:
    """A message about one student, to the student and optionally family, from one of the
    student's own teachers or an admin of the school (`may_send_teacher_message`)."""
    student = Student.objects.filter(pk=student_id).first()
    if student is None:
        raise NotFound("student_not_found", "No such student.")
    if not may_send_teacher_message(sender, student):
        raise Forbidden(
            "teacher_message_not_allowed", "Only the student's own teachers and the school's admins send these."
        )
    params = {"teacher": sender.full_name or sender.username, "message": message, "student": student.full_name}
    recipients = [("self", str(student.user_id))] if student.user_id else []
    if include_family:
        recipients += [("family", u) for u in sorted(school_selectors.family_user_ids_of_student(student))]
    created = []
    for audience, user_id in recipients:
        row = push_notification_create(
            **content.localized("teacher_message", audience, params),
            organization_id=sender.organization_id,
            target_user_id=user_id,
            notification_type="teacher_message",
            priority=priority,
            cultural_context={"sent_by": str(sender.pk), "student_id": str(student.pk), "audience": audience},
        )
        created.append(row)
    return created


# ---------------------------------------------------------------------------------------------
# Engagement (the recipient's app reports what the person did)


def _own_notification(notification_id: uuid.UUID | str, user: User) -> PushNotification:
    notification = PushNotification.objects.select_for_update().filter(pk=notification_id).first()
    if notification is None:
        raise NotFound("notification_not_found", "No such notification.")
    if notification.target_user_id != user.pk:
        raise Forbidden("not_recipient", "Only the recipient reports engagement.")
    return notification


def _opened(notification: PushNotification, now: datetime) -> list[str]:
    if notification.opened_at is not None:
        return []
    notification.opened_at = now
    fields = ["opened_at"]
    # Opening proves the device got it; an expired or failed row the app still showed counts too.
    if notification.delivery_status != "delivered":
        notification.delivery_status = "delivered"
        fields.append("delivery_status")
    return fields


@transaction.atomic
def push_notification_mark_opened(*, notification_id: uuid.UUID | str, user: User) -> PushNotification:
    """Idempotent: the first open counts."""
    notification = _own_notification(notification_id, user)
    fields = _opened(notification, timezone.now())
    if fields:
        notification.save(update_fields=fields)
    return notification


@transaction.atomic
def push_notification_record_action(*, notification_id: uuid.UUID | str, user: User, action: str) -> PushNotification:
    """The action the person took (e.g. "view_task"); implies opened. The latest action wins."""
    notification = _own_notification(notification_id, user)
    now = timezone.now()
    fields = _opened(notification, now)
    notification.action_taken = action
    notification.action_taken_at = now
    notification.save(update_fields=[*fields, "action_taken", "action_taken_at"])
    return notification


@transaction.atomic
def push_notification_resend(*, notification: PushNotification) -> PushNotification:
    """A fresh copy (new id, new deliveries) of a push, for the admin's resend action; the
    original keeps its history. Runs in the staff member's tenant context."""
    copy_fields = {
        f.attname: getattr(notification, f.attname)
        for f in PushNotification._meta.concrete_fields
        if f.attname
        not in {
            "id",
            "created_at",
            "updated_at",
            "realtime_event_id",
            "delivery_status",
            "delivery_attempts",
            "opened_at",
            "action_taken",
            "action_taken_at",
            "sent_at",
            "failed_at",
            "error_message",
        }
    }
    now = timezone.now()
    copy_fields.update(
        scheduled_for=now,
        expires_at=max(notification.expires_at, now + timedelta(hours=24)),
        cultural_context={**(notification.cultural_context or {}), "resent_from": str(notification.pk)},
    )
    row = push_notification_create(**copy_fields)
    return row
