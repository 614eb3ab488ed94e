"""The outbox: a stored realtime_events row becomes channel-layer messages, and its delivery
state moves pending -> sent -> delivered (or expired).

Message contract with the socket consumer (events/consumers.py):
- `{"type": "realtime.broadcast", "topic", "event", "payload", "meta": {"id": seq}, "sender": None,
  "audience", "target_user_id"}` to `group_name(topic)`;
- `{"type": "realtime.postgres_change", "topic", "organization_id", "meta": {"id": seq}, "audience",
  "target_user_id", "data": {schema, table, type, commit_timestamp, columns, record, old_record,
  errors}}` to the same groups. The consumer turns them into socket frames for one recipient with
  `broadcast_for_recipient` / `postgres_change_for_recipient`, which apply the row rules and FERPA.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from events import domain, ferpa
from events.bindings import Binding
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


# The access level of a broadcast that carries no audience: not about a student, sent as stored.
UNFILTERED = "unfiltered"


def broadcast_access(message: dict, *, user_id: Any, role: str) -> str | None:
    """The FERPA access level at which this user gets the broadcast, or None when it is not theirs."""
    audience = message.get("audience")
    if not ferpa.may_receive(user_id, role, audience, message["payload"]):
        return None
    return ferpa.access_level(user_id, audience) if audience else UNFILTERED


def broadcast_body(message: dict, level: str) -> dict:
    """The socket payload `{type:'broadcast', event, payload, meta}` at an access level."""
    payload = message["payload"] if level == UNFILTERED else ferpa.filter_payload(message["payload"], level)
    return {"type": "broadcast", "event": message["event"], "payload": payload, "meta": message["meta"]}


def broadcast_for_recipient(message: dict, *, user_id: Any, role: str) -> dict | None:
    """The socket payload for one user, or None."""
    level = broadcast_access(message, user_id=user_id, role=role)
    return None if level is None else broadcast_body(message, level)


def postgres_change_access(
    message: dict, *, user_id: Any, role: str, organization_id: Any, bindings: list[Binding]
) -> tuple[list[int], str] | None:
    """(ids of the join's matching bindings, FERPA access level), or None when no binding matches
    or the row is not theirs to see (another school, a notification for someone else). Bindings
    filter on the new row, or the old one for DELETE."""
    if str(message["organization_id"]) != str(organization_id):
        return None
    data = message["data"]
    if not ferpa.may_receive(user_id, role, message.get("audience"), data["record"] or data["old_record"]):
        return None
    row = data["old_record"] if data["type"] == "DELETE" else data["record"]
    ids = [b.id for b in bindings if b.matches(table=data["table"], change_type=data["type"], record=row)]
    if not ids:
        return None
    return ids, ferpa.access_level(user_id, message.get("audience"))


def postgres_change_body(message: dict, ids: list[int], data: dict) -> dict:
    """The socket payload `{ids, data, meta}`, with `data` as filtered for the recipient."""
    return {"ids": ids, "data": data, "meta": message["meta"]}


def postgres_change_for_recipient(
    message: dict, *, user_id: Any, role: str, organization_id: Any, bindings: list[Binding]
) -> dict | None:
    """The socket payload for one user's join, or None."""
    access = postgres_change_access(
        message, user_id=user_id, role=role, organization_id=organization_id, bindings=bindings
    )
    if access is None:
        return None
    ids, level = access
    return postgres_change_body(message, ids, ferpa.filter_change(message["data"], level))


# Delivery tracking ---------------------------------------------------------------------------


def events_mark_processed(seqs: list[int]) -> None:
    """After fan-out: group-wide events count as sent; individual ones wait for their user's socket.

    Runs in the listener's platform context.
    """
    # Raw SQL: the listener runs this after every batch, and building the ORM query cost more CPU
    # than running it.
    with connection.cursor() as cursor:
        cursor.execute(_MARK_PROCESSED_SQL, [timezone.now(), list(seqs)])


_MARK_PROCESSED_SQL = f"""
    UPDATE {RealtimeEvent._meta.db_table} SET
        processed_at = %s,
        delivery_attempts = delivery_attempts + 1,
        delivery_status = CASE
            WHEN delivery_status = 'pending' AND broadcast_scope IS DISTINCT FROM 'individual' THEN 'sent'
            ELSE delivery_status
        END
    WHERE seq = ANY(%s)
"""


def events_mark_failed(seqs: list[int]) -> None:
    """Events the listener could not turn into messages: kept, visible to the admin, never retried."""
    RealtimeEvent.objects.filter(seq__in=seqs).update(processed_at=timezone.now(), delivery_status="failed")


def events_mark_sent(seqs: list[int]) -> int:
    """A live socket of the event's target user received it. Caller's tenant context (RLS)."""
    return RealtimeEvent.objects.filter(seq__in=seqs, delivery_status="pending").update(delivery_status="sent")


def events_mark_delivered(*, user_id: Any, seqs: list[int]) -> int:
    """The client acknowledged these events (`delivery_ack`). Only the target user's own
    acknowledgement, or any recipient's for events without a target, counts. Caller's tenant context."""
    return (
        RealtimeEvent.objects.filter(seq__in=seqs, delivery_status__in=["pending", "sent"])
        .filter(Q(target_user_id=user_id) | Q(target_user_id__isnull=True))
        .update(delivery_status="delivered")
    )


def _prayer_aware(cultural: dict | None) -> bool:
    """`cultural.prayerTimeAware: false` (the broadcast API's flag) opts an event out of holding."""
    return bool((cultural or {}).get("prayerTimeAware", True))


def prayer_release_at(
    *, organization: Any, priority: str, kind: str, cultural: dict | None, at: datetime
) -> datetime | None:
    """When the culture policy holds a delivery for the school's prayer window, the window's end.

    REALTIME_PRAYER_HOLD=false turns holding off for sockets (pushes have their own flag).
    """
    from culture.delivery import delivery_decision

    if not settings.REALTIME_PRAYER_HOLD or not _prayer_aware(cultural):
        return None
    deliver_now, release_at = delivery_decision(organization=organization, priority=priority, kind=kind, at=at)
    return None if deliver_now else release_at


def events_hold_for_prayer(events: list[RealtimeEvent], *, at: datetime) -> set[int]:
    """Platform context, the listener's: events the policy holds are re-scheduled for the end of
    their school's prayer window, when the listener sends them in seq order; returns their seqs.

    One prayer status per school per batch; critical events and live data changes never wait.
    """
    from culture.delivery import decide, may_be_held, organization_prayer_status

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


def events_expire() -> int:
    """Platform context: undelivered events past `expires_at` become expired."""
    return RealtimeEvent.objects.filter(delivery_status__in=["pending", "sent"], expires_at__lt=timezone.now()).update(
        delivery_status="expired"
    )


def events_hand_to_push(*, older_than: timedelta, limit: int = 500) -> int:
    """Platform context: each individual event, once its grace period has passed, goes to the
    notifications app: a push for its target user if no live socket took it (still pending), and
    the family notices the event requires either way. Events that came from push_notifications
    themselves are never handed back, or each would beget another."""
    from notifications.from_events import push_notification_create_for_event

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
    topic = f"notifications:org_{organization_id}:role_{role}"
    name = "emergency_alert" if emergency else "system_announcement"
    return event_publish(
        organization_id=organization_id,
        topics=[topic],
        event=name,
        payload={"type": name, "title": title, "body": body, "role": role},
        priority="critical" if emergency else "medium",
        created_by_id=created_by_id,
    )
