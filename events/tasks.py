"""Beat jobs of the outbox: expiry and the hand-over of undelivered individual events to push."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from events.handoff import events_hand_to_push
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
