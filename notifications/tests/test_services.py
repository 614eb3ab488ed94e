"""Delivery against the fake provider over real HTTP, and push creation from every source."""

from datetime import timedelta

import jwt
import pytest
from django.utils import timezone

from events.models import RealtimeEvent
from harry_realtime.tenancy import dangerously_platform_context
from notifications import delivery, from_events, services
from notifications.models import DeviceToken, PushDelivery, PushNotification

from .conftest import reload, web_subscription
from .fake_provider import Answer, apns_error, fcm_error

pytestmark = pytest.mark.django_db


def deliver(notification):
    return delivery.push_notification_deliver(notification_id=notification.pk)


def deliveries(notification):
    with dangerously_platform_context():
        return list(PushDelivery.objects.filter(notification=notification).order_by("created_at"))


def make_due(notification):
    with dangerously_platform_context():
        PushDelivery.objects.filter(notification=notification, status="pending").update(
            next_attempt_at=timezone.now() - timedelta(seconds=1)
        )


# --- success on every provider --------------------------------------------------------------


def test_sends_once_to_each_active_device_with_provider_specific_requests(
    schools, providers, make_device, make_push, apns_key
):
    user = schools.a.student_user
    make_device(user, "fcm-token-1", "android")
    make_device(user, "a" * 64, "ios")
    make_device(user, web_subscription(providers, "browser-1"), "web")
    inactive = make_device(user, "fcm-old", "android")
    with dangerously_platform_context():
        DeviceToken.objects.filter(pk=inactive.pk).update(is_active=False)
    push = make_push(user, priority="high")

    report = deliver(push)

    assert report.status == "sent" and report.sent == 3
    assert {r.kind for r in providers.received} == {"fcm", "apns", "webpush"}
    assert providers.for_token("fcm-old") == []
    fcm = providers.for_token("fcm-token-1")[0]
    assert fcm.path == "/v1/projects/harry-test/messages:send"
    assert fcm.headers["authorization"] == "Bearer fcm-test-token"
    message = fcm.json["message"]
    assert message["notification"] == {"title": "Hello", "body": "School opens at nine."}
    assert message["android"]["priority"] == "HIGH"
    assert message["android"]["collapse_key"] == str(push.pk)
    assert message["data"]["notification_id"] == str(push.pk)
    apns = providers.for_token("a" * 64)[0]
    assert apns.headers["apns-priority"] == "10"
    assert apns.headers["apns-topic"] == "uz.harry.student"
    claims = jwt.decode(
        apns.headers["authorization"].removeprefix("bearer "), apns_key.public_key(), algorithms=["ES256"]
    )
    assert claims["iss"] == "TEAM123456"
    assert apns.json["aps"]["alert"] == {"title": "Hello", "body": "School opens at nine."}
    web = providers.for_token("browser-1")[0]
    assert web.headers["content-encoding"] == "aes128gcm" and web.headers["urgency"] == "high"
    assert web.headers["authorization"].startswith("vapid t=")
    push = reload(push)
    assert push.delivery_status == "sent" and push.sent_at is not None and push.delivery_attempts == 1
    assert {d.status for d in deliveries(push)} == {"sent"}
    assert all(d.provider_message_id for d in deliveries(push))

    # A second run (a duplicate task) sends nothing more.
    again = deliver(push)
    assert again.status == "sent" and len(providers.received) == 3


def test_low_priority_maps_to_provider_low_priority(schools, providers, make_device, make_push):
    user = schools.a.student_user
    make_device(user, "fcm-low", "android")
    make_device(user, "b" * 64, "ios")
    deliver(make_push(user, priority="low"))
    assert providers.for_token("fcm-low")[0].json["message"]["android"]["priority"] == "NORMAL"
    assert providers.for_token("b" * 64)[0].headers["apns-priority"] == "1"


# --- transient errors: retry with backoff, then give up ---------------------------------------


def test_transient_error_retries_after_backoff_then_succeeds(schools, providers, make_device, make_push):
    user = schools.a.student_user
    make_device(user, "fcm-flaky", "android")
    providers.script("fcm-flaky", fcm_error(503, "UNAVAILABLE", "UNAVAILABLE"))
    push = make_push(user)

    before = timezone.now()
    report = deliver(push)

    assert report.status == "pending" and report.retrying == 1
    (row,) = deliveries(push)
    assert row.status == "pending" and row.attempts == 1 and "UNAVAILABLE" in row.error_message
    # First step of the backoff: base 60 s, equal jitter -> between 30 and 60 s.
    wait = (row.next_attempt_at - before).total_seconds()
    assert 29 <= wait <= 61
    # Not due yet: a run now calls nobody.
    deliver(push)
    assert len(providers.for_token("fcm-flaky")) == 1

    make_due(push)
    report = deliver(push)
    assert report.status == "sent"
    assert len(providers.for_token("fcm-flaky")) == 2
    push = reload(push)
    assert push.delivery_status == "sent" and push.delivery_attempts == 2


def test_transient_errors_until_max_attempts_fail_with_message(schools, providers, make_device, make_push):
    user = schools.a.student_user
    make_device(user, "c" * 64, "ios")
    providers.script(
        "c" * 64,
        apns_error(503, "ServiceUnavailable"),
        apns_error(429, "TooManyRequests", **{"retry-after": "120"}),
        apns_error(500, "InternalServerError"),
    )
    push = make_push(user)

    deliver(push)
    make_due(push)
    before = timezone.now()
    deliver(push)
    (row,) = deliveries(push)
    # Retry-After from the 429 wins over the shorter backoff step.
    assert (row.next_attempt_at - before).total_seconds() >= 119
    make_due(push)
    report = deliver(push)

    assert report.status == "failed"
    assert len(providers.for_token("c" * 64)) == 3
    push = reload(push)
    assert push.delivery_status == "failed" and push.delivery_attempts == 3 and push.failed_at
    assert "gave up after 3 attempts" in push.error_message and "InternalServerError" in push.error_message
    make_due(push)
    deliver(push)
    assert len(providers.for_token("c" * 64)) == 3


def test_backoff_grows_exponentially_with_jitter_and_a_cap(settings):
    settings.PUSH_RETRY_BASE_SECONDS = 10
    settings.PUSH_RETRY_MAX_SECONDS = 60
    delays = {a: [delivery.retry_delay(a).total_seconds() for _ in range(200)] for a in (1, 2, 3, 6)}
    assert all(5 <= d <= 10 for d in delays[1])
    assert all(10 <= d <= 20 for d in delays[2])
    assert all(20 <= d <= 40 for d in delays[3])
    assert all(30 <= d <= 60 for d in delays[6])
    assert len({round(d, 3) for d in delays[2]}) > 50  # jittered, not lockstep


# --- invalid tokens -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "token", "answer"),
    [
        ("android", "fcm-gone", fcm_error(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.")),
        ("ios", "d" * 64, apns_error(410, "Unregistered")),
        ("ios", "e" * 64, apns_error(400, "BadDeviceToken")),
    ],
)
def test_invalid_token_deactivates_device_and_is_not_retried(
    schools, providers, make_device, make_push, platform, token, answer
):
    user = schools.a.student_user
    device = make_device(user, token, platform)
    make_device(user, "fcm-good", "android")
    providers.script(token, answer)
    push = make_push(user)

    report = deliver(push)

    assert report.sent == 1 and report.invalid_tokens == 1 and report.retrying == 0
    device = reload(device)
    assert device.is_active is False and device.deactivation_reason.startswith("provider:")
    assert reload(push).delivery_status == "sent"
    make_due(push)
    deliver(push)
    assert len(providers.for_token(token)) == 1


def test_web_push_gone_subscription_is_invalid(schools, providers, make_device, make_push):
    user = schools.a.student_user
    device = make_device(user, web_subscription(providers, "browser-gone"), "web")
    providers.script("browser-gone", Answer(410, {"error": "subscription expired"}))
    push = make_push(user)

    assert deliver(push).status == "failed"
    assert reload(device).is_active is False
    assert "invalid_token" in reload(push).error_message


def test_user_without_devices_fails_without_calls(schools, providers, make_push):
    push = make_push(schools.a.other_student_user)
    assert deliver(push).status == "failed"
    assert reload(push).error_message == "no active device token"
    assert providers.received == []


# --- expiry and scheduling --------------------------------------------------------------------


def test_expired_push_is_never_sent(schools, providers, make_device, make_push):
    user = schools.a.student_user
    make_device(user, "fcm-late", "android")
    push = make_push(user, scheduled_for=timezone.now() - timedelta(hours=2), expires_at=timezone.now())

    assert deliver(push).status == "expired"
    assert providers.received == []
    assert reload(push).delivery_status == "expired"


def test_expiry_sweep_expires_pending_and_retrying_deliveries(schools, providers, make_device, make_push):
    user = schools.a.student_user
    make_device(user, "fcm-retry-expire", "android")
    providers.script("fcm-retry-expire", fcm_error(500, "INTERNAL", "INTERNAL"))
    push = make_push(user)
    deliver(push)
    stale = make_push(user, scheduled_for=timezone.now() + timedelta(hours=1))
    with dangerously_platform_context():
        PushNotification.objects.filter(pk__in=[push.pk, stale.pk]).update(expires_at=timezone.now())

    assert delivery.push_notifications_expire() == 2

    assert reload(push).delivery_status == "expired" and reload(stale).delivery_status == "expired"
    assert deliveries(push)[0].status == "expired"
    make_due(push)
    deliver(push)
    assert len(providers.for_token("fcm-retry-expire")) == 1


def test_scheduled_push_waits_until_due_and_the_sweep_finds_it(schools, providers, make_device, make_push):
    user = schools.a.student_user
    make_device(user, "fcm-later", "android")
    push = make_push(user, scheduled_for=timezone.now() + timedelta(minutes=30))

    assert deliver(push).status == "scheduled"
    assert providers.received == []
    assert str(push.pk) not in delivery.push_notifications_due_ids()

    with dangerously_platform_context():
        PushNotification.objects.filter(pk=push.pk).update(scheduled_for=timezone.now() - timedelta(seconds=1))
    assert str(push.pk) in delivery.push_notifications_due_ids()
    assert deliver(push).status == "sent"
    assert len(providers.for_token("fcm-later")) == 1
    assert str(push.pk) not in delivery.push_notifications_due_ids()


def test_due_sweep_lists_retries_that_came_due(schools, providers, make_device, make_push):
    user = schools.a.student_user
    make_device(user, "fcm-sweep", "android")
    providers.script("fcm-sweep", fcm_error(503, "UNAVAILABLE"))
    push = make_push(user)
    deliver(push)
    assert str(push.pk) not in delivery.push_notifications_due_ids()
    make_due(push)
    assert str(push.pk) in delivery.push_notifications_due_ids()


# --- language and greeting ------------------------------------------------------------------


def test_language_follows_device_then_user_with_english_fallback(schools, providers, make_device, make_push):
    user = schools.a.student_user  # user.language is "en" in the factories
    with dangerously_platform_context():
        type(user).objects.filter(pk=user.pk).update(language="ru")
    make_device(user, "fcm-uz", "android", language="uz")
    make_device(user, "fcm-user-lang", "android")
    make_device(user, "fcm-ar", "android", language="ar")
    push = make_push(
        user, title_en="Hello", body_en="Lesson at nine", title_uz="Salom", body_uz="Dars soat to'qqizda",
        title_ru="Привет", body_ru="Урок в девять",
    )  # fmt: skip

    deliver(push)

    def shown(token):
        return providers.for_token(token)[0].json["message"]["notification"]

    assert shown("fcm-uz") == {"title": "Salom", "body": "Dars soat to'qqizda"}
    assert shown("fcm-user-lang") == {"title": "Привет", "body": "Урок в девять"}
    assert shown("fcm-ar") == {"title": "Hello", "body": "Lesson at nine"}
    assert providers.for_token("fcm-uz")[0].json["message"]["data"]["language"] == "uz"


def test_islamic_greeting_prefixes_the_body(schools, providers, make_device, make_push):
    user = schools.a.student_user
    make_device(user, "fcm-greet", "android")
    deliver(make_push(user, islamic_greeting=True, body_en="Ramadan timetable is out."))
    body = providers.for_token("fcm-greet")[0].json["message"]["notification"]["body"]
    assert body.endswith("Ramadan timetable is out.") and body != "Ramadan timetable is out."
    assert body.startswith("As-salaam alaikum")


# --- creation from events, family notices, duplicates ----------------------------------------


def _event(org, **fields):
    values = {"event_category": "gamification", "priority": "high", "event_payload": {}}
    values.update(fields)
    with dangerously_platform_context():
        return RealtimeEvent.objects.create(organization=org, **values)


def test_achievement_event_pushes_the_offline_student_once_and_never_the_family(schools):
    a = schools.a
    event = _event(
        a.org,
        event_type="achievement_earned",
        target_user=a.student_user,
        source_table="student_achievements",
        source_record_id=a.award.pk,
    )
    with dangerously_platform_context():
        rows = from_events.push_notification_create_for_event(event=event)
        again = from_events.push_notification_create_for_event(event=event)
        online = from_events.push_notification_create_for_event(event=event, offline_user_ids=[])
        stored = list(PushNotification.objects.filter(realtime_event=event))

    assert again == [] and online == []
    (student_push,) = stored
    assert [r.pk for r in rows] == [student_push.pk] and student_push.target_user_id == a.student_user.pk
    assert student_push.notification_type == "achievement_earned" and student_push.priority == "high"
    assert "First steps" in student_push.body_en
    # Relatives hear through family notices of their own (events/family.py), not from this event.


def test_ranking_event_pushes_the_student_their_rank(schools):
    a = schools.a
    event = _event(
        a.org,
        event_type="student_ranking_update",
        priority="medium",
        target_user=a.student_user,
        source_table="student_rankings",
        source_record_id=a.ranking.pk,
    )
    with dangerously_platform_context():
        (row,) = from_events.push_notification_create_for_event(event=event)
    assert (row.target_user_id, row.notification_type, row.priority) == (a.student_user.pk, "ranking_update", "normal")
    assert "5" in row.body_en


def test_a_family_notice_becomes_a_push_with_its_own_texts_never_held(schools, as_user):
    from events.family import family_notices_create

    a = schools.a
    with dangerously_platform_context():
        type(a.parent_user).objects.filter(pk=a.parent_user.pk).update(language="ru")
    with as_user(a.teacher_user):
        a.attendance.status = "absent"
        a.attendance.save()
    with dangerously_platform_context():
        source = RealtimeEvent.objects.filter(source_table="attendance").order_by("-seq").first()
        (notice,) = family_notices_create([source])
        (push,) = from_events.push_notification_create_for_event(event=notice)
    assert (push.target_user_id, push.notification_type, push.priority) == (
        a.parent_user.pk,
        "attendance_reminder",
        "high",
    )
    texts = notice.event_payload["translations"]
    assert (push.title_en, push.body_en) == (texts["title"]["en"], texts["message"]["en"])
    assert push.body_ru == texts["message"]["ru"] and "отсутств" in push.body_ru
    assert push.prayer_time_aware is False  # a child's whereabouts do not wait for prayer


def test_student_preferences_silence_their_own_pushes(schools):
    from events.reminders import deadline_reminders_send
    from school.models import HomeTask

    a = schools.a
    with dangerously_platform_context():
        type(a.student).objects.filter(pk=a.student.pk).update(
            realtime_preferences={"achievement_alerts": False, "task_notifications": False, "ranking_updates": True}
        )
    achievement = _event(a.org, event_type="achievement_earned", target_user=a.student_user,
                         source_table="student_achievements", source_record_id=a.award.pk)  # fmt: skip
    ranking = _event(a.org, event_type="student_ranking_update", target_user=a.student_user,
                     source_table="student_rankings", source_record_id=a.ranking.pk)  # fmt: skip
    with dangerously_platform_context():
        HomeTask.objects.create(
            organization=a.org, student=a.student, title="Due soon", due_date=timezone.now() + timedelta(hours=2)
        )
        deadline_reminders_send(now=timezone.now())
        reminder = RealtimeEvent.objects.get(event_metadata__event="deadline_reminder")
        assert from_events.push_notification_create_for_event(event=achievement) == []
        assert from_events.push_notification_create_for_event(event=reminder) == []
        assert len(from_events.push_notification_create_for_event(event=ranking)) == 1  # still on


def test_attendance_push_translates_the_status_inside_the_sentence(schools):
    a = schools.a
    with dangerously_platform_context():
        type(a.attendance).objects.filter(pk=a.attendance.pk).update(status="absent")
    event = _event(a.org, event_type="attendance_sync", target_user=a.student_user,
                   source_table="attendance", source_record_id=a.attendance.pk)  # fmt: skip
    with dangerously_platform_context():
        (push,) = from_events.push_notification_create_for_event(event=event)
    assert push.body_en == "Attendance was recorded: absent."
    assert "غائب" in push.body_ar and "absent" not in push.body_ar
    assert "kelmadi" in push.body_uz and "отсутствует" in push.body_ru


def test_event_kinds_without_push_create_nothing(schools):
    event = _event(schools.a.org, event_type="lesson_progress", event_category="educational",
                   target_user=schools.a.student_user)  # fmt: skip
    with dangerously_platform_context():
        assert from_events.push_notification_create_for_event(event=event) == []


def test_prayer_reminder_event_becomes_prayer_push_with_its_texts(schools):
    a = schools.a
    texts = {"en": "Asr prayer begins at 15:45", "uz": "Asr namozi 15:45 da", "ru": "Аср в 15:45", "ar": "العصر"}
    event = _event(
        a.org,
        event_type="system_announcement",
        event_category="system",
        priority="medium",
        target_user=a.teacher_user,
        expires_at=timezone.now() + timedelta(minutes=30),
        event_payload={
            "type": "prayer_time_reminder",
            "payload": {"prayerName": "asr", "prayerTime": "15:45", "timeUntilPrayer": 10,
                        "title": {"en": "Prayer time reminder"}, "message": texts},
        },
    )  # fmt: skip
    with dangerously_platform_context():
        (row,) = from_events.push_notification_create_for_event(event=event)
    assert row.notification_type == "prayer_time"
    assert row.islamic_greeting is True and row.prayer_time_aware is False
    assert row.body_uz == "Asr namozi 15:45 da" and row.title_en == "Prayer time reminder"
    assert row.expires_at == event.expires_at


def test_teacher_message_reaches_student_and_family(schools, as_user):
    a = schools.a
    with as_user(a.teacher_user):
        rows = services.push_notification_create_teacher_message(
            sender=a.teacher_user, student_id=a.student.pk, message="Bring your workbook."
        )
    assert {r.target_user_id for r in rows} == {a.student_user.pk, a.parent_user.pk}
    assert all(r.body_en == "Bring your workbook." and r.notification_type == "teacher_message" for r in rows)
    assert all(a.teacher_user.full_name in r.title_en for r in rows)


# --- prayer-aware delivery ------------------------------------------------------------------


def test_prayer_aware_push_is_held_until_the_window_ends(schools, providers, make_device, make_push, monkeypatch):
    from culture import prayer as culture_prayer
    from culture.selectors import location_of, method_for

    user = schools.a.student_user
    make_device(user, "fcm-prayer", "android")
    # "Now" inside today's dhuhr window as the culture app computes it for this school.
    with dangerously_platform_context():
        timetable = culture_prayer.compute_timetable(
            timezone.localdate(), location_of(schools.a.org), method_for(schools.a.org)
        )
    inside = timetable["dhuhr"] + timedelta(minutes=5)
    push = make_push(
        user,
        prayer_time_aware=True,
        notification_type="teacher_message",
        scheduled_for=inside - timedelta(hours=1),
        expires_at=inside + timedelta(days=1),
    )
    monkeypatch.setattr(delivery.timezone, "now", lambda: inside)

    report = deliver(push)

    assert report.status == "held_for_prayer" and report.next_attempt_at > inside
    assert providers.received == []
    held = reload(push)
    assert held.scheduled_for == report.next_attempt_at and held.delivery_status == "pending"
    monkeypatch.setattr(delivery.timezone, "now", lambda: report.next_attempt_at + timedelta(seconds=1))
    assert deliver(push).status == "sent"


def test_urgent_push_is_not_held_for_prayer(schools, providers, make_device, make_push, monkeypatch):
    from culture import prayer as culture_prayer
    from culture.selectors import location_of, method_for

    user = schools.a.student_user
    make_device(user, "fcm-urgent", "android")
    with dangerously_platform_context():
        timetable = culture_prayer.compute_timetable(
            timezone.localdate(), location_of(schools.a.org), method_for(schools.a.org)
        )
    inside = timetable["dhuhr"] + timedelta(minutes=5)
    push = make_push(
        user,
        prayer_time_aware=True,
        priority="urgent",
        scheduled_for=inside - timedelta(hours=1),
        expires_at=inside + timedelta(days=1),
    )
    monkeypatch.setattr(delivery.timezone, "now", lambda: inside)
    assert deliver(push).status == "sent"


def test_orm_written_rows_get_the_specs_column_defaults(schools):
    a = schools.a
    with dangerously_platform_context():
        push = PushNotification.objects.create(
            organization=a.org, target_user=a.student_user, notification_type="system_alert", title_en="t", body_en="b"
        )
        push.refresh_from_db()
        student = type(a.student).objects.create(organization=a.org, full_name="New", date_of_birth="2014-01-01")
        student.refresh_from_db()
    assert push.delivery_method == ["push"]
    assert student.realtime_preferences == {
        "ranking_updates": True,
        "task_notifications": True,
        "achievement_alerts": True,
    }
