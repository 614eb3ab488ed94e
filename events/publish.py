"""Storing a broadcast made in Python (announcements, emergency alerts, reminders) as an outbox row."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from events import domain
from events.models import RealtimeEvent
from events.topics import notifications_topic


@transaction.atomic
def event_publish(
    *,
    organization_id: uuid.UUID | str,
    topics: list[str],
    event: str,
    payload: dict,
    event_type: str = "system_announcement",
    event_category: str = "system",
    priority: str = "medium",
    broadcast_scope: str = "organization",
    target_user_id: uuid.UUID | str | None = None,
    created_by_id: uuid.UUID | str | None = None,
    expires_in: timedelta | None = None,
) -> RealtimeEvent:
    """Store a broadcast made in Python (announcements, emergency alerts, reminders) so the
    listener fans it out and replay and poll find it. Runs in the caller's tenant context."""
    if priority not in domain.PRIORITY_ORDER:
        raise ValueError(f"unknown priority {priority!r}")
    return RealtimeEvent.objects.create(
        organization_id=organization_id,
        event_type=event_type,
        event_category=event_category,
        priority=priority,
        event_payload=payload,
        event_metadata={"topics": topics, "event": event},
        broadcast_scope=broadcast_scope,
        target_user_id=target_user_id,
        created_by_id=created_by_id,
        expires_at=timezone.now() + expires_in if expires_in else None,
    )


def announcement_publish(
    *,
    organization_id: uuid.UUID | str,
    role: str,
    title: str,
    body: str,
    emergency: bool = False,
    created_by_id: uuid.UUID | str | None = None,
) -> RealtimeEvent:
    """A system announcement (or emergency alert, critical priority) to a `notifications:` role topic."""
    topic = notifications_topic(organization_id, role)
    name = "emergency_alert" if emergency else "system_announcement"
    return event_publish(
        organization_id=organization_id,
        topics=[topic],
        event=name,
        payload={"type": name, "title": title, "body": body, "role": role},
        priority="critical" if emergency else "medium",
        created_by_id=created_by_id,
    )
