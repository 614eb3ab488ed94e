"""The socket mirror's writes: called by presence/mirror.py from the gateway's consumer.

Each WebSocket is one connection (its realtime_subscriptions rows share a `session_id`); these
keep its rows and the device's realtime_presence row true while the socket lives, inside the
user's tenant context.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from events import profiles
from school.models import Group, User

from .models import CONNECTION_QUALITIES, PLATFORMS, PRAYER_STATUSES, PRAYERS, STATUSES, RealtimePresence
from .services import (
    DEVICE_CONTEXT,
    live_subscriptions,
    presence_offline_unless_live,
    presence_online,
    presence_quality,
    presence_ttl,
    session_rows,
    subscription_rows,
)

audit = logging.getLogger("harry.audit")


def _socket_context(platform: str | None, profile: profiles.ConnectionProfile) -> dict:
    return {"platform": platform if platform in ("ios", "android", "web") else None, **profiles.row_fields(profile)}


@transaction.atomic
def socket_opened(
    *,
    user: User,
    websocket_id: str,
    connection_id: str | None = None,
    device_id: str | None = None,
    platform: str | None = None,
    profile: profiles.ConnectionProfile | None = None,
) -> tuple[str, str, profiles.ConnectionProfile | None]:
    """Bind a new WebSocket to the REST connection it names (or to the device's latest one),
    else start a session of its own. `profile`: what the socket URL declared, written to the
    connection's rows. Returns (session id, device id, the REST connection's stored profile when
    the URL declared none)."""
    now = timezone.now()
    session = None
    if connection_id:
        session = session_rows(user, connection_id).first()
    if session is None and device_id:
        session = live_subscriptions(user, now=now).filter(device_id=device_id).order_by("-last_heartbeat").first()
    stored = None
    if session is not None:
        session_id, device_id = session.session_id, session.device_id
        declared = profiles.row_fields(profile) if profile is not None else {}
        session_rows(user, session_id).filter(expires_at__gt=now).update(
            websocket_id=websocket_id, connection_status="connected", last_heartbeat=now, last_ping=now, **declared
        )
        stored = profiles.from_row(session) if profile is None else None
    else:
        session_id = str(uuid.uuid4())
        device_id = device_id or f"socket-{session_id}"
    presence_online(user, device_id=device_id, now=now, platform=platform, app_version=None)
    if profile is not None:
        presence_quality(user, device_id=device_id, profile=profile)
    return session_id, device_id, stored


@transaction.atomic
def socket_profile_changed(*, user: User, session_id: str, device_id: str, profile: profiles.ConnectionProfile) -> None:
    """The live socket changed its connection profile: the connection's rows follow."""
    session_rows(user, session_id).update(**profiles.row_fields(profile))
    presence_quality(user, device_id=device_id, profile=profile)


@transaction.atomic
def socket_heartbeat(
    *,
    user: User,
    session_id: str,
    device_id: str,
    last_event_received: datetime | None = None,
    idle_timeout_seconds: float = 0,
) -> None:
    """A (debounced) sign of life: the session's rows and the device's presence stay current. The
    presence lasts PRESENCE_TTL_SECONDS, or the socket's idle timeout when that is longer (a
    battery-saving phone beats every 300 s)."""
    now = timezone.now()
    ttl = max(presence_ttl(), timedelta(seconds=idle_timeout_seconds))
    fields = {
        "last_heartbeat": now,
        "last_ping": now,
        "connection_status": "connected",
        "expires_at": now + timedelta(hours=24),
    }
    if last_event_received is not None:
        fields["last_event_received"] = last_event_received
    session_rows(user, session_id).exclude(connection_status="disconnected").update(**fields)
    RealtimePresence.objects.filter(user=user, device_id=device_id).exclude(status="offline").update(
        last_seen=now, expires_at=now + ttl
    )


@transaction.atomic
def socket_joined(
    *,
    user: User,
    session_id: str,
    device_id: str,
    websocket_id: str,
    topic: str,
    platform: str | None = None,
    profile: profiles.ConnectionProfile | None = None,
) -> None:
    """A joined topic is a subscription of the session (created unless REST connect made it)."""
    now = timezone.now()
    updated = (
        session_rows(user, session_id)
        .filter(channel_name=topic)
        .update(connection_status="connected", websocket_id=websocket_id, last_heartbeat=now, last_ping=now)
    )
    if not updated:
        # A REST-registered session lends its device context to the topics the socket adds.
        anchor = session_rows(user, session_id).first()
        if anchor is not None:
            context = {f: getattr(anchor, f) for f in DEVICE_CONTEXT}
        else:
            context = _socket_context(platform, profile or profiles.ConnectionProfile())
        context.update(websocket_id=websocket_id, last_ping=now, last_heartbeat=now)
        subscription_rows(user, session_id=session_id, device_id=device_id, topics=[topic], context=context)


@transaction.atomic
def socket_left(*, user: User, session_id: str, topic: str) -> None:
    session_rows(user, session_id).filter(channel_name=topic).delete()


@transaction.atomic
def socket_closed(*, user: User, session_id: str, device_id: str) -> None:
    """The socket is gone (clean or abrupt): its rows are disconnected and, unless the device
    has another live session, its presence goes offline."""
    now = timezone.now()
    session_rows(user, session_id).exclude(connection_status="disconnected").update(
        connection_status="disconnected", last_ping=now
    )
    presence_offline_unless_live(user.pk, device_id, now=now)


def _text(value, limit: int = 200) -> str | None:
    text = str(value)[:limit] if isinstance(value, (str, int)) else ""
    return text if text and "\x00" not in text else None  # PostgreSQL text cannot hold NUL


def _pick(meta: dict, *names: str):
    for name in names:
        if name in meta:
            return meta[name]
    return None


def uuid_or_none(value) -> str | None:
    try:
        return str(uuid.UUID(str(value))) if value else None
    except ValueError:
        return None


def presence_fields_from_meta(meta: dict, *, topic: str | None = None) -> dict:
    """The presence columns a tracked meta sets. Values outside the table's CHECKs are dropped,
    so a client's free-form meta can never make the write fail."""
    fields: dict = {}
    status = _pick(meta, "status")
    if status in STATUSES:
        fields["status"] = status
    for column, names, allowed in (
        ("connection_quality", ("connection_quality", "connectionQuality"), CONNECTION_QUALITIES),
        ("prayer_time_status", ("prayer_time_status", "prayerTimeStatus"), PRAYER_STATUSES),
        ("current_prayer", ("current_prayer", "currentPrayer"), PRAYERS),
        ("platform", ("platform",), PLATFORMS),
    ):
        value = _pick(meta, *names)
        if value in allowed:
            fields[column] = value
    for column, names in (
        ("activity", ("activity",)),
        ("custom_status", ("custom_status", "customStatus")),
        ("current_screen", ("current_screen", "currentScreen", "screen")),
        ("app_version", ("app_version", "appVersion")),
    ):
        value = _text(_pick(meta, *names))
        if value is not None:
            fields[column] = value
    group = uuid_or_none(_pick(meta, "current_group_id", "groupId", "group_id"))
    if group is None and topic and topic.startswith("attendance:"):
        group = topic.rsplit("_", 1)[-1]
    if group is not None:
        fields["current_group_id"] = group
    lesson = uuid_or_none(_pick(meta, "current_lesson_id", "lessonId", "lesson_id"))
    if lesson is not None:
        fields["current_lesson_id"] = lesson
    return fields


@transaction.atomic
def presence_tracked(*, user: User, device_id: str, meta: dict, topic: str | None = None) -> None:
    """Mirror a presence `track` into the device's presence row."""
    now = timezone.now()
    fields = presence_fields_from_meta(meta, topic=topic)
    group = fields.get("current_group_id")
    if group is not None and not Group.objects.filter(pk=group).exists():
        fields.pop("current_group_id")
    presence = presence_online(user, device_id=device_id, now=now, platform=fields.get("platform"), app_version=None)
    if "status" not in fields and presence.status == "offline":
        fields["status"] = "online"
    if fields.get("status", presence.status) != presence.status:
        fields["status_changed_at"] = now
    for column, value in fields.items():
        setattr(presence, column, value)
    presence.save()


@transaction.atomic
def presence_untracked(*, user: User, device_id: str) -> None:
    """The user stopped sharing activity: still online, no activity or location."""
    RealtimePresence.objects.filter(user=user, device_id=device_id).exclude(status="offline").update(
        activity=None, current_screen=None, current_group=None, current_lesson_id=None, last_seen=timezone.now()
    )
