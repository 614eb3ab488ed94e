"""Beat jobs: expiry, and the hand-over of undelivered individual events to push."""

from datetime import timedelta

import pytest
from django.utils import timezone

from events import tasks
from events.models import RealtimeEvent
from harry_realtime.tenancy import dangerously_platform_context
from notifications.models import PushNotification
from school.models import StudentRanking

pytestmark = pytest.mark.django_db


def test_expire_marks_only_past_undelivered_events(schools):
    with dangerously_platform_context():
        past = RealtimeEvent.objects.filter(source_table="attendance").first()
        RealtimeEvent.objects.filter(pk=past.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        delivered = RealtimeEvent.objects.filter(source_table="groups").first()
        RealtimeEvent.objects.filter(pk=delivered.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1), delivery_status="delivered"
        )
    assert tasks.expire_events() >= 1
    with dangerously_platform_context():
        assert RealtimeEvent.objects.get(pk=past.pk).delivery_status == "expired"
        assert RealtimeEvent.objects.get(pk=delivered.pk).delivery_status == "delivered"


def test_undelivered_individual_event_becomes_a_push_once(schools, as_user, settings):
    a = schools.a
    settings.REALTIME_PUSH_GRACE_SECONDS = 0
    with as_user(a.teacher_user):
        StudentRanking.objects.filter(pk=a.ranking.pk).update(current_rank=1)
    with dangerously_platform_context():
        event = RealtimeEvent.objects.filter(source_table="student_rankings").order_by("-seq").first()
        RealtimeEvent.objects.filter(processed_at__isnull=True).update(
            processed_at=timezone.now() - timedelta(seconds=5)
        )
    assert tasks.hand_undelivered_to_push() >= 1
    assert tasks.hand_undelivered_to_push() == 0  # idempotent
    with dangerously_platform_context():
        pushes = PushNotification.objects.filter(realtime_event=event)
        assert pushes.filter(target_user=a.student_user, delivery_status="pending").count() == 1
        assert "push_notification" in RealtimeEvent.objects.get(pk=event.pk).delivery_method
        # The push row's own capture event is never handed back to push.
        own = RealtimeEvent.objects.filter(source_table="push_notifications", source_record_id__in=pushes.values("pk"))
        assert own.exists() and not own.filter(event_metadata__has_key="push_handoff_at").exists()


def test_event_a_live_socket_took_gets_no_push_for_its_target(schools, as_user, settings):
    a = schools.a
    settings.REALTIME_PUSH_GRACE_SECONDS = 0
    with as_user(a.teacher_user):
        StudentRanking.objects.filter(pk=a.ranking.pk).update(current_rank=4)
    with dangerously_platform_context():
        event = RealtimeEvent.objects.filter(source_table="student_rankings").order_by("-seq").first()
        RealtimeEvent.objects.filter(pk=event.pk).update(
            processed_at=timezone.now() - timedelta(seconds=5), delivery_status="sent"
        )
    tasks.hand_undelivered_to_push()
    with dangerously_platform_context():
        assert not PushNotification.objects.filter(realtime_event=event, target_user=a.student_user).exists()
