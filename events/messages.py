"""Message building: a stored realtime_events row becomes channel-layer messages.

Message contract with the socket consumer (events/consumers.py):
- `{"type": "realtime.broadcast", "topic", "event", "payload", "meta": {"id": seq}, "sender": None,
  "audience", "target_user_id"}` to `group_name(topic)`;
- `{"type": "realtime.postgres_change", "topic", "organization_id", "meta": {"id": seq}, "audience",
  "target_user_id", "data": {schema, table, type, commit_timestamp, columns, record, old_record,
  errors}}` to the same groups. The consumer turns them into socket frames for one recipient with
  `broadcast_for_recipient` / `postgres_change_for_recipient`, which apply the row rules and FERPA.
"""

from __future__ import annotations

from django.db import connection

from events import domain
from events.models import RealtimeEvent

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


def messages_for(event: RealtimeEvent, *, topic: str | None = None, replayed: bool = False) -> list[tuple[str, dict]]:
    """(topic, channel-layer message) pairs for a stored event, optionally for one topic only."""
    meta = {"id": event.seq, "replayed": True} if replayed else {"id": event.seq}
    metadata = event.event_metadata or {}
    target = str(event.target_user_id) if event.target_user_id else None
    audience = metadata.get("audience") or {}
    if not audience and target and event.broadcast_scope == "individual" and not metadata.get("topics"):
        # Stored from Python for one user (e.g. a prayer reminder): only that user may receive it.
        audience = {"target_user_id": target}
    out: list[tuple[str, dict]] = []
    for name, event_name, payload in domain.broadcasts(event):
        if topic is None or name == topic:
            out.append(
                (
                    name,
                    {
                        "type": "realtime.broadcast",
                        "topic": name,
                        "event": event_name,
                        "payload": payload,
                        "meta": meta,
                        "sender": None,
                        "audience": audience,
                        "target_user_id": target,
                        "priority": event.priority,
                    },
                )
            )
    change = metadata.get("change")
    if change:
        data = {
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
                out.append(
                    (
                        name,
                        {
                            "type": "realtime.postgres_change",
                            "topic": name,
                            "organization_id": str(event.organization_id),
                            "meta": meta,
                            "audience": audience,
                            "target_user_id": target,
                            "priority": event.priority,
                            "data": data,
                        },
                    )
                )
    return out
