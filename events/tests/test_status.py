"""The listener's queue queries, written in SQL for speed: the same rules the ORM stated."""

from datetime import timedelta

import pytest
from django.utils import timezone

from events import selectors
from events.models import RealtimeEvent
from events.status import events_mark_processed
from harry_realtime.tenancy import dangerously_platform_context

pytestmark = pytest.mark.django_db


def _state(seq: int) -> tuple:
    event = RealtimeEvent.objects.get(seq=seq)
    return event.processed_at is not None, event.delivery_status, event.delivery_attempts


def test_mark_processed_sends_group_events_and_leaves_individual_ones_pending(schools):
    with dangerously_platform_context():
        group = RealtimeEvent.objects.filter(broadcast_scope="group").first()
        individual = RealtimeEvent.objects.filter(broadcast_scope="individual").first()
        delivered = RealtimeEvent.objects.filter(broadcast_scope="group").exclude(pk=group.pk).first()
        untouched = RealtimeEvent.objects.exclude(pk__in=[group.pk, individual.pk, delivered.pk]).first()
        RealtimeEvent.objects.filter(pk=delivered.pk).update(delivery_status="delivered")
        RealtimeEvent.objects.filter(pk=untouched.pk).update(processed_at=None)

        events_mark_processed([group.seq, individual.seq, delivered.seq])

        assert _state(group.seq) == (True, "sent", 1)
        assert _state(individual.seq) == (True, "pending", 1)
        assert _state(delivered.seq) == (True, "delivered", 1)
        assert _state(untouched.seq)[:2] == (False, untouched.delivery_status)


def test_unprocessed_events_are_due_undeleted_and_in_seq_order(schools):
    with dangerously_platform_context():
        seqs = list(RealtimeEvent.objects.order_by("seq").values_list("seq", flat=True)[:4])
        RealtimeEvent.objects.update(processed_at=timezone.now())
        RealtimeEvent.objects.filter(seq__in=seqs).update(processed_at=None)
        RealtimeEvent.objects.filter(seq=seqs[1]).update(scheduled_for=timezone.now() + timedelta(minutes=5))
        RealtimeEvent.objects.filter(seq=seqs[2]).update(deleted_at=timezone.now())

        due = selectors.unprocessed_events(limit=10)

        assert [e.seq for e in due] == [seqs[0], seqs[3]]
        assert isinstance(due[0], RealtimeEvent) and isinstance(due[0].event_metadata, dict)
        assert [e.seq for e in selectors.unprocessed_events(limit=1)] == [seqs[0]]
