"""Retention: rows that have served their purpose are deleted by a beat job
(`harry_realtime.purge_retained_data`, every `RETENTION_INTERVAL_SECONDS`), after configurable
periods, in batches of `RETENTION_BATCH_SIZE` rows, each batch its own short transaction.

- `push_notifications` (with their `push_deliveries`): final (sent, delivered, failed, expired)
  and past `expires_at` by more than `RETENTION_PUSH_DAYS` (30);
- `realtime_events`: delivered or expired, unchanged for `RETENTION_EVENTS_DAYS` (30), and no
  push points at them (so pushes go first);
- `sync_changes`: written more than `RETENTION_SYNC_CHANGES_DAYS` (30) ago;
- `realtime_presence`: offline and last seen more than `RETENTION_PRESENCE_HOURS` (24) ago.

The listener is never locked out: only processed events are candidates, candidates are taken
with `FOR UPDATE SKIP LOCKED` (rows another transaction holds are left for the next run), and a
batch holds its locks only for its own few milliseconds. A run stops after
`RETENTION_MAX_BATCHES` batches per table, so one run stays short after a long pause.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from harry_realtime.tenancy import dangerously_platform_context

_PUSHES = """
    WITH doomed AS (
        SELECT id FROM push_notifications
         WHERE delivery_status IN ('sent', 'delivered', 'failed', 'expired') AND expires_at < %(cutoff)s
         ORDER BY expires_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ), deliveries AS (
        DELETE FROM push_deliveries WHERE notification_id IN (SELECT id FROM doomed)
    )
    DELETE FROM push_notifications WHERE id IN (SELECT id FROM doomed)
"""
# Prayer reminders keep their idempotency row; only their link to the event goes.
_EVENTS = """
    WITH doomed AS (
        SELECT e.id FROM realtime_events e
         WHERE e.delivery_status IN ('delivered', 'expired') AND e.processed_at IS NOT NULL
           AND e.updated_at < %(cutoff)s
           AND NOT EXISTS (SELECT 1 FROM push_notifications p WHERE p.realtime_event_id = e.id)
         ORDER BY e.seq LIMIT %(limit)s FOR UPDATE OF e SKIP LOCKED
    ), unlinked AS (
        UPDATE culture_prayer_reminders SET event_id = NULL WHERE event_id IN (SELECT id FROM doomed)
    )
    DELETE FROM realtime_events WHERE id IN (SELECT id FROM doomed)
"""
_SYNC_CHANGES = """
    DELETE FROM sync_changes WHERE seq IN (
        SELECT seq FROM sync_changes WHERE changed_at < %(cutoff)s
         ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
"""
_PRESENCE = """
    DELETE FROM realtime_presence WHERE id IN (
        SELECT id FROM realtime_presence WHERE status = 'offline' AND last_seen < %(cutoff)s
         LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
"""


@dataclass(frozen=True)
class Rule:
    name: str
    sql: str
    keep: timedelta


def rules() -> list[Rule]:
    """Pushes first: an event stays while a push points at it."""
    return [
        Rule("push_notifications", _PUSHES, timedelta(days=settings.RETENTION_PUSH_DAYS)),
        Rule("realtime_events", _EVENTS, timedelta(days=settings.RETENTION_EVENTS_DAYS)),
        Rule("sync_changes", _SYNC_CHANGES, timedelta(days=settings.RETENTION_SYNC_CHANGES_DAYS)),
        Rule("realtime_presence", _PRESENCE, timedelta(hours=settings.RETENTION_PRESENCE_HOURS)),
    ]


def _batch(rule: Rule, cutoff: datetime, limit: int) -> int:
    with dangerously_platform_context(), connection.cursor() as cursor:
        cursor.execute(rule.sql, {"cutoff": cutoff, "limit": limit})
        return cursor.rowcount


def retained_data_purge(*, now: datetime | None = None) -> dict[str, int]:
    """Delete what each rule no longer keeps; returns rows deleted per table. Call outside any
    transaction (each batch commits on its own)."""
    now = now or timezone.now()
    size, most = settings.RETENTION_BATCH_SIZE, settings.RETENTION_MAX_BATCHES
    deleted: dict[str, int] = {}
    for rule in rules():
        total = 0
        for _ in range(most):
            count = _batch(rule, now - rule.keep, size)
            total += count
            if count < size:
                break
        deleted[rule.name] = total
    return deleted
