"""Delivering pushes (a job: Celery tasks under the platform role).

`push_notification_deliver` sends one notification to each of its recipient's active devices,
at most once per device; `delivery_enqueue` queues it once its row is committed.
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from culture.delivery import held_until
from harry_realtime.tenancy import dangerously_platform_context
from school.models import (
    User,
)

from . import content
from .backends import PushMessage, SendResult, backend_for
from .models import LANGUAGES, PUSH_PRIORITY_TO_EVENT, DeviceToken, PushDelivery, PushNotification

logger = logging.getLogger(__name__)


DELIVER_TASK = "notifications.deliver_push_notification"
TERMINAL_DELIVERY = {"sent", "failed", "invalid_token", "expired", "unconfirmed"}


def _deliver_task():
    """The Celery task by its registered name: `tasks.py` imports this module, not the reverse."""
    return current_app.tasks[DELIVER_TASK]


def delivery_enqueue(notification: PushNotification) -> None:
    """Queue delivery once the row is committed; far-future rows wait for the beat sweep."""
    notification_id = str(notification.pk)
    scheduled_for = notification.scheduled_for

    def send() -> None:
        ahead = timedelta(seconds=settings.PUSH_ENQUEUE_AHEAD_SECONDS)
        if scheduled_for > timezone.now() + ahead:
            return
        try:
            _deliver_task().apply_async(args=[notification_id], eta=max(scheduled_for, timezone.now()))
        except Exception:  # the row is stored; the beat sweep delivers it if the broker is down
            logger.exception("push %s: could not queue delivery; the due sweep will pick it up", notification_id)

    transaction.on_commit(send)


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


def retry_delay(attempt: int, *, retry_after: float | None = None) -> timedelta:
    """Exponential backoff with equal jitter: half the step fixed, half random, so a burst of
    failures does not retry in lockstep; never sooner than the provider's Retry-After."""
    step = min(settings.PUSH_RETRY_MAX_SECONDS, settings.PUSH_RETRY_BASE_SECONDS * 2 ** max(0, attempt - 1))
    delay = step / 2 + random.uniform(0, step / 2)
    return timedelta(seconds=max(delay, retry_after or 0))


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
    if not notification.prayer_time_aware:
        return None
    return held_until(
        organization=notification.organization,
        priority=PUSH_PRIORITY_TO_EVENT[notification.priority],
        kind=notification.notification_type,
        at=now,
    )


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
        ready = _ready_to_send(notification_id, now)
    if isinstance(ready, DeliveryReport):
        return ready
    outcomes = _send_to_devices(ready, now)
    with dangerously_platform_context():
        report = _aggregate(PushNotification.objects.select_for_update().get(pk=ready.pk), timezone.now())
        if report.next_attempt_at is not None:
            _enqueue_retry(str(ready.pk), report.next_attempt_at)
    report.outcomes = outcomes
    return report


def _ready_to_send(notification_id: uuid.UUID | str, now: datetime) -> PushNotification | DeliveryReport:
    """Step 1, under the row lock: the notification with its deliveries in place, or the report
    of why nothing is sent now."""
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
        refused = _create_deliveries(notification, now)
        if refused is not None:
            return refused
    return notification


def _create_deliveries(notification: PushNotification, now: datetime) -> DeliveryReport | None:
    """One `push_deliveries` row per active device of the recipient; a report when there is none."""
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
    return None


def _send_to_devices(notification: PushNotification, now: datetime) -> dict[str, str]:
    """Step 2: each due device claimed, sent to outside any transaction, and its outcome recorded."""
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
    return outcomes


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
            delivery.next_attempt_at = now + retry_delay(delivery.attempts, retry_after=result.retry_after)
        else:
            delivery.status = "failed"
            if result.outcome == "transient":
                delivery.error_message = f"gave up after {delivery.attempts} attempts: {result.error}"
        delivery.save(update_fields=["status", "sent_at", "provider_message_id", "error_message", "next_attempt_at"])


def _enqueue_retry(notification_id: str, at: datetime) -> None:
    def send() -> None:
        try:
            _deliver_task().apply_async(args=[notification_id], eta=at)
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
