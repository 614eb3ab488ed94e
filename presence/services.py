"""Writes for connections (realtime_subscriptions) and presence (realtime_presence) over REST.

A *connection* is one device session: every realtime_subscriptions row of it carries the same
`session_id`, which is the `connectionId` the REST API hands out. REST connect creates the rows
for the channels the user should join; the socket mirror (presence/mirror.py) keeps them true
while the WebSocket lives (`sockets.py`). Everything here runs inside the caller's tenant context;
expiry (`expiry.py`) works across schools under the platform role, attendance collaboration is
`attendance.py`.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from events import profiles
from events.models import RealtimeSubscription
from events.topics import TopicDenied, authorize_topic, notifications_topic, topics_for_user
from harry_realtime.errors import Conflict, Forbidden, Invalid, NotFound, TooMany
from school.models import User
from syncqueue import selectors as sync_selectors

from .models import PLATFORMS, RealtimePresence

audit = logging.getLogger("harry.audit")

# The subscription_type a topic kind is stored under.
SUBSCRIPTION_TYPE_OF_KIND = {
    "rankings": "rankings",
    "tasks": "tasks",
    "attendance": "attendance",
    "groups": "dashboard",
    "notifications": "notifications",
}
# Which topic kinds a requested subscription type selects at connect. Feedback has no topic of
# its own: feedback entries reach the student's tasks topic (as postgres_changes).
KINDS_OF_TYPE = {
    "dashboard": {"rankings", "tasks", "groups"},
    "rankings": {"rankings"},
    "tasks": {"tasks"},
    "feedback": {"tasks"},
    "attendance": {"attendance"},
    "presence": {"attendance"},
    "notifications": {"notifications"},
}
# Topic kinds a SubscriptionRequest may target, per entity list.
TARGETS_OF_TYPE = {
    "dashboard": {"studentIds": ("rankings", "tasks"), "teacherIds": ("groups",)},
    "rankings": {"studentIds": ("rankings",)},
    "tasks": {"studentIds": ("tasks",)},
    "feedback": {"studentIds": ("tasks",)},
    "attendance": {"groupIds": ("attendance",)},
    "presence": {"groupIds": ("attendance",)},
}
# Columns every row of one connection shares (the connection profile among them).
DEVICE_CONTEXT = (
    "app_version",
    "platform",
    "cultural_preferences",
    *profiles.ROW_FIELDS,
    "heartbeat_interval_ms",
)
ENTITY_PREFIX = {"rankings": "student", "tasks": "student", "attendance": "group", "groups": "teacher"}


@dataclass(frozen=True)
class Connection:
    connection_id: str
    device_id: str
    channels: list[str]
    omitted_channels: list[str] = field(default_factory=list)


def _now() -> datetime:
    return timezone.now()


def presence_ttl() -> timedelta:
    return timedelta(seconds=settings.PRESENCE_TTL_SECONDS)


def live_subscriptions(user: User, *, now: datetime):
    return RealtimeSubscription.objects.filter(user=user, connection_status="connected", expires_at__gt=now)


def presence_online(user: User, *, device_id: str, now: datetime, platform: str | None, app_version: str | None):
    """The device's presence row, online; a new session starts if it was offline."""
    presence = RealtimePresence.objects.select_for_update().filter(user=user, device_id=device_id).first()
    if presence is None:
        return RealtimePresence.objects.create(
            organization_id=user.organization_id,
            user=user,
            user_type=user.role,
            user_name=user.full_name or user.username,
            device_id=device_id,
            platform=platform if platform in PLATFORMS else None,
            app_version=app_version,
            status="online",
            last_seen=now,
            session_start=now,
            status_changed_at=now,
            expires_at=now + presence_ttl(),
        )
    if presence.status == "offline":
        presence.status = "online"
        presence.status_changed_at = now
        presence.session_start = now
        presence.activity = presence.current_screen = presence.current_group_id = None
    presence.last_seen = now
    presence.expires_at = now + presence_ttl()
    presence.user_name = user.full_name or user.username
    if platform in PLATFORMS:
        presence.platform = platform
    if app_version:
        presence.app_version = app_version
    presence.save()
    return presence


def presence_quality(user: User, *, device_id: str, profile: profiles.ConnectionProfile) -> None:
    """The device's declared connection quality, on its presence row."""
    if profile.connection_quality is not None:
        RealtimePresence.objects.filter(user=user, device_id=device_id).update(
            connection_quality=profile.connection_quality
        )


def presence_offline_unless_live(user_id, device_id: str, *, now: datetime, status: str = "offline") -> bool:
    """Mark a device's presence offline (or `status`) unless another of its sessions is live."""
    still_live = RealtimeSubscription.objects.filter(
        user_id=user_id, device_id=device_id, connection_status="connected", expires_at__gt=now
    ).exists()
    if still_live:
        return False
    updated = RealtimePresence.objects.filter(user_id=user_id, device_id=device_id).exclude(status=status)
    return bool(
        updated.update(
            status=status,
            status_changed_at=now,
            last_seen=now,
            activity=None,
            current_screen=None,
            current_group=None,
            current_lesson_id=None,
        )
    )


def subscription_rows(
    user: User, *, session_id: str, device_id: str, topics: list[str], context: dict, filters: dict | None = None
) -> list[RealtimeSubscription]:
    rows = []
    for topic in topics:
        kind, _, subject = topic.partition(":")
        rows.append(
            RealtimeSubscription(
                organization_id=user.organization_id,
                user=user,
                user_type=user.role,
                device_id=device_id,
                session_id=session_id,
                subscription_type=SUBSCRIPTION_TYPE_OF_KIND[kind],
                subscription_filters=filters or {},
                target_entities=[topic.rsplit("_", 1)[-1]],
                channel_name=topic,
                connection_status="connected",
                **context,
            )
        )
    return RealtimeSubscription.objects.bulk_create(rows)


@transaction.atomic
def connection_register(
    *,
    user: User,
    device_id: str,
    platform: str,
    app_version: str,
    subscription_types: list[str],
    cultural_preferences: dict,
    profile: profiles.ConnectionProfile,
) -> Connection:
    """Register a device session and its channels (spec ConnectRequest); a reconnecting device
    replaces its previous session."""
    now = _now()
    live = live_subscriptions(user, now=now)
    other_sessions = set(live.exclude(device_id=device_id).values_list("session_id", flat=True))
    limit = settings.REALTIME_MAX_CONNECTIONS_PER_USER
    if len(other_sessions) >= limit:
        raise TooMany(
            "too_many_connections",
            f"At most {limit} devices may be connected at once; disconnect another device first.",
            details={"limit": limit},
        )
    live.filter(device_id=device_id).update(connection_status="disconnected")

    kinds = {"notifications"}.union(*(KINDS_OF_TYPE[t] for t in subscription_types))
    topics = [t for t in topics_for_user(user) if t.partition(":")[0] in kinds]
    channel_limit = settings.REALTIME_MAX_CHANNELS_PER_CONNECTION
    channels, omitted = topics[:channel_limit], topics[channel_limit:]
    connection_id = str(uuid.uuid4())
    context = {
        "app_version": app_version,
        "platform": platform,
        "cultural_preferences": cultural_preferences,
        **profiles.row_fields(profile),
        "last_ping": now,
        "last_heartbeat": now,
    }
    subscription_rows(user, session_id=connection_id, device_id=device_id, topics=channels, context=context)
    presence_online(user, device_id=device_id, now=now, platform=platform, app_version=app_version)
    presence_quality(user, device_id=device_id, profile=profile)
    return Connection(connection_id=connection_id, device_id=device_id, channels=channels, omitted_channels=omitted)


def session_rows(user: User, connection_id: str):
    return RealtimeSubscription.objects.filter(user=user, session_id=str(connection_id))


@transaction.atomic
def connection_close(*, user: User, connection_id: str, reason: str, sync_pending_data: bool) -> dict:
    """End a device session (spec DisconnectRequest). A prayer-time disconnect shows the user as
    at prayer rather than offline."""
    now = _now()
    rows = session_rows(user, connection_id)
    device_id = rows.values_list("device_id", flat=True).first()
    if device_id is None:
        raise NotFound("connection_not_found", "No such connection for this user.")
    rows.filter(connection_status__in=["connected", "reconnecting"]).update(connection_status="disconnected")
    status = "prayer" if reason == "prayer_time" else "offline"
    presence_offline_unless_live(user.pk, device_id, now=now, status=status)
    result = {"connectionId": str(connection_id), "status": "disconnected", "reason": reason}
    if sync_pending_data:
        result["pendingSyncOperations"] = sync_selectors.unfinished_operation_count(user=user, device_id=device_id)
    return result


def _topics_for_request(user: User, subscription_type: str, targets: dict[str, list]) -> list[str]:
    org = user.organization_id
    if subscription_type == "notifications":
        if any(targets.values()):
            raise Invalid("unsupported_target", "Notification subscriptions take no target entities.")
        return [notifications_topic(org, "all"), notifications_topic(org, user.role)]
    allowed = TARGETS_OF_TYPE[subscription_type]
    topics = []
    for entity, ids in targets.items():
        if not ids:
            continue
        if entity not in allowed:
            raise Invalid(
                "unsupported_target",
                f"A {subscription_type} subscription cannot target {entity}.",
                details={"allowed": sorted(allowed)},
            )
        for kind in allowed[entity]:
            topics += [f"{kind}:org_{org}:{ENTITY_PREFIX[kind]}_{i}" for i in ids]
    if not topics:
        raise Invalid("no_targets", "Name at least one target entity.", details={"allowed": sorted(allowed)})
    return list(dict.fromkeys(topics))


@transaction.atomic
def subscription_create(
    *,
    user: User,
    connection_id: str,
    subscription_type: str,
    targets: dict[str, list],
    filters: dict,
    offline_settings: dict,
) -> list[RealtimeSubscription]:
    """Add channels to a live connection (spec SubscriptionRequest), each authorized like a join."""
    now = _now()
    session = session_rows(user, connection_id)
    anchor = session.filter(connection_status="connected", expires_at__gt=now).first()
    if anchor is None:
        raise NotFound("connection_not_found", "No live connection with this id for this user.")
    topics = _topics_for_request(user, subscription_type, targets)
    for topic in topics:
        try:
            authorize_topic(user, topic)
        except TopicDenied as denied:
            raise Forbidden("topic_denied", denied.reason, details={"channel": topic}) from None
    stored = {"filters": filters, "offlineSettings": offline_settings}
    existing = {row.channel_name: row for row in session.filter(connection_status="connected", expires_at__gt=now)}
    new_topics = [t for t in topics if t not in existing]
    limit = settings.REALTIME_MAX_CHANNELS_PER_CONNECTION
    if len(existing) + len(new_topics) > limit:
        raise Conflict(
            "channel_limit_reached",
            f"A connection may hold at most {limit} channels.",
            details={"limit": limit, "current": len(existing), "requested": len(new_topics)},
        )
    for topic in topics:
        if topic in existing:
            existing[topic].subscription_filters = stored
            existing[topic].save(update_fields=["subscription_filters", "updated_at"])
    context = {f: getattr(anchor, f) for f in DEVICE_CONTEXT}
    context.update(websocket_id=anchor.websocket_id, last_ping=now, last_heartbeat=now)
    created = subscription_rows(
        user,
        session_id=str(connection_id),
        device_id=anchor.device_id,
        topics=new_topics,
        context=context,
        filters=stored,
    )
    by_topic = {**existing, **{row.channel_name: row for row in created}}
    return [by_topic[t] for t in topics]


@transaction.atomic
def subscription_delete(*, user: User, subscription_id: str, connection_id: str | None = None) -> None:
    """Remove one channel from a connection (spec UnsubscribeRequest)."""
    rows = RealtimeSubscription.objects.filter(pk=subscription_id, user=user)
    if connection_id:
        rows = rows.filter(session_id=str(connection_id))
    if not rows.delete()[0]:
        raise NotFound("subscription_not_found", "No such subscription on this connection.")


# --- The socket mirror: called by presence/mirror.py from the gateway's consumer. ---
# --- Expiry (Celery beat), across schools. ---
# --- Attendance collaboration (spec "Teacher Attendance Real-time Collaboration"). ---
