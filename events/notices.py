"""Notices: events made in Python for one person each — family notices (events/family.py),
deadline reminders (events/reminders.py) and announcements (events/announcements.py).

A notice is an individual `realtime_events` row targeted at its recipient, on a topic the
recipient joins, so everything the pipeline does for individual events applies: live delivery to
that person only (`audience.target_user_id`), `pending -> sent` when a socket of theirs takes it,
`delivery_ack`, replay and poll, and the hand-off to push when no socket took it
(`events.hand_undelivered_to_push`). Its texts travel with it in every language
(`payload.translations`), rendered into the recipient's `language_preference` in `title` and
`message`; the push copies them.

`event_metadata.notice_key` names what the notice is about ("attendance:<student>:<date>:absent");
a unique index on (target_user_id, notice_key) makes each person get it once, however often a
producer runs or retries.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models.fields.json import KT
from django.utils import timezone

from events.models import RealtimeEvent

# Push notification type (push_notifications.notification_type) of each notice kind.
PUSH_TYPES = {
    "family_attendance": "attendance_reminder",
    "family_attendance_correction": "attendance_reminder",
    "family_task": "task_assigned",
    "family_achievement": "achievement_earned",
    "family_ranking": "ranking_update",
    "deadline_reminder": "task_assigned",
    "system_announcement": "system_alert",
    "emergency_alert": "system_alert",
}

# Kinds whose push is never held for prayer: a child's whereabouts, and emergencies.
NEVER_HELD = frozenset({"family_attendance", "family_attendance_correction", "emergency_alert"})


@dataclass(frozen=True)
class Notice:
    organization_id: Any
    recipient_id: Any
    recipient_role: str
    language: str
    topic: str
    event: str  # the broadcast event name the socket receives
    kind: str  # a key of PUSH_TYPES
    notice_key: str
    event_type: str
    event_category: str
    priority: str
    payload: dict
    texts: Mapping[str, Mapping[str, str]]  # {"title": {lang: text}, "message": {lang: text}}
    audience: Mapping[str, Any] = field(default_factory=dict)
    source_record_id: Any = None
    created_by_id: Any = None
    expires_in: timedelta = timedelta(days=7)


def in_language(texts: Mapping[str, str], language: str) -> str:
    return texts.get(language) or texts.get("en") or next(iter(texts.values()), "")


def _row(notice: Notice, now: datetime) -> RealtimeEvent:
    title, message = notice.texts["title"], notice.texts["message"]
    payload = {
        **notice.payload,
        "type": notice.event,
        "kind": notice.kind,
        "title": in_language(title, notice.language),
        "message": in_language(message, notice.language),
        "language": notice.language,
        "translations": {"title": dict(title), "message": dict(message)},
    }
    return RealtimeEvent(
        id=uuid.uuid4(),
        organization_id=notice.organization_id,
        event_type=notice.event_type,
        event_category=notice.event_category,
        priority=notice.priority,
        event_payload=payload,
        event_metadata={
            "topics": [notice.topic],
            "event": notice.event,
            "notice_key": notice.notice_key,
            "notice_kind": notice.kind,
            "audience": {**notice.audience, "target_user_id": str(notice.recipient_id)},
        },
        target_user_id=notice.recipient_id,
        target_user_type=notice.recipient_role,
        broadcast_scope="individual",
        language_preference=notice.language,
        source_record_id=notice.source_record_id,
        created_by_id=notice.created_by_id,
        scheduled_for=now,
        expires_at=now + notice.expires_in,
    )


def notices_store(notices: Iterable[Notice]) -> list[RealtimeEvent]:
    """Store the notices not stored before (per recipient and `notice_key`); returns the new rows.

    Runs in the caller's context (the listener's or a job's platform context, or an admin's)."""
    now = timezone.now()
    rows = [_row(n, now) for n in notices]
    if not rows:
        return []
    RealtimeEvent.objects.bulk_create(rows, ignore_conflicts=True)
    # Read back: the rows skipped as already stored are absent, and each new one has its seq.
    return list(RealtimeEvent.objects.filter(pk__in=[r.pk for r in rows]).order_by("seq"))


def notice_keys_sent(*, recipient_ids: Iterable[Any], keys: Iterable[str]) -> set[tuple[str, str]]:
    """(recipient id, notice_key) pairs already stored, among these."""
    recipient_ids, keys = [str(r) for r in recipient_ids], list(keys)
    if not recipient_ids or not keys:
        return set()
    # The same expressions as the unique index, so this is an index look-up.
    rows = (
        RealtimeEvent.objects.filter(event_metadata__has_key="notice_key", target_user_id__in=recipient_ids)
        .annotate(notice_key=KT("event_metadata__notice_key"))
        .filter(notice_key__in=keys)
        .values_list("target_user_id", "notice_key")
    )
    return {(str(user), key) for user, key in rows}
