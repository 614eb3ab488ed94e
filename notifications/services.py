"""Writes of the notifications app: device tokens, push rows from their four sources, delivery.

Entry points for other apps
---------------------------
- `push_notification_create_for_event(*, event, offline_user_ids=None)` — the pipeline's beat job
  `events.hand_undelivered_to_push` (`events.outbox.events_hand_to_push`) calls it for every
  *individual* event once its grace period after fan-out has passed, passing the users it addressed
  who had no live socket (default: the event's `target_user_id`; pass `[]` when everyone was
  online). It creates one push per offline recipient and, independently of sockets, the family
  notices the event requires (achievements of students under 16, rankings of students aged
  10–12, to their parents/guardians). Idempotent: a second call for the same event creates
  nothing. Call it inside the listener's platform context (or a staff tenant context of the
  event's school); delivery is queued on commit.
- `push_notification_send(...)` — explicit sends (the broadcast API's `push_notification` method).
- `push_notification_create_teacher_message(...)` — a teacher's message about a student.
Prayer reminders are the culture app's `system_announcement` events (payload type
`prayer_time_reminder`); handed over like any event, they become `prayer_time` pushes.

Delivery (`push_notification_deliver`) is a job: it runs from Celery under the platform role.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from events.models import RealtimeEvent
from harry_realtime.api import ApiError
from harry_realtime.tenancy import Tenant, dangerously_platform_context
from school import selectors as school_selectors
from school.models import (
    Achievement,
    Attendance,
    HomeTask,
    Role,
    Student,
    StudentAchievement,
    StudentRanking,
    User,
)

from . import content
from .backends import PushMessage, SendResult, backend_for
from .models import LANGUAGES, DeviceToken, PushDelivery, PushNotification

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
EVENT_PRIORITY_TO_PUSH = {"low": "low", "medium": "normal", "high": "high", "critical": "urgent"}
PUSH_PRIORITY_TO_EVENT = {value: key for key, value in EVENT_PRIORITY_TO_PUSH.items()}
# The student preference (students.realtime_preferences) that silences a kind of push to them.
STUDENT_PREFERENCE = {
    "ranking_update": "ranking_updates",
    "task_assigned": "task_notifications",
    "achievement_earned": "achievement_alerts",
}
TERMINAL_DELIVERY = {"sent", "failed", "invalid_token", "expired", "unconfirmed"}


# ---------------------------------------------------------------------------------------------
# Device tokens


def device_token_register(
    *,
    tenant: Tenant,
    platform: str,
    token: str,
    app_version: str | None = None,
    language: str | None = None,
) -> tuple[DeviceToken, bool]:
    """The caller's device; `(row, created)`. Re-registering refreshes the row; a token last
    registered by someone else (any school) is released from them first."""
    with transaction.atomic():
        existing = (
            DeviceToken.objects.select_for_update().filter(user_id=tenant.user_id, token=token, is_active=True).first()
        )
        if existing is not None:
            existing.platform = platform
            existing.app_version = app_version
            existing.language = language
            existing.last_registered_at = timezone.now()
            existing.save(update_fields=["platform", "app_version", "language", "last_registered_at"])
            return existing, False
        with connection.cursor() as cursor:
            cursor.execute("SELECT push_release_device_token(%s)", [token])
        try:
            with transaction.atomic():
                device = DeviceToken.objects.create(
                    organization_id=tenant.organization_id,
                    user_id=tenant.user_id,
                    platform=platform,
                    token=token,
                    app_version=app_version,
                    language=language,
                )
        except IntegrityError as exc:
            raise ApiError(
                "device_token_conflict", "The token is being registered concurrently; retry.", status_code=409
            ) from exc
        return device, True


@transaction.atomic
def device_token_deactivate(*, device_id: uuid.UUID | str, reason: str) -> DeviceToken:
    """Soft delete: delivery history keeps pointing at the row. RLS limits it to owner and admins."""
    device = DeviceToken.objects.select_for_update().filter(pk=device_id).first()
    if device is None:
        raise ApiError("device_not_found", "No such device.", status_code=404)
    if device.is_active:
        device.is_active = False
        device.deactivated_at = timezone.now()
        device.deactivation_reason = reason
        device.save(update_fields=["is_active", "deactivated_at", "deactivation_reason"])
    return device


# ---------------------------------------------------------------------------------------------
# Creating push rows


def _enqueue(notification: PushNotification) -> None:
    """Queue delivery once the row is committed; far-future rows wait for the beat sweep."""
    notification_id = str(notification.pk)
    scheduled_for = notification.scheduled_for

    def send() -> None:
        from .tasks import deliver_push_notification

        ahead = timedelta(seconds=settings.PUSH_ENQUEUE_AHEAD_SECONDS)
        if scheduled_for > timezone.now() + ahead:
            return
        try:
            deliver_push_notification.apply_async(args=[notification_id], eta=max(scheduled_for, timezone.now()))
        except Exception:  # the row is stored; the beat sweep delivers it if the broker is down
            logger.exception("push %s: could not queue delivery; the due sweep will pick it up", notification_id)

    transaction.on_commit(send)


def _create(**fields: Any) -> PushNotification | None:
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
    _enqueue(notification)
    return notification


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
        params["status"] = attendance.status if attendance else _text_param(payload, "status")
    elif notification_type == "teacher_message":
        sender = User.objects.filter(pk=event.created_by_id).first() if event.created_by_id else None
        params["teacher"] = (sender.full_name if sender else None) or _text_param(payload, "teacher_name", "sender")
        params["message"] = _text_param(payload, "message", "body", "text")
    elif notification_type == "prayer_time":
        from culture.messages import PRAYER_NAMES

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


def family_notice_required(notification_type: str, student: Student, today) -> bool:
    """The spec's rules: achievements of students under 16, rankings of students aged 10–12."""
    age = school_selectors.age_on(student.date_of_birth, today)
    if notification_type == "achievement_earned":
        return age < 16
    if notification_type == "ranking_update":
        return 10 <= age <= 12
    return False


def _student_silenced(user_id: str, student: Student | None, notification_type: str) -> bool:
    preference = STUDENT_PREFERENCE.get(notification_type)
    if not preference or student is None or str(student.user_id) != str(user_id):
        return False
    return (student.realtime_preferences or {}).get(preference, True) is False


@transaction.atomic
def push_notification_create_for_event(
    *, event: RealtimeEvent, offline_user_ids: Iterable[uuid.UUID | str] | None = None
) -> list[PushNotification]:
    """Pushes for one realtime event: to its offline recipients, plus required family notices.

    See the module docstring for the contract with the pipeline. Events with no push kind
    (lesson_progress) create nothing.
    """
    notification_type = "prayer_time" if _is_prayer_reminder(event) else EVENT_TO_NOTIFICATION.get(event.event_type)
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
        row = _create(target_user_id=user_id, **_event_fields(event, notification_type, audience, params))
        if row is not None:
            created.append(row)
    if student is not None:
        today = timezone.localdate(timezone.now(), timezone.get_fixed_timezone(0))
        if family_notice_required(notification_type, student, today):
            for relative_id in school_selectors.family_user_ids_of_student(student):
                fields = _event_fields(event, notification_type, "family", params)
                fields["cultural_context"]["family_notice"] = True
                row = _create(target_user_id=relative_id, **fields)
                if row is not None:
                    created.append(row)
    return created


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
        raise ApiError("unknown_recipient", "Some recipients are not users of this school.", details=missing)
    refused = [u for u in ids if not _may_notify(sender, recipients[u])]
    if refused:
        raise ApiError(
            "recipient_not_allowed", "You may not notify some of these users.", status_code=403, details=refused
        )
    now = timezone.now()
    scheduled_for = scheduled_for or now
    expires_at = expires_at or scheduled_for + timedelta(hours=24)
    if expires_at <= scheduled_for:
        raise ApiError("invalid_expiry", "expires_at must be after scheduled_for.")
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
    return [row for user_id in ids if (row := _create(target_user_id=user_id, **fields)) is not None]


@transaction.atomic
def push_notification_create_teacher_message(
    *, sender: User, student_id: uuid.UUID | str, message: str, include_family: bool = True, priority: str = "normal"
) -> list[PushNotification]:
    """A teacher's (or admin's) message about one student, to the student and optionally family."""
    student = Student.objects.filter(pk=student_id).first()
    if student is None:
        raise ApiError("student_not_found", "No such student.", status_code=404)
    if not (sender.role == Role.ADMIN or school_selectors.user_may_watch_student(sender, student.pk)):
        raise ApiError("recipient_not_allowed", "You do not teach this student.", status_code=403)
    params = {"teacher": sender.full_name or sender.username, "message": message, "student": student.full_name}
    recipients = [("self", str(student.user_id))] if student.user_id else []
    if include_family:
        recipients += [("family", u) for u in sorted(school_selectors.family_user_ids_of_student(student))]
    created = []
    for audience, user_id in recipients:
        row = _create(
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
        raise ApiError("notification_not_found", "No such notification.", status_code=404)
    if notification.target_user_id != user.pk:
        raise ApiError("not_recipient", "Only the recipient reports engagement.", status_code=403)
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
    row = _create(**copy_fields)
    return row


# ---------------------------------------------------------------------------------------------
# Delivery (jobs: Celery tasks under the platform role)


@dataclass
class DeliveryReport:
    status: str
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    invalid_tokens: int = 0
    next_attempt_at: datetime | None = None
    outcomes: dict[str, str] = field(default_factory=dict)


def retry_delay(attempt: int, *, retry_after: float | None = None) -> float:
    """Exponential backoff with equal jitter: half the step fixed, half random, so a burst of
    failures does not retry in lockstep; never sooner than the provider's Retry-After."""
    step = min(settings.PUSH_RETRY_MAX_SECONDS, settings.PUSH_RETRY_BASE_SECONDS * 2 ** max(0, attempt - 1))
    delay = step / 2 + random.uniform(0, step / 2)
    return max(delay, retry_after or 0)


def _language_of(device: DeviceToken, user: User) -> str:
    for language in (device.language, user.language):
        if language in LANGUAGES:
            return language
    return "en"


def message_for(notification: PushNotification, device: DeviceToken, user: User) -> PushMessage:
    language = _language_of(device, user)
    body = notification.body_in(language)
    if notification.islamic_greeting:
        body = content.with_greeting(body, language if notification.title_in(language) else "en")
    data = {
        "notification_id": str(notification.pk),
        "notification_type": notification.notification_type,
        "language": language,
    }
    if notification.realtime_event_id:
        data["realtime_event_id"] = str(notification.realtime_event_id)
    return PushMessage(
        notification_id=str(notification.pk),
        notification_type=notification.notification_type,
        token=device.token,
        platform=device.platform,
        title=notification.title_in(language),
        body=body,
        priority=notification.priority,
        expires_at=notification.expires_at,
        data=data,
        ios_configuration=notification.ios_configuration or {},
        android_configuration=notification.android_configuration or {},
    )


def _expire(notification: PushNotification, now: datetime) -> None:
    notification.deliveries.filter(status="pending").update(status="expired", error_message="expired before sending")
    if notification.delivery_status == "pending":
        notification.delivery_status = "expired"
        notification.error_message = "expired before it could be sent"
        notification.save(update_fields=["delivery_status", "error_message"])


def _prayer_hold(notification: PushNotification, now: datetime) -> datetime | None:
    """When the culture policy holds this push for the school's prayer window, its end."""
    from culture.delivery import delivery_decision

    if not notification.prayer_time_aware:
        return None
    deliver_now, release_at = delivery_decision(
        organization=notification.organization,
        priority=PUSH_PRIORITY_TO_EVENT[notification.priority],
        kind=notification.notification_type,
        at=now,
    )
    return None if deliver_now else release_at


def _aggregate(notification: PushNotification, now: datetime) -> DeliveryReport:
    """The notification's status from its deliveries. Caller holds the notification's row lock."""
    rows = list(notification.deliveries.values("status", "sent_at", "next_attempt_at", "attempts", "error_message"))
    statuses = [r["status"] for r in rows]
    report = DeliveryReport(
        status=notification.delivery_status,
        sent=statuses.count("sent"),
        retrying=statuses.count("pending"),
        failed=statuses.count("failed") + statuses.count("unconfirmed"),
        invalid_tokens=statuses.count("invalid_token"),
    )
    notification.delivery_attempts = max([r["attempts"] for r in rows], default=notification.delivery_attempts)
    update = ["delivery_attempts"]
    if report.sent and notification.delivery_status == "pending":
        notification.delivery_status = "sent"
        notification.sent_at = min(r["sent_at"] for r in rows if r["status"] == "sent")
        update += ["delivery_status", "sent_at"]
    elif not report.sent and rows and all(s in TERMINAL_DELIVERY for s in statuses):
        if notification.delivery_status == "pending":
            notification.delivery_status = "failed"
            notification.failed_at = now
            notification.error_message = "; ".join(
                sorted({f"{r['status']}: {r['error_message']}" for r in rows if r["error_message"]})
            )[:2000]
            update += ["delivery_status", "failed_at", "error_message"]
    if report.retrying:
        report.next_attempt_at = min(r["next_attempt_at"] for r in rows if r["status"] == "pending")
    notification.save(update_fields=update)
    report.status = notification.delivery_status
    return report


def _fail(notification: PushNotification, now: datetime, message: str) -> None:
    notification.delivery_status = "failed"
    notification.failed_at = now
    notification.error_message = message
    notification.save(update_fields=["delivery_status", "failed_at", "error_message"])


def push_notification_deliver(*, notification_id: uuid.UUID | str) -> DeliveryReport:
    """Send one notification to each of its recipient's active devices, at most once per device.

    1. Under the notification's row lock: skip if final, expire if past `expires_at`, wait if
       not yet due or held for prayer, and create one `push_deliveries` row per device (once).
    2. One device at a time: claim a due pending row with SELECT ... FOR UPDATE SKIP LOCKED and
       commit it as `sending` (a concurrent or re-run task skips it), call the provider outside
       any transaction, record the outcome: sent; transient → pending again after backoff, or
       failed at the attempt limit; invalid token → device deactivated, no retry.
    3. Aggregate the notification's status and queue the next retry, if any.
    A worker that dies during a provider call leaves `sending` rows; `push_delivery_resolve_stale` ends them
    as `unconfirmed` instead of risking a second copy.
    """
    now = timezone.now()
    with dangerously_platform_context():
        notification = (
            PushNotification.objects.select_for_update(of=("self",))
            .select_related("organization", "target_user")
            .filter(pk=notification_id)
            .first()
        )
        if notification is None:
            return DeliveryReport(status="missing")
        if notification.delivery_status in ("failed", "expired"):
            return DeliveryReport(status=notification.delivery_status)
        if notification.expires_at <= now:
            _expire(notification, now)
            return DeliveryReport(status=notification.delivery_status)
        if notification.scheduled_for > now:
            return DeliveryReport(status="scheduled", next_attempt_at=notification.scheduled_for)
        if notification.delivery_status == "pending":
            release_at = _prayer_hold(notification, now)
            if release_at is not None:
                notification.scheduled_for = release_at
                notification.cultural_context = {
                    **notification.cultural_context,
                    "held_for_prayer_until": release_at.isoformat(),
                }
                notification.save(update_fields=["scheduled_for", "cultural_context"])
                return DeliveryReport(status="held_for_prayer", next_attempt_at=release_at)
        if not notification.deliveries.exists():
            if "push" not in (notification.delivery_method or ["push"]):
                return DeliveryReport(status=notification.delivery_status)
            devices = DeviceToken.objects.filter(user_id=notification.target_user_id, is_active=True)
            if notification.target_device_tokens:
                devices = devices.filter(token__in=notification.target_device_tokens)
            devices = list(devices)
            if not devices:
                _fail(notification, now, "no active device token")
                return DeliveryReport(status="failed")
            PushDelivery.objects.bulk_create(
                [
                    PushDelivery(
                        organization_id=notification.organization_id,
                        notification=notification,
                        device=device,
                        provider=settings.PUSH_BACKENDS.get(device.platform, "log"),
                        next_attempt_at=now,
                    )
                    for device in devices
                ],
                ignore_conflicts=True,
            )
    outcomes: dict[str, str] = {}
    while (delivery := _claim_next(notification.pk, now)) is not None:
        message = message_for(notification, delivery.device, notification.target_user)
        try:
            result = backend_for(delivery.device.platform).send(message)
        except Exception as exc:  # a provider bug must not strand the other devices
            logger.exception("push %s: backend raised", notification.pk)
            result = SendResult("transient", error=f"{type(exc).__name__}: {exc}")
        _record(delivery, result, max_attempts=notification.max_delivery_attempts)
        outcomes[str(delivery.device_id)] = result.outcome
    with dangerously_platform_context():
        report = _aggregate(PushNotification.objects.select_for_update().get(pk=notification.pk), timezone.now())
        if report.next_attempt_at is not None:
            _enqueue_retry(str(notification.pk), report.next_attempt_at)
    report.outcomes = outcomes
    return report


def _claim_next(notification_id, now: datetime) -> PushDelivery | None:
    """Claim one due device and commit the claim before the provider call, so a worker that dies
    during the call strands that one device (as `sending`), never the ones it had not reached."""
    with dangerously_platform_context():
        delivery = (
            PushDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("device")
            .filter(notification_id=notification_id, status="pending", next_attempt_at__lte=now, device__is_active=True)
            .order_by("created_at", "id")
            .first()
        )
        if delivery is None:
            return None
        delivery.status = "sending"
        delivery.claimed_at = timezone.now()
        delivery.attempts += 1
        delivery.save(update_fields=["status", "claimed_at", "attempts"])
        return delivery


def _record(delivery: PushDelivery, result: SendResult, *, max_attempts: int) -> None:
    now = timezone.now()
    with dangerously_platform_context():
        delivery.error_message = result.error
        if result.outcome == "sent":
            delivery.status = "sent"
            delivery.sent_at = now
            delivery.provider_message_id = result.provider_message_id
        elif result.outcome == "invalid_token":
            delivery.status = "invalid_token"
            DeviceToken.objects.filter(pk=delivery.device_id, is_active=True).update(
                is_active=False, deactivated_at=now, deactivation_reason=f"provider: {result.error}"
            )
        elif result.outcome == "transient" and delivery.attempts < max_attempts:
            delivery.status = "pending"
            delivery.next_attempt_at = now + timedelta(
                seconds=retry_delay(delivery.attempts, retry_after=result.retry_after)
            )
        else:
            delivery.status = "failed"
            if result.outcome == "transient":
                delivery.error_message = f"gave up after {delivery.attempts} attempts: {result.error}"
        delivery.save(update_fields=["status", "sent_at", "provider_message_id", "error_message", "next_attempt_at"])


def _enqueue_retry(notification_id: str, at: datetime) -> None:
    def send() -> None:
        from .tasks import deliver_push_notification

        try:
            deliver_push_notification.apply_async(args=[notification_id], eta=at)
        except Exception:  # the due sweep retries rows whose next_attempt_at passed
            logger.exception("push %s: could not queue the retry; the due sweep will pick it up", notification_id)

    transaction.on_commit(send)


def push_delivery_resolve_stale(*, lease_seconds: int | None = None) -> int:
    """End deliveries claimed longer than the lease ago: the worker died during the provider call,
    so whether the device got the push is unknown. Not resending is the promise (no duplicates)."""
    lease = timedelta(seconds=lease_seconds if lease_seconds is not None else settings.PUSH_CLAIM_LEASE_SECONDS)
    now = timezone.now()
    with dangerously_platform_context():
        stale = list(
            PushDelivery.objects.select_for_update(skip_locked=True).filter(
                status="sending", claimed_at__lt=now - lease
            )
        )
        for delivery in stale:
            delivery.status = "unconfirmed"
            delivery.error_message = "worker lost during the provider call; outcome unknown, not resent"
        PushDelivery.objects.bulk_update(stale, ["status", "error_message"])
        for notification_id in {d.notification_id for d in stale}:
            _aggregate(PushNotification.objects.select_for_update().get(pk=notification_id), now)
    return len(stale)


def push_notifications_expire() -> int:
    """Pending pushes past `expires_at` become `expired`; their unsent deliveries too."""
    now = timezone.now()
    with dangerously_platform_context():
        PushDelivery.objects.filter(status="pending", notification__expires_at__lte=now).update(
            status="expired", error_message="expired before sending"
        )
        return PushNotification.objects.filter(delivery_status="pending", expires_at__lte=now).update(
            delivery_status="expired", error_message="expired before it could be sent"
        )


def push_notifications_due_ids(*, limit: int = 500) -> list[str]:
    """Notifications with something to do now: due and unsent, or with a retry that came due."""
    now = timezone.now()
    with dangerously_platform_context():
        fresh = PushNotification.objects.filter(
            delivery_status="pending", scheduled_for__lte=now, expires_at__gt=now
        ).filter(Q(deliveries__isnull=True) | Q(deliveries__status="pending", deliveries__next_attempt_at__lte=now))
        retries = PushNotification.objects.filter(
            delivery_status__in=["sent", "delivered"],
            expires_at__gt=now,
            deliveries__status="pending",
            deliveries__next_attempt_at__lte=now,
        )
        ids = list(fresh.order_by("scheduled_for").values_list("pk", flat=True).distinct()[:limit])
        ids += list(retries.values_list("pk", flat=True).distinct()[: max(0, limit - len(ids))])
    return [str(i) for i in dict.fromkeys(ids)]
