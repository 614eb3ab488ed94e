"""The channel-layer messages that travel to the sockets, typed, and the outbox's message building.

Every message a RealtimeSocket (events/consumers.py) receives through its topic groups is one of
the TypedDicts below, sent to `events.topics.group_name(topic)`; build them with the
constructors here. The consumer turns broadcasts and changes into socket frames for one recipient
with `events.recipients` (row rules and FERPA). `messages_for` builds a stored realtime_events
row's messages (the listener, replay, the poll fallback); `events/tests/test_messages.py` checks
every producer against these types.

Which broadcasts are stored, so replay and the poll find them: every outbox event (change capture,
the broadcast API, announcements, reminders; `meta.id` is its seq). Not stored, by design, with
`meta` None: client broadcasts (socket and REST fallback), which are ephemeral in the Supabase
protocol too, and attendance-marking notices (presence/attendance.py), which describe a claim
that lapses within seconds; the marks themselves are attendance rows and reach sockets as
stored events.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from django.db import connection

from events import domain
from events.models import RealtimeEvent

BROADCAST = "realtime.broadcast"
POSTGRES_CHANGE = "realtime.postgres_change"
PRESENCE_DIFF = "realtime.presence_diff"
BATCH = "realtime.batch"


class BroadcastMessage(TypedDict):
    """A broadcast on `topic`. `meta` is `{"id": seq}` (plus `"replayed": True`) for a stored
    event, None for one that is not stored; `sender` is the sending socket's channel name (it
    skips its own broadcast unless joined with `self`)."""

    type: Literal["realtime.broadcast"]
    topic: str
    event: str
    payload: Any
    meta: dict[str, Any] | None
    sender: str | None
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


ChannelMessage = BroadcastMessage | PostgresChangeMessage | PresenceDiffMessage | BatchMessage


def broadcast_message(
    *, topic: str, event: str, payload: Any, meta: dict[str, Any] | None = None, sender: str | None = None
) -> BroadcastMessage:
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
