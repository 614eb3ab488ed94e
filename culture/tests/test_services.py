"""Prayer reminders: who gets them, what they carry, exactly once per user, prayer and day."""

from datetime import datetime, timedelta

import pytest
from django.conf import settings

from culture.models import PrayerReminder
from culture.services import prayer_reminders_send
from events.models import RealtimeEvent, RealtimeSubscription
from harry_realtime.tenancy import dangerously_platform_context
from presence.models import RealtimePresence

pytestmark = pytest.mark.django_db

# 2026-03-13 (23 Ramadan 1447 in Uzbekistan), Tashkent: dhuhr at 12:38, asr at 16:41.
BEFORE_DHUHR = datetime.fromisoformat("2026-03-13T12:30:00+05:00")


def _online(user, *, status="online", expires_in=timedelta(hours=1), prayer_notifications=True, at=BEFORE_DHUHR):
    with dangerously_platform_context():
        RealtimePresence.objects.create(
            organization_id=user.organization_id,
            user=user,
            user_type=user.role,
            user_name=user.full_name,
            device_id=f"device-{user.pk}",
            status=status,
            expires_at=at + expires_in,
        )
        RealtimeSubscription.objects.create(
            organization_id=user.organization_id,
            user=user,
            user_type=user.role,
            device_id=f"device-{user.pk}",
            session_id="session",
            subscription_type="notifications",
            channel_name=f"user_{user.pk}",
            cultural_preferences={"language": user.language, "prayerTimeNotifications": prayer_notifications},
            expires_at=at + timedelta(hours=24),
        )


def _reminder_events():
    with dangerously_platform_context():
        return list(RealtimeEvent.objects.filter(event_type="system_announcement").order_by("seq"))


def test_online_user_who_enabled_them_gets_one_dhuhr_reminder(schools):
    student = schools.a.student_user
    _online(student)
    assert prayer_reminders_send(at=BEFORE_DHUHR) == 1
    [event] = _reminder_events()
    assert (event.target_user_id, event.organization_id) == (student.pk, schools.a.org.pk)
    assert (event.event_category, event.priority, event.broadcast_scope) == ("system", "medium", "individual")
    assert event.expires_at == datetime.fromisoformat("2026-03-13T12:58:00+05:00")
    payload = event.event_payload["payload"]
    assert event.event_payload["eventType"] == "system_announcement"
    assert (payload["prayerName"], payload["prayerTime"], payload["timeUntilPrayer"]) == ("dhuhr", "12:38", 8)
    assert payload["organizationId"] == str(schools.a.org.pk)
    assert set(payload["message"]) == {"en", "uz", "ru", "ar"}
    assert payload["message"]["en"] == "Dhuhr prayer begins at 12:38, in 8 min."
    assert payload["greeting"] == {"formal": "As-salaam alaikum", "casual": "Ramadan Mubarak"}
    assert payload["islamicGuidance"]["preparationSuggestions"]
    assert payload["appBehavior"]["pauseNotifications"] is True
    assert event.event_payload["metadata"] == {
        "calculatedForTimezone": "Asia/Tashkent",
        "islamicCalendarDate": "1447-09-23",
        "ramadanContext": True,
    }
    assert event.islamic_calendar_context["hijri_date"] == "1447-09-23"
    with dangerously_platform_context():
        reminder = PrayerReminder.objects.get()
    assert (reminder.prayer, str(reminder.prayer_date), reminder.event_id) == ("dhuhr", "2026-03-13", event.pk)


def test_repeated_and_overlapping_runs_send_exactly_once(schools):
    _online(schools.a.student_user)
    runs = [BEFORE_DHUHR, BEFORE_DHUHR, BEFORE_DHUHR + timedelta(minutes=3), BEFORE_DHUHR + timedelta(minutes=7)]
    assert [prayer_reminders_send(at=at) for at in runs] == [1, 0, 0, 0]
    assert len(_reminder_events()) == 1


def test_late_run_still_reminds_before_the_prayer_but_not_after_it_started(schools):
    _online(schools.a.student_user)
    # The 12:30 run was missed; a late one at 12:36 still reminds, 2 minutes ahead.
    assert prayer_reminders_send(at=BEFORE_DHUHR + timedelta(minutes=6)) == 1
    assert _reminder_events()[0].event_payload["payload"]["timeUntilPrayer"] == 2
    _online(schools.a.other_student_user)
    assert prayer_reminders_send(at=BEFORE_DHUHR + timedelta(minutes=9)) == 0


def test_too_early_run_waits(schools):
    _online(schools.a.student_user)
    assert prayer_reminders_send(at=BEFORE_DHUHR - timedelta(minutes=10)) == 0
    assert prayer_reminders_send(at=BEFORE_DHUHR) == 1


def test_every_ten_minutes_for_a_day_gives_five_reminders_each_at_most_ten_minutes_ahead(schools):
    _online(schools.a.student_user, expires_in=timedelta(days=2))
    at = datetime.fromisoformat("2026-03-13T00:00:00+05:00")
    while at < datetime.fromisoformat("2026-03-14T00:00:00+05:00"):
        prayer_reminders_send(at=at)
        at += timedelta(minutes=10)
    events = _reminder_events()
    assert [e.event_payload["payload"]["prayerName"] for e in events] == ["fajr", "dhuhr", "asr", "maghrib", "isha"]
    assert all(0 < e.event_payload["payload"]["timeUntilPrayer"] <= 10 for e in events)


def test_offline_expired_and_opted_out_users_get_nothing(schools):
    _online(schools.a.student_user, status="offline")
    _online(schools.a.teacher_user, expires_in=timedelta(minutes=-1))
    _online(schools.a.parent_user, prayer_notifications=False)
    assert prayer_reminders_send(at=BEFORE_DHUHR) == 0
    assert _reminder_events() == []


def test_each_school_gets_its_own_reminders_in_its_users_language(schools):
    schools.b.teacher_user.language = "ru"
    with dangerously_platform_context():
        schools.b.teacher_user.save(update_fields=["language"])
    _online(schools.a.student_user)
    _online(schools.b.teacher_user)
    assert prayer_reminders_send(at=BEFORE_DHUHR) == 2
    by_org = {e.organization_id: e for e in _reminder_events()}
    assert by_org[schools.b.org.pk].target_user_id == schools.b.teacher_user.pk
    assert by_org[schools.b.org.pk].language_preference == "ru"
    assert by_org[schools.b.org.pk].event_payload["payload"]["greeting"]["formal"] == "Ас-саляму алейкум"
    assert by_org[schools.a.org.pk].target_user_id == schools.a.student_user.pk


def test_reminders_are_scheduled_every_ten_minutes():
    entry = settings.CELERY_BEAT_SCHEDULE["culture-prayer-reminders"]
    assert entry["task"] == "culture.send_prayer_reminders"
    assert entry["schedule"] == 600.0
    from harry_realtime.celery import app

    app.loader.import_default_modules()
    assert "culture.send_prayer_reminders" in app.tasks
