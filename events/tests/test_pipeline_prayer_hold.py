"""Non-critical socket deliveries wait out the school's prayer window; critical ones and live data don't."""

from datetime import date, datetime, timedelta

import pytest

from culture.delivery import organization_prayer_status
from culture.prayer import compute_timetable
from culture.selectors import location_of, method_for
from events import selectors
from events.models import RealtimeEvent
from events.prayer_hold import events_hold_for_prayer
from events.services import broadcast_event_create
from harry_realtime.tenancy import dangerously_platform_context

pytestmark = pytest.mark.django_db

DAY = date.today() + timedelta(days=30)  # in the future, so a held event is not yet due


@pytest.fixture
def prayer_hold(settings):
    settings.REALTIME_PRAYER_HOLD = True


def dhuhr_window(org) -> tuple[datetime, datetime]:
    """A moment inside the school's dhuhr window, and the window's end."""
    dhuhr = compute_timetable(DAY, location_of(org), method_for(org))["dhuhr"]
    at = dhuhr + timedelta(minutes=5)
    status = organization_prayer_status(org, at)
    assert status.status == "in_prayer" and status.current_prayer == "dhuhr"
    return at, status.window_ends_at


def event(school, event_type: str, priority: str = "medium", **fields) -> RealtimeEvent:
    return RealtimeEvent.objects.create(
        organization=school.org,
        event_type=event_type,
        event_category="educational",
        priority=priority,
        event_payload={},
        target_user=school.student_user,
        **fields,
    )


def test_listener_holds_non_critical_events_until_the_window_ends(schools, prayer_hold):
    a, b = schools.a, schools.b
    with dangerously_platform_context():
        RealtimeEvent.objects.filter(processed_at__isnull=True).update(processed_at="2000-01-01T00:00:00Z")
        at, window_end = dhuhr_window(a.org)
        task = event(a, "task_assignment")
        later_task = event(a, "achievement_earned", priority="high")
        attendance = event(a, "attendance_sync")
        alert = event(a, "system_announcement", priority="critical")
        opted_out = event(a, "task_assignment", cultural_context={"prayerTimeAware": False})
        batch = [task, later_task, attendance, alert, opted_out]

        held = events_hold_for_prayer(batch, at=at)

        assert held == {task.seq, later_task.seq}
        due = [e.seq for e in selectors.unprocessed_events(limit=100)]
        assert due == [attendance.seq, alert.seq, opted_out.seq]
        assert selectors.next_scheduled_at() == window_end
        released = RealtimeEvent.objects.filter(scheduled_for=window_end, processed_at__isnull=True).order_by("seq")
        assert [e.seq for e in released] == [task.seq, later_task.seq]  # released together, in their order

        before_prayer = events_hold_for_prayer([event(b, "task_assignment")], at=at - timedelta(hours=1))
        assert before_prayer == set()


def test_nothing_is_held_when_the_hold_is_off(schools, settings):
    settings.REALTIME_PRAYER_HOLD = False
    with dangerously_platform_context():
        at, _ = dhuhr_window(schools.a.org)
        assert events_hold_for_prayer([event(schools.a, "task_assignment")], at=at) == set()


def broadcast(school, priority: str, at: datetime, prayer_time_aware: bool = True) -> RealtimeEvent:
    (stored,) = broadcast_event_create(
        sender=school.teacher_user,
        event_type="task_assignment",
        target_scope="individual",
        target_ids=[str(school.student_user.pk)],
        payload={"title": {"en": "Homework"}, "content": {"en": "Read p. 5"}},
        priority=priority,
        cultural={"prayerTimeAware": prayer_time_aware},
        now=at,
    )
    return stored


def test_broadcast_api_event_sent_during_prayer_waits_for_the_listener(
    schools, prayer_hold, as_user, django_capture_on_commit_callbacks
):
    a = schools.a
    at, window_end = dhuhr_window(a.org)
    with as_user(a.teacher_user), django_capture_on_commit_callbacks() as fan_outs:
        held = broadcast(a, "medium", at)
        critical = broadcast(a, "critical", at)
        opted_out = broadcast(a, "medium", at, prayer_time_aware=False)
    assert (held.scheduled_for, held.processed_at, held.delivery_status) == (window_end, None, "pending")
    assert critical.processed_at is not None and critical.delivery_status == "sent"
    assert opted_out.processed_at is not None
    assert len(fan_outs) == 2  # the critical and the opted-out event went out at once
