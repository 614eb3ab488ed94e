"""Announcements: admins only, one notice per recipient in the recipient's language, emergency
alerts to everyone at once (live and push, never held for prayer), and the delivery summary."""

import pytest

from events.announcements import announcement_create, announcement_delivery
from events.messages import messages_for
from events.models import Announcement, RealtimeEvent
from events.prayer_hold import events_hold_for_prayer
from harry_realtime.tenancy import dangerously_platform_context
from notifications.models import PushNotification
from school.models import User

pytestmark = pytest.mark.django_db

URL = "/api/realtime/announcements"


def body(**overrides) -> dict:
    return {"type": "system_announcement", "title": "Open day", "message": "Saturday at 10", "audience": "all"} | (
        overrides
    )


def copies(announcement_id) -> list[RealtimeEvent]:
    with dangerously_platform_context():
        return list(RealtimeEvent.objects.filter(source_record_id=announcement_id, source_table__isnull=True))


def school_users(school, role=None) -> set:
    with dangerously_platform_context():
        users = User.objects.filter(organization=school.org)
        return set((users.filter(role=role) if role else users).values_list("pk", flat=True))


def test_an_admin_announces_to_one_role_each_parent_gets_their_own_copy(schools, client_for):
    a = schools.a
    response = client_for(a.admin_user).post(URL, body(audience="parent"), format="json")
    assert response.status_code == 201, response.json()
    announcement = response.json()["announcement"]
    assert (announcement["type"], announcement["audience"]) == ("system_announcement", "parent")
    assert announcement["delivery"] == {"recipients": 1, "live": 0, "push": 0, "expired": 0, "notYet": 1}
    (copy,) = copies(announcement["id"])
    assert copy.target_user_id == a.parent_user.pk and copy.broadcast_scope == "individual"
    assert copy.priority == "medium" and copy.event_type == "system_announcement"
    [(topic, message)] = messages_for(copy)
    assert topic == f"notifications:org_{a.org.pk}:role_parent"
    assert message["event"] == "system_announcement"
    assert message["audience"]["target_user_id"] == str(a.parent_user.pk)
    assert (message["payload"]["title"], message["payload"]["message"]) == ("Open day", "Saturday at 10")


def test_texts_in_each_recipients_language(schools, client_for):
    a = schools.a
    with dangerously_platform_context():
        User.objects.filter(pk=a.teacher_user.pk).update(language="ru")
        User.objects.filter(pk=a.outsider_user.pk).update(language="ar")
    texts = {"title": {"en": "Open day", "ru": "День открытых дверей"}, "message": {"en": "Saturday", "ru": "Суббота"}}
    response = client_for(a.admin_user).post(URL, body(audience="teacher", **texts), format="json")
    assert response.status_code == 201
    by_user = {c.target_user_id: c for c in copies(response.json()["announcement"]["id"])}
    assert set(by_user) == {a.teacher_user.pk, a.outsider_user.pk}
    russian = by_user[a.teacher_user.pk].event_payload
    assert (russian["title"], russian["message"], russian["language"]) == ("День открытых дверей", "Суббота", "ru")
    assert russian["label"] == "Объявление школы"
    arabic = by_user[a.outsider_user.pk].event_payload  # no Arabic text was given: English
    assert (arabic["title"], arabic["language"]) == ("Open day", "ar")
    assert by_user[a.outsider_user.pk].language_preference == "ar"


def test_emergency_alert_reaches_every_role_with_a_push_at_once(schools, client_for):
    a = schools.a
    response = client_for(a.admin_user).post(
        URL, body(type="emergency_alert", title="Evacuate", message="Leave by the east exit"), format="json"
    )
    assert response.status_code == 201, response.json()
    announcement_id = response.json()["announcement"]["id"]
    events = copies(announcement_id)
    assert {e.target_user_id for e in events} == school_users(a)  # students, teachers, parent, admin
    assert {e.priority for e in events} == {"critical"}
    assert {e.target_user_type for e in events} == {"student", "teacher", "parent", "admin"}
    with dangerously_platform_context():
        pushes = list(PushNotification.objects.filter(realtime_event__in=events))
    assert {p.target_user_id for p in pushes} == school_users(a)
    assert {(p.priority, p.notification_type, p.title_en) for p in pushes} == {("urgent", "system_alert", "Evacuate")}
    # Nothing from the other school.
    assert not school_users(schools.b) & {e.target_user_id for e in events}


def test_emergency_alert_is_never_held_for_prayer_system_announcement_is(schools, settings):
    from events.tests.test_pipeline_prayer_hold import dhuhr_window

    a = schools.a
    settings.REALTIME_PRAYER_HOLD = True
    with dangerously_platform_context():
        admin = User.objects.get(pk=a.admin_user.pk)
    with dangerously_platform_context():
        at, window_end = dhuhr_window(a.org)
        alert = announcement_create(
            sender=admin, kind="emergency_alert", audience="all", title="Evacuate", message="Now"
        )
        notice = announcement_create(
            sender=admin, kind="system_announcement", audience="all", title="Open day", message="Sat"
        )
        alert_events, notice_events = copies(alert.pk), copies(notice.pk)
        held = events_hold_for_prayer(alert_events + notice_events, at=at)
    assert held == {e.seq for e in notice_events}


def test_only_admins_announce_and_bad_input_is_refused(schools, client_for):
    a = schools.a
    for user in (a.teacher_user, a.student_user, a.parent_user):
        response = client_for(user).post(URL, body(), format="json")
        assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")
    admin = client_for(a.admin_user)
    for bad in (
        body(type="birthday"),
        body(audience="everyone"),
        body(title=""),
        body(title={"uz": "no English"}),
        body(message={"en": "x", "fr": "y"}),
        body(message="x" * 2001),
    ):
        assert admin.post(URL, bad, format="json").status_code == 400, bad
    refused = admin.post(URL, body(type="emergency_alert", audience="teacher"), format="json")
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "emergency_alert_audience")
    with dangerously_platform_context():
        assert not Announcement.objects.exists() and not RealtimeEvent.objects.filter(source_table=None).exists()


def test_delivery_summary_counts_live_push_expired_and_not_yet(schools, client_for):
    a = schools.a
    admin = client_for(a.admin_user)
    created = admin.post(URL, body(audience="all"), format="json").json()["announcement"]
    events = copies(created["id"])
    assert len(events) == len(school_users(a)) == created["delivery"]["recipients"]
    live, pushed, expired, *rest = events
    with dangerously_platform_context():
        RealtimeEvent.objects.filter(pk=live.pk).update(delivery_status="sent")
        RealtimeEvent.objects.filter(pk=expired.pk).update(delivery_status="expired")
        PushNotification.objects.create(
            organization=a.org,
            realtime_event=pushed,
            target_user_id=pushed.target_user_id,
            notification_type="system_alert",
            title_en="Open day",
            body_en="Saturday",
            delivery_status="sent",
        )
    summary = admin.get(f"{URL}/{created['id']}").json()["announcement"]["delivery"]
    assert summary == {"recipients": len(events), "live": 1, "push": 1, "expired": 1, "notYet": len(rest)}
    with dangerously_platform_context():
        assert announcement_delivery(Announcement.objects.get(pk=created["id"])) == summary


def test_another_schools_admin_cannot_read_it(schools, client_for):
    a, b = schools.a, schools.b
    created = client_for(a.admin_user).post(URL, body(), format="json").json()["announcement"]
    response = client_for(b.admin_user).get(f"{URL}/{created['id']}")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "announcement_not_found")
    assert client_for(a.teacher_user).get(f"{URL}/{created['id']}").status_code == 403
