"""Push hand-off: individual events no live socket took become pushes (the notifications app)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from events.models import RealtimeEvent
from notifications.from_events import push_notification_create_for_event


def events_hand_to_push(*, older_than: timedelta, limit: int = 500) -> int:
    """Platform context: each individual event, once its grace period has passed, goes to the
    notifications app: a push for its target user if no live socket took it (still pending).
    Relatives get family notices of their own (events/family.py), handed over the same way. Events
    that came from push_notifications themselves are never handed back, or each would beget another."""
    candidates = list(
        RealtimeEvent.objects.select_for_update(skip_locked=True)
        .filter(
            broadcast_scope="individual",
            target_user__isnull=False,
            processed_at__lt=timezone.now() - older_than,
            deleted_at__isnull=True,
        )
        .exclude(source_table="push_notifications")
        .exclude(event_metadata__has_key="push_handoff_at")
        .exclude(delivery_status="expired")
        .order_by("seq")[:limit]
    )
    for event in candidates:
        offline = None if event.delivery_status == "pending" else []
        pushed = push_notification_create_for_event(event=event, offline_user_ids=offline)
        event.event_metadata = {**event.event_metadata, "push_handoff_at": timezone.now().isoformat()}
        if any(str(p.target_user_id) == str(event.target_user_id) for p in pushed):
            event.delivery_method = [*event.delivery_method, "push_notification"]
        event.save(update_fields=["event_metadata", "delivery_method", "updated_at"])
    return len(candidates)
