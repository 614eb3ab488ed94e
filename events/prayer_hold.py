"""Prayer-time-aware delivery of stored events: the culture policy (culture/delivery.py) decides,
these apply it to the outbox.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from django.conf import settings

from culture.delivery import decide, held_until, may_be_held, organization_prayer_status
from events.models import RealtimeEvent


def _prayer_aware(cultural: dict | None) -> bool:
    """`cultural.prayerTimeAware: false` (the broadcast API's flag) opts an event out of holding."""
    return bool((cultural or {}).get("prayerTimeAware", True))


def prayer_release_at(
    *, organization: Any, priority: str, kind: str, cultural: dict | None, at: datetime
) -> datetime | None:
    """When the culture policy holds a delivery for the school's prayer window, the window's end.

    REALTIME_PRAYER_HOLD=false turns holding off for sockets (pushes have their own flag).
    """
    if not settings.REALTIME_PRAYER_HOLD or not _prayer_aware(cultural):
        return None
    return held_until(organization=organization, priority=priority, kind=kind, at=at)


def events_hold_for_prayer(events: list[RealtimeEvent], *, at: datetime) -> set[int]:
    """Platform context, the listener's: events the policy holds are re-scheduled for the end of
    their school's prayer window, when the listener sends them in seq order; returns their seqs.

    One prayer status per school per batch; critical events and live data changes never wait.
    """
    if not settings.REALTIME_PRAYER_HOLD:
        return set()
    statuses: dict[Any, Any] = {}
    held: dict[datetime, list[int]] = defaultdict(list)
    for event in events:
        if not may_be_held(priority=event.priority, kind=event.event_type) or not _prayer_aware(event.cultural_context):
            continue
        if event.organization_id not in statuses:
            statuses[event.organization_id] = organization_prayer_status(event.organization, at)
        deliver_now, release_at = decide(
            priority=event.priority, kind=event.event_type, status=statuses[event.organization_id]
        )
        if not deliver_now:
            held[release_at].append(event.seq)
    for release_at, seqs in held.items():
        RealtimeEvent.objects.filter(seq__in=seqs).update(scheduled_for=release_at)
    return {seq for seqs in held.values() for seq in seqs}
