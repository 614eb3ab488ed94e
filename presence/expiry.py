"""Expiry (Celery beat), across schools under the platform role: silent connections, expired
presences and subscriptions, and the shared (Redis) presences of sockets that went offline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import DateTimeField, ExpressionWrapper, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from events.models import RealtimeSubscription
from harry_realtime.tenancy import dangerously_platform_context

from . import state
from .models import RealtimePresence

audit = logging.getLogger("harry.audit")


@dataclass(frozen=True)
class ExpiryResult:
    connections_disconnected: int
    presences_offline: list[tuple[str, str, str]]  # (organization id, user id, device id)
    subscriptions_expired: int
    # (topic, websocket id) of the sockets whose presences went offline: they leave those topics.
    sockets: list[tuple[str, str]]


def _stale_before(now: datetime) -> ExpressionWrapper:
    """A connection is stale without a heartbeat for PRESENCE_CONNECTION_TIMEOUT_SECONDS, scaled
    from the foreground interval to the row's own (150 s at 25 s, 720 s at 120 s, 1,800 s at 300 s)."""
    foreground = settings.REALTIME_HEARTBEAT_INTERVAL_MS
    per_ms = timedelta(milliseconds=settings.PRESENCE_CONNECTION_TIMEOUT_SECONDS * 1000 / foreground)
    interval = Coalesce(F("heartbeat_interval_ms"), Value(foreground))
    return ExpressionWrapper(Value(now) - interval * Value(per_ms), output_field=DateTimeField())


def presence_expire(*, now: datetime | None = None) -> ExpiryResult:
    """Connections without a heartbeat past the timeout become disconnected; presences past
    `expires_at` (or whose device lost its last connection) go offline; subscriptions past their
    24 h lifetime are removed."""
    now = now or timezone.now()
    with dangerously_platform_context():
        stale = RealtimeSubscription.objects.filter(
            connection_status="connected", last_heartbeat__lt=_stale_before(now)
        )
        devices = set(stale.values_list("user_id", "device_id"))
        disconnected = stale.update(connection_status="disconnected")
        live_devices = set(
            RealtimeSubscription.objects.filter(connection_status="connected", expires_at__gt=now).values_list(
                "user_id", "device_id"
            )
        )
        due = Q(expires_at__lte=now)
        for user_id, device_id in devices - live_devices:
            due |= Q(user_id=user_id, device_id=device_id)
        going = RealtimePresence.objects.exclude(status="offline").filter(due)
        offline = [(str(o), str(u), d) for o, u, d in going.values_list("organization_id", "user_id", "device_id")]
        of_going = Q(pk=None)
        for _, user_id, device_id in offline:
            of_going |= Q(user_id=user_id, device_id=device_id)
        sockets = sorted(
            set(
                RealtimeSubscription.objects.filter(of_going, websocket_id__isnull=False).values_list(
                    "channel_name", "websocket_id"
                )
            )
        )
        going.update(
            status="offline",
            status_changed_at=now,
            activity=None,
            current_screen=None,
            current_group=None,
            current_lesson_id=None,
        )
        expired_subscriptions = RealtimeSubscription.objects.filter(expires_at__lte=now).delete()[0]
    return ExpiryResult(disconnected, offline, expired_subscriptions, sockets)


async def socket_presences_drop(sockets: list[tuple[str, str]]) -> int:
    """Remove the shared (Redis) presences those sockets tracked and tell their topics."""
    dropped = 0
    for topic, websocket_id in sockets:
        for entry in await state.entries(topic):
            if entry.get("connection") != websocket_id:
                continue
            removed = await state.untrack(topic=topic, ref=entry["ref"], node=entry["node"])
            if removed is not None:
                dropped += 1
                await state.publish_diff(topic, joins=[], leaves=[removed])
    return dropped
