"""Writes for connections (realtime_subscriptions), presence (realtime_presence) and attendance
collaboration.

A *connection* is one device session: every realtime_subscriptions row of it carries the same
`session_id`, which is the `connectionId` the REST API hands out. REST connect creates the rows
for the channels the user should join; the socket mirror (presence/mirror.py) keeps them true
while the WebSocket lives. Everything here runs inside the caller's tenant context, except the
expiry jobs, which work across schools under the platform role.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from events.models import RealtimeSubscription
from events.topics import TopicDenied, authorize_topic, group_name, topics_for_user
from harry_realtime.api import ApiError
from harry_realtime.tenancy import dangerously_platform_context
from school import selectors as school_selectors
from school.models import Attendance, Group, Role, StudentGroupEnrollment, User
from syncqueue.models import OfflineSyncOperation

from . import marking
from .models import CONNECTION_QUALITIES, PLATFORMS, PRAYER_STATUSES, PRAYERS, STATUSES, RealtimePresence

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
# Columns every row of one connection shares.
DEVICE_CONTEXT = (
    "app_version",
    "platform",
    "network_type",
    "battery_level",
    "cultural_preferences",
    "performance_mode",
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


def _presence_ttl() -> timedelta:
    return timedelta(seconds=settings.PRESENCE_TTL_SECONDS)


def _live(user: User, *, now: datetime):
    return RealtimeSubscription.objects.filter(user=user, connection_status="connected", expires_at__gt=now)


def _presence_online(user: User, *, device_id: str, now: datetime, platform: str | None, app_version: str | None):
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
            expires_at=now + _presence_ttl(),
        )
    if presence.status == "offline":
        presence.status = "online"
        presence.status_changed_at = now
        presence.session_start = now
        presence.activity = presence.current_screen = presence.current_group_id = None
    presence.last_seen = now
    presence.expires_at = now + _presence_ttl()
    presence.user_name = user.full_name or user.username
    if platform in PLATFORMS:
        presence.platform = platform
    if app_version:
        presence.app_version = app_version
    presence.save()
    return presence


def _presence_offline_unless_live(user_id, device_id: str, *, now: datetime, status: str = "offline") -> bool:
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


def _subscription_rows(
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
    performance_mode: str,
    network_type: str | None = None,
    battery_level: int | None = None,
) -> Connection:
    """Register a device session and its channels (spec ConnectRequest); a reconnecting device
    replaces its previous session."""
    now = _now()
    live = _live(user, now=now)
    other_sessions = set(live.exclude(device_id=device_id).values_list("session_id", flat=True))
    limit = settings.REALTIME_MAX_CONNECTIONS_PER_USER
    if len(other_sessions) >= limit:
        raise ApiError(
            "too_many_connections",
            f"At most {limit} devices may be connected at once; disconnect another device first.",
            status_code=429,
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
        "network_type": network_type,
        "battery_level": battery_level,
        "cultural_preferences": cultural_preferences,
        "performance_mode": performance_mode,
        "last_ping": now,
        "last_heartbeat": now,
    }
    _subscription_rows(user, session_id=connection_id, device_id=device_id, topics=channels, context=context)
    _presence_online(user, device_id=device_id, now=now, platform=platform, app_version=app_version)
    return Connection(connection_id=connection_id, device_id=device_id, channels=channels, omitted_channels=omitted)


def _session_rows(user: User, connection_id: str):
    return RealtimeSubscription.objects.filter(user=user, session_id=str(connection_id))


@transaction.atomic
def connection_close(*, user: User, connection_id: str, reason: str, sync_pending_data: bool) -> dict:
    """End a device session (spec DisconnectRequest). A prayer-time disconnect shows the user as
    at prayer rather than offline."""
    now = _now()
    rows = _session_rows(user, connection_id)
    device_id = rows.values_list("device_id", flat=True).first()
    if device_id is None:
        raise ApiError("connection_not_found", "No such connection for this user.", status_code=404)
    rows.filter(connection_status__in=["connected", "reconnecting"]).update(connection_status="disconnected")
    status = "prayer" if reason == "prayer_time" else "offline"
    _presence_offline_unless_live(user.pk, device_id, now=now, status=status)
    result = {"connectionId": str(connection_id), "status": "disconnected", "reason": reason}
    if sync_pending_data:
        result["pendingSyncOperations"] = OfflineSyncOperation.objects.filter(
            user=user, device_id=device_id, sync_status__in=["pending", "processing"]
        ).count()
    return result


def _topics_for_request(user: User, subscription_type: str, targets: dict[str, list]) -> list[str]:
    org = user.organization_id
    if subscription_type == "notifications":
        if any(targets.values()):
            raise ApiError("unsupported_target", "Notification subscriptions take no target entities.")
        return [f"notifications:org_{org}:role_all", f"notifications:org_{org}:role_{user.role}"]
    allowed = TARGETS_OF_TYPE[subscription_type]
    topics = []
    for entity, ids in targets.items():
        if not ids:
            continue
        if entity not in allowed:
            raise ApiError(
                "unsupported_target",
                f"A {subscription_type} subscription cannot target {entity}.",
                details={"allowed": sorted(allowed)},
            )
        for kind in allowed[entity]:
            topics += [f"{kind}:org_{org}:{ENTITY_PREFIX[kind]}_{i}" for i in ids]
    if not topics:
        raise ApiError("no_targets", "Name at least one target entity.", details={"allowed": sorted(allowed)})
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
    session = _session_rows(user, connection_id)
    anchor = session.filter(connection_status="connected", expires_at__gt=now).first()
    if anchor is None:
        raise ApiError("connection_not_found", "No live connection with this id for this user.", status_code=404)
    topics = _topics_for_request(user, subscription_type, targets)
    for topic in topics:
        try:
            authorize_topic(user, topic)
        except TopicDenied as denied:
            raise ApiError("topic_denied", denied.reason, status_code=403, details={"channel": topic}) from None
    stored = {"filters": filters, "offlineSettings": offline_settings}
    existing = {row.channel_name: row for row in session.filter(connection_status="connected", expires_at__gt=now)}
    new_topics = [t for t in topics if t not in existing]
    limit = settings.REALTIME_MAX_CHANNELS_PER_CONNECTION
    if len(existing) + len(new_topics) > limit:
        raise ApiError(
            "channel_limit_reached",
            f"A connection may hold at most {limit} channels.",
            status_code=409,
            details={"limit": limit, "current": len(existing), "requested": len(new_topics)},
        )
    for topic in topics:
        if topic in existing:
            existing[topic].subscription_filters = stored
            existing[topic].save(update_fields=["subscription_filters", "updated_at"])
    context = {f: getattr(anchor, f) for f in DEVICE_CONTEXT}
    context.update(websocket_id=anchor.websocket_id, last_ping=now, last_heartbeat=now)
    created = _subscription_rows(
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
        raise ApiError("subscription_not_found", "No such subscription on this connection.", status_code=404)


# --- The socket mirror: called by presence/mirror.py from the gateway's consumer. ---


def _socket_context(platform: str | None) -> dict:
    return {"platform": platform if platform in ("ios", "android", "web") else None}


@transaction.atomic
def socket_opened(
    *,
    user: User,
    websocket_id: str,
    connection_id: str | None = None,
    device_id: str | None = None,
    platform: str | None = None,
) -> tuple[str, str]:
    """Bind a new WebSocket to the REST connection it names (or to the device's latest one),
    else start a session of its own. Returns (session id, device id)."""
    now = _now()
    session = None
    if connection_id:
        session = _session_rows(user, connection_id).first()
    if session is None and device_id:
        session = _live(user, now=now).filter(device_id=device_id).order_by("-last_heartbeat").first()
    if session is not None:
        session_id, device_id = session.session_id, session.device_id
        _session_rows(user, session_id).filter(expires_at__gt=now).update(
            websocket_id=websocket_id, connection_status="connected", last_heartbeat=now, last_ping=now
        )
    else:
        session_id = str(uuid.uuid4())
        device_id = device_id or f"socket-{session_id}"
    _presence_online(user, device_id=device_id, now=now, platform=platform, app_version=None)
    return session_id, device_id


@transaction.atomic
def socket_heartbeat(
    *, user: User, session_id: str, device_id: str, last_event_received: datetime | None = None
) -> None:
    """A (debounced) sign of life: the session's rows and the device's presence stay current."""
    now = _now()
    fields = {
        "last_heartbeat": now,
        "last_ping": now,
        "connection_status": "connected",
        "expires_at": now + timedelta(hours=24),
    }
    if last_event_received is not None:
        fields["last_event_received"] = last_event_received
    _session_rows(user, session_id).exclude(connection_status="disconnected").update(**fields)
    RealtimePresence.objects.filter(user=user, device_id=device_id).exclude(status="offline").update(
        last_seen=now, expires_at=now + _presence_ttl()
    )


@transaction.atomic
def socket_joined(
    *, user: User, session_id: str, device_id: str, websocket_id: str, topic: str, platform: str | None = None
) -> None:
    """A joined topic is a subscription of the session (created unless REST connect made it)."""
    now = _now()
    updated = (
        _session_rows(user, session_id)
        .filter(channel_name=topic)
        .update(connection_status="connected", websocket_id=websocket_id, last_heartbeat=now, last_ping=now)
    )
    if not updated:
        # A REST-registered session lends its device context to the topics the socket adds.
        anchor = _session_rows(user, session_id).first()
        context = {f: getattr(anchor, f) for f in DEVICE_CONTEXT} if anchor else _socket_context(platform)
        context.update(websocket_id=websocket_id, last_ping=now, last_heartbeat=now)
        _subscription_rows(user, session_id=session_id, device_id=device_id, topics=[topic], context=context)


@transaction.atomic
def socket_left(*, user: User, session_id: str, topic: str) -> None:
    _session_rows(user, session_id).filter(channel_name=topic).delete()


@transaction.atomic
def socket_closed(*, user: User, session_id: str, device_id: str) -> None:
    """The socket is gone (clean or abrupt): its rows are disconnected and, unless the device
    has another live session, its presence goes offline."""
    now = _now()
    _session_rows(user, session_id).exclude(connection_status="disconnected").update(
        connection_status="disconnected", last_ping=now
    )
    _presence_offline_unless_live(user.pk, device_id, now=now)


def _text(value, limit: int = 200) -> str | None:
    return str(value)[:limit] if isinstance(value, (str, int)) and str(value) else None


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
    now = _now()
    fields = presence_fields_from_meta(meta, topic=topic)
    group = fields.get("current_group_id")
    if group is not None and not Group.objects.filter(pk=group).exists():
        fields.pop("current_group_id")
    presence = _presence_online(user, device_id=device_id, now=now, platform=fields.get("platform"), app_version=None)
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
        activity=None, current_screen=None, current_group=None, current_lesson_id=None, last_seen=_now()
    )


# --- Expiry (Celery beat), across schools. ---


@dataclass(frozen=True)
class ExpiryResult:
    connections_disconnected: int
    presences_offline: list[tuple[str, str, str]]  # (organization id, user id, device id)
    subscriptions_expired: int
    # (topic, websocket id) of the sockets whose presences went offline: they leave those topics.
    sockets: list[tuple[str, str]]


def presence_expire(*, now: datetime | None = None) -> ExpiryResult:
    """Connections without a heartbeat past the timeout become disconnected; presences past
    `expires_at` (or whose device lost its last connection) go offline; subscriptions past their
    24 h lifetime are removed."""
    now = now or _now()
    stale_before = now - timedelta(seconds=settings.PRESENCE_CONNECTION_TIMEOUT_SECONDS)
    with dangerously_platform_context():
        stale = RealtimeSubscription.objects.filter(connection_status="connected", last_heartbeat__lt=stale_before)
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
    from . import state

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


# --- Attendance collaboration (spec "Teacher Attendance Real-time Collaboration"). ---


def attendance_topic(organization_id, group_id) -> str:
    return f"attendance:org_{organization_id}:group_{group_id}"


def _broadcast_on_commit(topic: str, event: str, payload: dict) -> None:
    message = {
        "type": "realtime.broadcast",
        "topic": topic,
        "event": event,
        "payload": payload,
        "meta": None,
        "sender": None,
    }
    transaction.on_commit(lambda: async_to_sync(get_channel_layer().group_send)(group_name(topic), message))


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def _marking_group(user: User, group_id) -> Group:
    group = Group.objects.filter(pk=group_id).first()
    if group is None:
        raise ApiError("group_not_found", "No such group in this organization.", status_code=404)
    if user.role not in (Role.TEACHER, Role.ADMIN) or not school_selectors.user_may_watch_group(user, group.pk):
        raise ApiError("forbidden", "Only the group's teachers and admins mark its attendance.", status_code=403)
    return group


def _enrolled_student_ids(group: Group, student_ids: list | None) -> list[str]:
    enrolled = StudentGroupEnrollment.objects.filter(group=group, status=StudentGroupEnrollment.Status.ACTIVE)
    ids = {str(s) for s in enrolled.values_list("student_id", flat=True)}
    if student_ids is None:
        return sorted(ids)
    wanted = [str(s) for s in student_ids]
    missing = [s for s in wanted if s not in ids]
    if missing:
        raise ApiError(
            "student_not_in_group", "These students are not enrolled in the group.", details={"studentIds": missing}
        )
    return list(dict.fromkeys(wanted))


def _marker(user: User) -> dict:
    teacher = school_selectors.teacher_for_user(user)
    return {"teacherId": str(teacher.pk) if teacher else None, "userId": str(user.pk), "name": user.full_name}


def _names(user_ids: list[str]) -> dict[str, str]:
    return {str(u.pk): u.full_name or u.username for u in User.objects.filter(pk__in=user_ids)}


def _claim_or_refuse(user: User, group: Group, student_ids: list[str], *, override: bool) -> int:
    if override and user.role != Role.ADMIN:
        raise ApiError("forbidden", "Only an admin may override another teacher's marking.", status_code=403)
    result = marking.claim(group_id=str(group.pk), user_id=str(user.pk), student_ids=student_ids, override=override)
    if result.ok:
        if override:
            audit.info("attendance_override user=%s group=%s students=%s", user.pk, group.pk, student_ids)
        return result.expires_at_ms
    if result.limit_reached_by is not None:
        names = _names(result.limit_reached_by)
        audit.info("attendance_marking_limit user=%s group=%s", user.pk, group.pk)
        raise ApiError(
            "marking_limit_reached",
            f"{len(result.limit_reached_by)} teachers are already marking this group.",
            status_code=409,
            details={
                "maxConcurrentMarkers": settings.ATTENDANCE_MAX_CONCURRENT_MARKERS,
                "markingTeachers": [{"userId": u, "name": names.get(u)} for u in result.limit_reached_by],
            },
        )
    names = _names([c.user_id for c in result.conflicts])
    audit.info("attendance_concurrent_marking user=%s group=%s conflicts=%s", user.pk, group.pk, result.conflicts)
    raise ApiError(
        "concurrent_marking",
        "Another teacher is marking this student right now.",
        status_code=409,
        details={
            "conflicts": [
                {
                    "studentId": c.student_id,
                    "markingTeacher": {"userId": c.user_id, "name": names.get(c.user_id)},
                    "until": _iso_ms(c.expires_at_ms),
                }
                for c in result.conflicts
            ]
        },
    )


def attendance_marking_start(*, user: User, group_id, student_ids: list | None = None, override: bool = False) -> dict:
    """Start (or extend) the caller's marking of a group: claims the students for the marking
    window and tells the other teachers on the group's topic (`marking_in_progress`)."""
    group = _marking_group(user, group_id)
    students = _enrolled_student_ids(group, student_ids)
    expires_ms = _claim_or_refuse(user, group, students, override=override)
    payload = {
        "groupId": str(group.pk),
        "studentIds": students,
        "teacher": _marker(user),
        "until": _iso_ms(expires_ms),
        "timestamp": marking.now_ms(),
    }
    _broadcast_on_commit(attendance_topic(user.organization_id, group.pk), "marking_in_progress", payload)
    return {**payload, "markingTeachers": _active_markers(group)}


def _active_markers(group: Group) -> list[dict]:
    active = marking.active_markers(group_id=str(group.pk))
    names = _names(list(active))
    return [{"userId": u, "name": names.get(u), "until": _iso_ms(ms)} for u, ms in active.items()]


def attendance_marking_finish(*, user: User, group_id) -> dict:
    """End the caller's marking session in a group, releasing their students."""
    group = _marking_group(user, group_id)
    released = marking.release(group_id=str(group.pk), user_id=str(user.pk))
    payload = {
        "groupId": str(group.pk),
        "studentIds": sorted(released),
        "teacher": _marker(user),
        "sessionEnded": True,
        "timestamp": marking.now_ms(),
    }
    _broadcast_on_commit(attendance_topic(user.organization_id, group.pk), "marking_completed", payload)
    return payload


@transaction.atomic
def attendance_mark(
    *,
    user: User,
    group_id,
    student_id,
    status: str,
    notes: str | None = None,
    attendance_date: date | None = None,
    override: bool = False,
) -> Attendance:
    """Mark one student, unless another teacher is marking them inside the marking window
    (`concurrent_marking`) or the group already has its maximum of teachers marking.

    The claim stays with the caller for the window, so a colleague cannot silently overwrite a
    mark just made; `marking_in_progress` and `marking_completed` go out when the mark commits.
    """
    group = _marking_group(user, group_id)
    (student,) = _enrolled_student_ids(group, [student_id])
    expires_ms = _claim_or_refuse(user, group, [student], override=override)
    # An admin marks on behalf of the group's teacher; _marking_group let a teacher in only if assigned.
    teacher = school_selectors.teacher_for_user(user)
    teacher_ids = [str(teacher.pk)] if teacher else sorted(school_selectors.teacher_ids_of_group(group.pk))
    if not teacher_ids:
        raise ApiError("group_has_no_teacher", "Assign a teacher to the group before marking.", status_code=409)
    day = attendance_date or timezone.localdate()
    row = Attendance.objects.select_for_update().filter(student_id=student, group=group, attendance_date=day).first()
    if row is None:
        row = Attendance(
            organization_id=user.organization_id,
            student_id=student,
            group=group,
            attendance_date=day,
            teacher_id=teacher_ids[0],
            created_by=user,
        )
    row.status = status
    row.marked_by = user
    row.updated_by = user
    if notes is not None:
        row.notes = notes
    row.save()
    row.refresh_from_db()
    topic = attendance_topic(user.organization_id, group.pk)
    marker = _marker(user)
    now_ms = marking.now_ms()
    _broadcast_on_commit(
        topic,
        "marking_in_progress",
        {
            "groupId": str(group.pk),
            "studentIds": [student],
            "studentId": student,
            "status": status,
            "teacher": marker,
            "until": _iso_ms(expires_ms),
            "timestamp": now_ms,
        },
    )
    _broadcast_on_commit(
        topic,
        "marking_completed",
        {
            "groupId": str(group.pk),
            "studentId": student,
            "status": status,
            "teacher": marker,
            "result": {
                "attendanceId": str(row.pk),
                "attendanceDate": row.attendance_date.isoformat(),
                "syncVersion": row.sync_version,
            },
            "timestamp": now_ms,
        },
    )
    return row
