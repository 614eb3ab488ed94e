"""Deadline reminders: tasks due within 24 h and within 1 h, not submitted, once per task, student
and threshold; on the student's tasks topic; held for prayer like other task events."""

from datetime import timedelta

import pytest
from django.utils import timezone

from events.messages import messages_for
from events.models import RealtimeEvent
from events.prayer_hold import events_hold_for_prayer
from events.reminders import deadline_reminders_send
from events.tasks import send_deadline_reminders
from harry_realtime.tenancy import dangerously_platform_context
from school.models import HomeTask, User

pytestmark = pytest.mark.django_db


def reminders(**filters) -> list[RealtimeEvent]:
    with dangerously_platform_context():
        return list(RealtimeEvent.objects.filter(event_metadata__event="deadline_reminder", **filters).order_by("seq"))


def task(school, due_in: timedelta | None, **fields) -> HomeTask:
    with dangerously_platform_context():
        due = timezone.now() + due_in if due_in is not None else None
        return HomeTask.objects.create(
            organization=school.org, student=school.student, teacher=school.teacher, due_date=due, **fields
        )


def send(now=None) -> int:
    with dangerously_platform_context():
        return deadline_reminders_send(now=now or timezone.now())


def test_a_task_due_tomorrow_is_reminded_once_then_again_in_its_last_hour(schools):
    a = schools.a
    essay = task(a, timedelta(hours=20), title="Essay on Navoi")
    assert send() == 1
    assert send() == 0  # once per threshold
    (first,) = reminders()
    assert first.target_user_id == a.student_user.pk and first.priority == "high"
    assert first.event_metadata["topics"] == [f"tasks:org_{a.org.pk}:student_{a.student.pk}"]
    body = first.event_payload
    assert (body["taskId"], body["threshold"], body["type"]) == (str(essay.pk), "24h", "deadline_reminder")
    assert "Essay on Navoi" in body["message"] and "24" in body["message"]
    [(topic, message)] = messages_for(first)
    assert message["event"] == "deadline_reminder" and message["audience"]["target_user_id"] == str(a.student_user.pk)

    assert send(now=timezone.now() + timedelta(hours=19, minutes=30)) == 1
    assert [r.event_payload["threshold"] for r in reminders()] == ["24h", "1h"]
    assert send(now=timezone.now() + timedelta(hours=19, minutes=45)) == 0


def test_only_open_tasks_due_soon_are_reminded(schools):
    a, b = schools.a, schools.b
    task(a, timedelta(minutes=30), title="Due in half an hour")
    task(a, timedelta(hours=30), title="Later")
    task(a, timedelta(hours=-1), title="Overdue")
    task(a, None, title="No date")
    task(a, timedelta(hours=2), title="Submitted", grading_status="submitted")
    task(a, timedelta(hours=2), title="Deleted", deleted_at=timezone.now())
    task(b, timedelta(hours=3), title="Other school")
    with dangerously_platform_context():
        User.objects.filter(pk=a.other_student_user.pk).update(is_active=False)
        HomeTask.objects.create(
            organization=a.org, student=a.other_student, due_date=timezone.now() + timedelta(hours=1, minutes=30)
        )
    assert send() == 2
    by_title = {r.event_payload["taskTitle"]: r for r in reminders()}
    assert set(by_title) == {"Due in half an hour", "Other school"}
    assert by_title["Due in half an hour"].event_payload["threshold"] == "1h"  # first seen in its last hour
    assert by_title["Other school"].organization_id == b.org.pk


def test_the_beat_task_sends_them_and_the_reminder_speaks_the_students_language(schools):
    a = schools.a
    with dangerously_platform_context():
        User.objects.filter(pk=a.student_user.pk).update(language="uz")
    task(a, timedelta(hours=5), title="Insho")
    assert send_deadline_reminders.apply().get() == 1
    (reminder,) = reminders()
    assert reminder.language_preference == "uz" and reminder.event_payload["language"] == "uz"
    assert reminder.event_payload["message"] == reminder.event_payload["translations"]["message"]["uz"]
    assert reminder.event_payload["message"] != reminder.event_payload["translations"]["message"]["en"]


def test_reminders_wait_out_the_prayer_window(schools, settings):
    from events.tests.test_pipeline_prayer_hold import dhuhr_window

    settings.REALTIME_PRAYER_HOLD = True
    task(schools.a, timedelta(hours=3))
    send()
    (reminder,) = reminders()
    with dangerously_platform_context():
        at, window_end = dhuhr_window(schools.a.org)
        assert events_hold_for_prayer([reminder], at=at) == {reminder.seq}
        reminder.refresh_from_db()
    assert reminder.scheduled_for == window_end
