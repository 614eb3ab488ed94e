"""Reads of the outbox: the listener's queue, join-time replay and the poll fallback."""

from __future__ import annotations

import json
from datetime import datetime

from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from events.models import RealtimeEvent
from events.topics import topics_for_user
from school.models import Role, User

# Stored events read per query while a join replays (the replay goes on page after page).
REPLAY_PAGE = 500
POLL_MAX = 500


def stable_seq() -> int:
    """The highest seq at or below which no transaction can still commit an event.

    `seq` is taken at insert but transactions commit in any order; a cursor past this horizon
    could skip an event that commits later (see migration 0004).
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT realtime_stable_seq()")
        return cursor.fetchone()[0]


def unprocessed_events(*, limit: int) -> list[RealtimeEvent]:
    """The listener's work: committed, due, not yet fanned out, in seq order. Platform context.

    Not a `seq > cursor` scan: an event that commits after a higher seq was processed is still
    unprocessed here, so out-of-order commits are never skipped.
    """
    # Raw SQL: the listener runs this on every wake-up, and building the ORM query cost more CPU
    # than running it.
    return list(RealtimeEvent.objects.raw(_UNPROCESSED_SQL, [timezone.now(), limit]))


_UNPROCESSED_SQL = (
    f"SELECT * FROM {RealtimeEvent._meta.db_table}"
    " WHERE processed_at IS NULL AND deleted_at IS NULL AND scheduled_for <= %s ORDER BY seq LIMIT %s"
)


def next_scheduled_at() -> datetime | None:
    """When the earliest future-scheduled unprocessed event falls due. Platform context."""
    return (
        RealtimeEvent.objects.filter(
            processed_at__isnull=True, deleted_at__isnull=True, scheduled_for__gt=timezone.now()
        )
        .order_by("scheduled_for")
        .values_list("scheduled_for", flat=True)
        .first()
    )


def visible_events(user: User) -> QuerySet[RealtimeEvent]:
    """Events this user may read: row-level security decides the organization and the audience;
    non-admins additionally see only events on topics they may join, addressed to them, or about
    a student whose self, family or educator they are."""
    qs = RealtimeEvent.objects.filter(deleted_at__isnull=True)
    if user.role == Role.ADMIN:
        return qs
    uid = str(user.pk)
    return qs.filter(
        Q(event_metadata__topics__has_any_keys=topics_for_user(user))
        | Q(target_user_id=user.pk)
        | Q(event_metadata__audience__student_user_id=uid)
        | Q(event_metadata__audience__family_user_ids__contains=[uid])
        | Q(event_metadata__audience__educator_user_ids__contains=[uid])
    )


def poll_events(
    user: User, *, since: int, limit: int, priorities: list[str] | None = None
) -> tuple[list[RealtimeEvent], int]:
    """Events after the cursor `since` in seq order, and the next cursor. Tenant context.

    The result stops at the stable horizon so that a late commit is never jumped over.
    """
    horizon = stable_seq()
    qs = visible_events(user).filter(seq__gt=since, seq__lte=horizon)
    if priorities:
        qs = qs.filter(priority__in=priorities)
    rows = list(qs.order_by("seq")[:limit])
    if len(rows) == limit:
        return rows, rows[-1].seq
    return rows, max(since, horizon)


def topic_events(*, topic: str, after_id: int | None, since: datetime | None, limit: int) -> list[RealtimeEvent]:
    """The oldest `limit` fanned-out events of one topic after a seq and/or since a time, oldest
    first: one page of a join's replay, or of a socket catching up after Redis lost its groups.

    Only fanned-out events: the reading socket is in the topic's group already, so any other one
    reaches it live (a read ahead of the listener would be delivered again live to the client's
    next socket). The caller has authorized the topic already; RLS applies, the socket filters per
    recipient. Tenant context.
    """
    qs = RealtimeEvent.objects.filter(
        deleted_at__isnull=True, fanout_at__isnull=False, event_metadata__topics__contains=[topic]
    )
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if after_id is not None:
        qs = qs.filter(seq__gt=after_id)
    return list(qs.order_by("seq")[:limit])


def events_by_seq(seqs: list[int]) -> list[RealtimeEvent]:
    """Stored events by seq, oldest first (a socket catching up on what it held back). The socket
    already decided they are the user's; RLS still applies. Tenant context."""
    return list(RealtimeEvent.objects.filter(seq__in=seqs, deleted_at__isnull=True).order_by("seq"))


def student_audiences(student_ids: list[str]) -> dict[str, dict]:
    """Each student's FERPA audience (`student_user_id`, `family_user_ids`, `educator_user_ids`),
    by the SQL function the change-capture trigger stores with every event about a student, so
    the REST paths judge a reader exactly as socket delivery does (events/ferpa.py). Tenant
    context: a student of another school has no audience."""
    if not student_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s::text, realtime_student_audience(s) FROM unnest(%s::uuid[]) AS s",
            [sorted({str(s) for s in student_ids})],
        )
        rows = cursor.fetchall()
    # The app's connections leave json undecoded (Django's JSONField decodes it); decode it here.
    return {
        student: (json.loads(audience) if isinstance(audience, str) else audience) or {} for student, audience in rows
    }
