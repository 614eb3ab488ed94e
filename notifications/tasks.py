"""Celery tasks: thin wrappers over notifications.services (delivery is a job, platform role)."""

from __future__ import annotations

from celery import shared_task

from . import delivery


@shared_task(name="notifications.deliver_push_notification", ignore_result=True)
def deliver_push_notification(notification_id: str) -> str:
    """Safe to run any number of times: per-device claims make a re-run skip what was sent."""
    return delivery.push_notification_deliver(notification_id=notification_id).status


@shared_task(name="notifications.dispatch_due_push_notifications", ignore_result=True)
def dispatch_due_push_notifications() -> int:
    """Beat: queue every push that came due (scheduled, released after prayer, retry due), and end
    claims whose worker died mid-call."""
    delivery.push_delivery_resolve_stale()
    ids = delivery.push_notifications_due_ids()
    for notification_id in ids:
        deliver_push_notification.delay(notification_id)
    return len(ids)


@shared_task(name="notifications.expire_push_notifications", ignore_result=True)
def expire_push_notifications() -> int:
    """Beat: pushes past expires_at become expired and are never sent."""
    return delivery.push_notifications_expire()
