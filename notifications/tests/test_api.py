"""REST: devices, explicit sends, teacher messages, engagement; two schools and an outsider."""

import json

import pytest

from harry_realtime.tenancy import dangerously_platform_context
from notifications.models import DeviceToken, PushNotification

from .conftest import reload

pytestmark = pytest.mark.django_db

DEVICES = "/api/notifications/devices"


def _devices(**filters):
    with dangerously_platform_context():
        return list(DeviceToken.objects.filter(**filters).order_by("created_at"))


def test_register_device_then_reregister_refreshes_the_same_row(schools, client_for):
    client = client_for(schools.a.student_user)
    first = client.post(DEVICES, {"platform": "android", "token": "tok-1", "app_version": "1.0", "language": "uz"})
    again = client.post(DEVICES, {"platform": "android", "token": "tok-1", "app_version": "1.1", "language": "ru"})

    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    (row,) = _devices(token="tok-1")
    assert row.user_id == schools.a.student_user.pk and row.app_version == "1.1" and row.language == "ru"
    assert "token" not in first.json()


def test_token_registered_by_another_user_in_another_school_moves_to_them(schools, client_for):
    client_for(schools.a.student_user).post(DEVICES, {"platform": "ios", "token": "shared-phone"})
    response = client_for(schools.b.parent_user).post(DEVICES, {"platform": "ios", "token": "shared-phone"})

    assert response.status_code == 201
    rows = _devices(token="shared-phone")
    assert [(r.user_id, r.is_active) for r in rows] == [
        (schools.a.student_user.pk, False),
        (schools.b.parent_user.pk, True),
    ]
    assert rows[0].deactivation_reason == "registered_by_another_user"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"platform": "blackberry", "token": "x"}, "platform"),
        ({"platform": "android", "token": ""}, "token"),
        ({"platform": "android", "token": "x", "language": "fr"}, "language"),
        ({"platform": "web", "token": "not-json"}, "token"),
        ({"platform": "web", "token": json.dumps({"endpoint": "https://push.example/1"})}, "token"),
    ],
)
def test_bad_device_input_is_refused_and_nothing_stored(schools, client_for, body, field):
    response = client_for(schools.a.student_user).post(DEVICES, body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert field in response.json()["error"]["details"]
    assert _devices() == []


def test_web_subscription_is_stored_normalized(schools, client_for):
    subscription = {
        "endpoint": "https://push.example/abc",
        "keys": {"auth": "a1", "p256dh": "p1"},
        "expirationTime": None,
    }
    response = client_for(schools.a.teacher_user).post(
        DEVICES, {"platform": "web", "token": json.dumps(subscription)}, format="json"
    )
    assert response.status_code == 201
    (row,) = _devices()
    assert json.loads(row.token) == {"endpoint": "https://push.example/abc", "keys": {"auth": "a1", "p256dh": "p1"}}


def test_delete_device_owner_and_admin_only(schools, client_for, make_device):
    mine = make_device(schools.a.student_user, "del-1")
    theirs = make_device(schools.a.student_user, "del-2")
    other_school = make_device(schools.b.student_user, "del-3")

    assert client_for(schools.a.teacher_user).delete(f"{DEVICES}/{mine.pk}").status_code == 404
    assert client_for(schools.a.parent_user).delete(f"{DEVICES}/{mine.pk}").status_code == 404
    assert client_for(schools.a.student_user).delete(f"{DEVICES}/{mine.pk}").status_code == 204
    assert client_for(schools.a.admin_user).delete(f"{DEVICES}/{theirs.pk}").status_code == 204
    response = client_for(schools.a.admin_user).delete(f"{DEVICES}/{other_school.pk}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "device_not_found"

    assert reload(mine).is_active is False and reload(theirs).is_active is False
    assert reload(other_school).is_active is True


def test_list_devices_shows_only_the_callers_active_devices(schools, client_for, make_device):
    mine = make_device(schools.a.student_user, "list-1")
    gone = make_device(schools.a.student_user, "list-2")
    make_device(schools.a.parent_user, "list-3")
    make_device(schools.b.student_user, "list-4")
    assert client_for(schools.a.student_user).delete(f"{DEVICES}/{gone.pk}").status_code == 204

    listed = client_for(schools.a.student_user).get(DEVICES)
    assert listed.status_code == 200
    assert [d["id"] for d in listed.json()["devices"]] == [str(mine.pk)]
    assert client_for(schools.a.admin_user).get(DEVICES).json() == {"devices": []}


def test_unauthenticated_requests_are_refused(api):
    assert api.post(DEVICES, {"platform": "android", "token": "t"}).status_code == 401


# --- explicit sends -------------------------------------------------------------------------


def _send(client, **body):
    payload = {"title": "Hi", "body": "Lesson moved", **body}
    return client.post("/api/notifications/send", payload, format="json")


def test_admin_sends_multilingual_scheduled_push(schools, client_for):
    a = schools.a
    response = _send(
        client_for(a.admin_user),
        target_user_ids=[str(a.student_user.pk), str(a.parent_user.pk)],
        title={"en": "Hi", "uz": "Salom"},
        body={"en": "Lesson moved", "ru": "Урок перенесён"},
        priority="high",
        scheduled_for="2030-01-01T08:00:00Z",
    )
    assert response.status_code == 201, response.json()
    assert len(response.json()) == 2
    with dangerously_platform_context():
        rows = list(PushNotification.objects.filter(organization=a.org))
    assert {r.target_user_id for r in rows} == {a.student_user.pk, a.parent_user.pk}
    row = rows[0]
    assert (row.title_uz, row.title_ru, row.body_ru, row.body_uz) == ("Salom", None, "Урок перенесён", None)
    assert row.priority == "high" and row.scheduled_for.year == 2030
    assert (row.expires_at - row.scheduled_for).total_seconds() == 24 * 3600


def test_teacher_sends_to_own_student_but_not_to_others(schools, client_for):
    a = schools.a
    teacher = client_for(a.teacher_user)
    assert _send(teacher, target_user_ids=[str(a.student_user.pk)]).status_code == 201
    assert _send(teacher, target_user_ids=[str(a.parent_user.pk)]).status_code == 201

    refused = _send(teacher, target_user_ids=[str(a.other_student_user.pk), str(a.student_user.pk)])
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "recipient_not_allowed"
    outsider = _send(client_for(a.outsider_user), target_user_ids=[str(a.student_user.pk)])
    assert outsider.status_code == 403
    student = _send(client_for(a.student_user), target_user_ids=[str(a.other_student_user.pk)])
    assert student.status_code == 403
    with dangerously_platform_context():
        assert PushNotification.objects.count() == 2  # the refused batches wrote nothing


def test_send_to_another_schools_user_is_refused(schools, client_for):
    response = _send(client_for(schools.a.admin_user), target_user_ids=[str(schools.b.student_user.pk)])
    assert response.status_code == 400 and response.json()["error"]["code"] == "unknown_recipient"


@pytest.mark.parametrize(
    "body",
    [
        {"target_user_ids": []},
        {"title": {"uz": "Salom"}},
        {"title": {"en": "Hi", "fr": "Salut"}},
        {"priority": "critical"},
        {"notification_type": "party"},
    ],
)
def test_send_validation(schools, client_for, body):
    payload = {"target_user_ids": [str(schools.a.student_user.pk)], **body}
    response = _send(client_for(schools.a.admin_user), **payload)
    assert response.status_code == 400 and response.json()["error"]["code"] == "validation_error"


def test_send_refuses_expiry_before_schedule(schools, client_for):
    response = _send(
        client_for(schools.a.admin_user),
        target_user_ids=[str(schools.a.student_user.pk)],
        scheduled_for="2030-01-02T00:00:00Z",
        expires_at="2030-01-01T00:00:00Z",
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_expiry"


def test_teacher_message_endpoint(schools, client_for):
    a = schools.a
    ok = client_for(a.teacher_user).post(
        "/api/notifications/teacher-messages", {"student_id": str(a.student.pk), "message": "Great work today"}
    )
    assert ok.status_code == 201 and len(ok.json()) == 2
    refused = client_for(a.teacher_user).post(
        "/api/notifications/teacher-messages", {"student_id": str(a.other_student.pk), "message": "Hi"}
    )
    assert refused.status_code == 403
    other_school = client_for(a.teacher_user).post(
        "/api/notifications/teacher-messages", {"student_id": str(schools.b.student.pk), "message": "Hi"}
    )
    assert other_school.status_code == 404 and other_school.json()["error"]["code"] == "student_not_found"


# --- engagement -----------------------------------------------------------------------------


def test_opened_and_action_by_the_recipient(schools, client_for, make_push):
    a = schools.a
    push = make_push(a.student_user)
    with dangerously_platform_context():
        PushNotification.objects.filter(pk=push.pk).update(delivery_status="sent")
    client = client_for(a.student_user)

    first = client.post(f"/api/notifications/{push.pk}/opened")
    second = client.post(f"/api/notifications/{push.pk}/opened")
    assert first.status_code == second.status_code == 200
    assert first.json()["opened_at"] == second.json()["opened_at"] is not None
    assert first.json()["delivery_status"] == "delivered"

    action = client.post(f"/api/notifications/{push.pk}/action", {"action": "view_task"})
    assert action.status_code == 200 and action.json()["action_taken"] == "view_task"
    assert reload(push).action_taken_at is not None


def test_engagement_refused_for_others_and_other_schools(schools, client_for, make_push):
    push = make_push(schools.a.student_user)
    teacher = client_for(schools.a.teacher_user).post(f"/api/notifications/{push.pk}/opened")
    assert teacher.status_code == 403 and teacher.json()["error"]["code"] == "not_recipient"
    parent = client_for(schools.a.parent_user).post(f"/api/notifications/{push.pk}/opened")
    assert parent.status_code == 404
    other = client_for(schools.b.admin_user).post(f"/api/notifications/{push.pk}/action", {"action": "x"})
    assert other.status_code == 404
    missing_action = client_for(schools.a.student_user).post(f"/api/notifications/{push.pk}/action", {})
    assert missing_action.status_code == 400
    assert reload(push).opened_at is None
