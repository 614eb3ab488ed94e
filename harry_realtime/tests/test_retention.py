"""Retention: finished rows are purged after their periods, in bounded batches; everything still
in use (unprocessed or undelivered events, events a push points at, live presence) stays."""

from datetime import date, timedelta

import pytest
from django.utils import timezone

from culture.models import PrayerReminder
from events.models import RealtimeEvent
from harry_realtime.retention import retained_data_purge
from harry_realtime.tasks import purge_retained_data
from harry_realtime.tenancy import dangerously_platform_context
from notifications.models import DeviceToken, PushDelivery, PushNotification
from presence.models import RealtimePresence
from syncqueue.models import SyncChange

pytestmark = pytest.mark.django_db

LATER = timedelta(days=31)  # past every default period


def event(school, **fields) -> RealtimeEvent:
    return RealtimeEvent.objects.create(
        organization=school.org,
        event_type="system_announcement",
        event_category="system",
        event_payload={},
        target_user=school.student_user,
        **fields,
    )


def push(school, event=None, **fields) -> PushNotification:
    return PushNotification.objects.create(
        organization=school.org,
        realtime_event=event,
        target_user=school.student_user,
        notification_type="system_alert",
        title_en="t",
        body_en="b",
        expires_at=timezone.now(),
        **fields,
    )


def presence(school, device: str, status: str) -> RealtimePresence:
    return RealtimePresence.objects.create(
        organization=school.org,
        user=school.student_user,
        user_type="student",
        user_name="s",
        device_id=device,
        status=status,
    )


def exists(model, pk) -> bool:
    return model.objects.filter(pk=pk).exists()


def test_finished_rows_go_rows_in_use_stay(schools):
    a = schools.a
    now = timezone.now()
    with dangerously_platform_context():
        delivered = event(a, delivery_status="delivered", processed_at=now)
        expired = event(a, delivery_status="expired", processed_at=now)
        pending = event(a, delivery_status="pending", processed_at=now)
        sent = event(a, delivery_status="sent", processed_at=now)
        unprocessed = event(a, delivery_status="delivered")
        still_pushed = event(a, delivery_status="delivered", processed_at=now)
        push_gone_first = event(a, delivery_status="delivered", processed_at=now)
        reminded = event(a, delivery_status="delivered", processed_at=now)
        reminder = PrayerReminder.objects.create(
            organization=a.org,
            user=a.student_user,
            prayer="asr",
            prayer_date=date.today(),
            prayer_at=now,
            event=reminded,
        )
        pending_push = push(a, still_pushed, delivery_status="pending")
        final_push = push(a, push_gone_first, delivery_status="sent")
        device = DeviceToken.objects.create(organization=a.org, user=a.student_user, platform="android", token="tok")
        delivery = PushDelivery.objects.create(
            organization=a.org, notification=final_push, device=device, status="sent"
        )
        offline = presence(a, "socket-1", "offline")
        online = presence(a, "socket-2", "online")
        changes_before = SyncChange.objects.count()
        events_before = RealtimeEvent.objects.count()
        assert changes_before > 0

        assert retained_data_purge(now=now) == {
            "push_notifications": 0,
            "realtime_events": 0,
            "sync_changes": 0,
            "realtime_presence": 0,
        }
        deleted = retained_data_purge(now=now + LATER)

        assert deleted["push_notifications"] == 1 and deleted["realtime_presence"] == 1
        assert deleted["sync_changes"] == changes_before and SyncChange.objects.count() == 0
        for gone in (delivered, expired, push_gone_first, reminded):
            assert not exists(RealtimeEvent, gone.pk)
        for kept in (pending, sent, unprocessed, still_pushed):
            assert exists(RealtimeEvent, kept.pk)
        assert not exists(PushNotification, final_push.pk) and not exists(PushDelivery, delivery.pk)
        assert exists(PushNotification, pending_push.pk)
        reminder.refresh_from_db()
        assert reminder.event_id is None  # the idempotency row stays, unlinked
        assert not exists(RealtimePresence, offline.pk) and exists(RealtimePresence, online.pk)
        # Deleting pushes is not captured as news (no new events beyond what was there).
        assert RealtimeEvent.objects.count() == events_before - deleted["realtime_events"]


def test_batches_are_bounded(schools, settings):
    settings.RETENTION_BATCH_SIZE = 2
    settings.RETENTION_MAX_BATCHES = 1
    now = timezone.now()
    with dangerously_platform_context():
        for _ in range(5):
            event(schools.a, delivery_status="delivered", processed_at=now)
    assert retained_data_purge(now=now + LATER)["realtime_events"] == 2
    assert retained_data_purge(now=now + LATER)["realtime_events"] == 2
    settings.RETENTION_MAX_BATCHES = 50
    assert retained_data_purge(now=now + LATER)["realtime_events"] >= 1
    with dangerously_platform_context():
        assert not RealtimeEvent.objects.filter(delivery_status="delivered", processed_at__isnull=False).exists()


def test_periods_are_settings_and_the_beat_task_runs_the_purge(schools, settings):
    settings.RETENTION_PRESENCE_HOURS = 0
    with dangerously_platform_context():
        row = presence(schools.a, "socket-x", "offline")
    result = purge_retained_data.apply().get()
    assert result["realtime_presence"] == 1
    with dangerously_platform_context():
        assert not exists(RealtimePresence, row.pk)
