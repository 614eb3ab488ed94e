"""Beat jobs of the outbox: expiry, the hand-over of undelivered individual events to push, and
deadline reminders."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from events.handoff import events_hand_to_push
from events.reminders import deadline_reminders_send
from events.status import events_expire
from harry_realtime.tenancy import dangerously_platform_context


@shared_task(name="events.expire_events")
def expire_events() -> int:
    with dangerously_platform_context():
        return events_expire()


@shared_task(name="events.hand_undelivered_to_push")
def hand_undelivered_to_push() -> int:
    with dangerously_platform_context():
        return events_hand_to_push(older_than=timedelta(seconds=settings.REALTIME_PUSH_GRACE_SECONDS))


@shared_task(name="events.send_deadline_reminders")
def send_deadline_reminders() -> int:
    with dangerously_platform_context():
        return deadline_reminders_send(now=timezone.now())
