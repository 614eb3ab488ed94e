"""The delivery state of a realtime_events row: pending -> sent -> delivered (or failed, expired)."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from events.models import RealtimeEvent


def events_mark_fanned_out(seqs: list[int]) -> None:
    """Before the listener hands these events to the channel layer: from now on replay and
    catch-up read them (a socket joining meanwhile may miss them live). Listener's platform context."""
    with connection.cursor() as cursor:
        cursor.execute(_MARK_FANNED_OUT_SQL, [timezone.now(), list(seqs)])


_MARK_FANNED_OUT_SQL = f"UPDATE {RealtimeEvent._meta.db_table} SET fanout_at = %s WHERE seq = ANY(%s)"


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


def events_expire() -> int:
    """Platform context: undelivered events past `expires_at` become expired."""
    return RealtimeEvent.objects.filter(delivery_status__in=["pending", "sent"], expires_at__lt=timezone.now()).update(
        delivery_status="expired"
    )
