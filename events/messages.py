"""The channel-layer messages that travel to the sockets, typed, and the outbox's message building.

Every message a RealtimeSocket (events/consumers.py) receives through its topic groups is one of
the TypedDicts below, sent to `events.topics.group_name(topic)`; build them with the
constructors here. The consumer turns broadcasts and changes into socket frames for one recipient
with `events.recipients` (row rules and FERPA). `messages_for` builds a stored realtime_events
row's messages (the listener, replay, the poll fallback); `events/tests/test_messages.py` checks
every producer against these types.

Which broadcasts are stored, so replay and the poll find them: every outbox event (change capture,
the broadcast API, announcements, reminders; `meta.id` is its seq). Not stored, by design:
attendance-marking notices (presence/attendance.py, `meta` None), which describe a claim that
lapses within seconds (the marks themselves are attendance rows and reach sockets as stored
events), and client broadcasts (socket and REST fallback, `ClientBroadcastMessage`), which are
ephemeral in the Supabase protocol too; their `meta` is `{"sender": {user_id, role}}`, set by the
server.

Broadcast event names: `ServerEvent` below is every name the server's producers broadcast under,
and `SERVER_EVENTS` the same as a set. They are reserved: a client broadcast may not use one
(events/broadcast_policy.py), so a message under one of these names always comes from the server.
`events/tests/test_messages.py` checks every producer's messages against these types, the names
included.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict, get_args

from django.db import connection

from events import domain
from events.models import ANNOUNCEMENT_KINDS, EVENT_TYPES, RealtimeEvent

BROADCAST = "realtime.broadcast"
POSTGRES_CHANGE = "realtime.postgres_change"
PRESENCE_DIFF = "realtime.presence_diff"
BATCH = "realtime.batch"

# -- Broadcast event names the server produces (reserved for it) -----------------------------------

# Captured changes (events/domain.py `broadcasts`), by table: rankings, achievements, attendance
# (`attendance_sync` on a group's topic, `attendance_update` elsewhere), home tasks, feedback,
# students, enrollments, groups.
DomainEvent = Literal[
    "ranking_update",
    "ranking_celebration",
    "level_up_achievement",
    "achievement_earned",
    "attendance_sync",
    "attendance_update",
    "attendance_removed",
    "task_assigned",
    "ai_task_ready",
    "task_updated",
    "task_removed",
    "teacher_feedback",
    "student_status_change",
    "enrollment_change",
    "group_update",
]
# `eventType` of `POST /api/realtime/broadcast` (events/services.py EVENT_TYPES), sent under that name.
ApiEvent = Literal["ranking_update", "achievement_earned", "task_assignment", "attendance_sync", "teacher_message"]
# Notices (events/notices.py): family notices, deadline reminders; announcements under their kind.
NoticeEvent = Literal["family_notice", "deadline_reminder", Literal[tuple(ANNOUNCEMENT_KINDS)]]
# Made elsewhere: prayer reminders (culture/services.py, named by their payload's `type`), school
# alerts (harry_realtime/alerts.py), safety alerts (never held back: events/profiles.py), attendance
# marking notices (presence/attendance.py), batches (events/batching.py).
SystemEvent = Literal[
    "prayer_time_reminder",
    "system_alert",
    "safety_alert",
    "marking_in_progress",
    "marking_completed",
    "batch",
]
# A Python-stored event that names no broadcast is sent under its `realtime_events.event_type`.
StoredEventType = Literal[tuple(EVENT_TYPES)]
ServerEvent = Literal[DomainEvent, ApiEvent, NoticeEvent, SystemEvent, StoredEventType]
# `system` messages of the socket's own (connection profiles, held-back events) are not broadcasts;
# their extension names are reserved all the same, for apps that route messages by name.
SYSTEM_NOTICE_NAMES = frozenset({"profile", "held_back"})
SERVER_EVENTS: frozenset[str] = frozenset(get_args(ServerEvent)) | SYSTEM_NOTICE_NAMES


class BroadcastMessage(TypedDict):
    """A broadcast of the server's on `topic`. `meta` is `{"id": seq}` (plus `"replayed": True`)
    for a stored event, None for one that is not stored."""

    type: Literal["realtime.broadcast"]
    topic: str
    event: ServerEvent
    payload: Any
    meta: dict[str, Any] | None
    sender: None
    # Stored events only: who may receive it (FERPA audience or target user) and its priority.
    audience: NotRequired[dict[str, Any]]
    target_user_id: NotRequired[str | None]
    priority: NotRequired[str]
    # Set by the listener: when the event fell due (epoch seconds), for the delivery-latency KPI.
    due_ts: NotRequired[float]


class ChangeData(TypedDict):
    """A postgres_changes `data` object as the Supabase client reads it."""

    schema: str
    table: str
    type: Literal["INSERT", "UPDATE", "DELETE"]
    commit_timestamp: str
    columns: list[dict[str, str]]
    record: dict[str, Any] | None
    old_record: dict[str, Any] | None
    errors: None


class PostgresChangeMessage(TypedDict):
    """A captured row change for the sockets whose postgres_changes bindings match it."""

    type: Literal["realtime.postgres_change"]
    topic: str
    organization_id: str
    meta: dict[str, Any]
    audience: dict[str, Any]
    target_user_id: str | None
    priority: str
    data: ChangeData
    # In a listener batch, the broadcast of the same event on the same topic rides along: one
    # channel-layer message carries both frames of a change.
    broadcast: NotRequired[BroadcastMessage]
    # Set by the listener: when the event fell due (epoch seconds), for the delivery-latency KPI.
    due_ts: NotRequired[float]


class PresenceDiffMessage(TypedDict):
    """Presence joins and leaves on `topic`, shaped as Phoenix sends them (`{key: {metas}}`)."""

    type: Literal["realtime.presence_diff"]
    topic: str
    joins: dict[str, dict[str, list[dict[str, Any]]]]
    leaves: dict[str, dict[str, list[dict[str, Any]]]]


class BatchMessage(TypedDict):
    """The listener's messages for one topic from one batch, in seq order (one send per topic)."""

    type: Literal["realtime.batch"]
    topic: str
    messages: list[BroadcastMessage | PostgresChangeMessage]


class Sender(TypedDict):
    """Who sent a client broadcast, as the server knows them (never as the client says)."""

    user_id: str
    role: str


class ClientMeta(TypedDict):
    sender: Sender


class ClientBroadcastMessage(TypedDict):
    """A client's broadcast (socket or REST fallback) relayed on `topic`: never under a server
    event name, with server-set `meta.sender`. `sender` is the sending socket's channel name (it
    skips its own broadcast unless joined with `self`), None from the REST fallback."""

    type: Literal["realtime.broadcast"]
    topic: str
    event: str
    payload: Any
    meta: ClientMeta
    sender: str | None


ChannelMessage = BroadcastMessage | ClientBroadcastMessage | PostgresChangeMessage | PresenceDiffMessage | BatchMessage


def broadcast_message(*, topic: str, event: str, payload: Any, meta: dict[str, Any] | None = None) -> BroadcastMessage:
    return {"type": BROADCAST, "topic": topic, "event": event, "payload": payload, "meta": meta, "sender": None}


def client_broadcast_message(
    *, topic: str, event: str, payload: Any, user_id: Any, role: str, sender: str | None
) -> ClientBroadcastMessage:
    """The relayed form of a client broadcast already allowed by events/broadcast_policy.py."""
    meta: ClientMeta = {"sender": {"user_id": str(user_id), "role": str(role)}}
    return {"type": BROADCAST, "topic": topic, "event": event, "payload": payload, "meta": meta, "sender": sender}


def stored_broadcast_message(
    *,
    topic: str,
    event: str,
    payload: Any,
    meta: dict[str, Any],
    audience: dict[str, Any],
    target_user_id: str | None,
    priority: str,
) -> BroadcastMessage:
    return {
        "type": BROADCAST,
        "topic": topic,
        "event": event,
        "payload": payload,
        "meta": meta,
        "sender": None,
        "audience": audience,
        "target_user_id": target_user_id,
        "priority": priority,
    }


def postgres_change_message(
    *,
    topic: str,
    organization_id: str,
    meta: dict[str, Any],
    audience: dict[str, Any],
    target_user_id: str | None,
    priority: str,
    data: ChangeData,
) -> PostgresChangeMessage:
    return {
        "type": POSTGRES_CHANGE,
        "topic": topic,
        "organization_id": organization_id,
        "meta": meta,
        "audience": audience,
        "target_user_id": target_user_id,
        "priority": priority,
        "data": data,
    }


def presence_diff_message(
    *, topic: str, joins: dict[str, dict[str, list[dict[str, Any]]]], leaves: dict[str, dict[str, list[dict[str, Any]]]]
) -> PresenceDiffMessage:
    return {"type": PRESENCE_DIFF, "topic": topic, "joins": joins, "leaves": leaves}


def batch_message(*, topic: str, messages: list[BroadcastMessage | PostgresChangeMessage]) -> BatchMessage:
    return {"type": BATCH, "topic": topic, "messages": messages}


_COLUMN_TYPES: dict[str, list[dict]] = {}


def column_types(table: str) -> list[dict]:
    """`[{name, type}]` as postgres_changes sends them (udt names: int8, bool, uuid, jsonb...)."""
    if table not in _COLUMN_TYPES:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT column_name, udt_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
                [table],
            )
            _COLUMN_TYPES[table] = [{"name": name, "type": udt} for name, udt in cursor.fetchall()]
    return _COLUMN_TYPES[table]


def messages_for(
    event: RealtimeEvent, *, topic: str | None = None, replayed: bool = False
) -> list[tuple[str, BroadcastMessage | PostgresChangeMessage]]:
    """(topic, channel-layer message) pairs for a stored event, optionally for one topic only."""
    meta = {"id": event.seq, "replayed": True} if replayed else {"id": event.seq}
    metadata = event.event_metadata or {}
    target = str(event.target_user_id) if event.target_user_id else None
    audience = metadata.get("audience") or {}
    if not audience and target and event.broadcast_scope == "individual" and not metadata.get("topics"):
        # Stored from Python for one user (e.g. a prayer reminder): only that user may receive it.
        audience = {"target_user_id": target}
    out: list[tuple[str, BroadcastMessage | PostgresChangeMessage]] = []
    for name, event_name, payload in domain.broadcasts(event):
        if topic is None or name == topic:
            message = stored_broadcast_message(
                topic=name,
                event=event_name,
                payload=payload,
                meta=meta,
                audience=audience,
                target_user_id=target,
                priority=event.priority,
            )
            out.append((name, message))
    change = metadata.get("change")
    if change:
        data: ChangeData = {
            "schema": change["schema"],
            "table": change["table"],
            "type": change["type"],
            "commit_timestamp": change["commit_timestamp"],
            "columns": column_types(change["table"]),
            "record": change["record"],
            "old_record": change["old_record"],
            "errors": None,
        }
        for name in metadata.get("topics", []):
            if topic is None or name == topic:
                message = postgres_change_message(
                    topic=name,
                    organization_id=str(event.organization_id),
                    meta=meta,
                    audience=audience,
                    target_user_id=target,
                    priority=event.priority,
                    data=data,
                )
                out.append((name, message))
    return out
