"""POST /api/realtime/broadcast (stored, then fanned out) and supabase-js's /realtime/v1/api/broadcast."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from events.models import RealtimeEvent
from events.topics import group_name
from harry_realtime.tenancy import dangerously_platform_context

pytestmark = pytest.mark.django_db


class Listener:
    """A channel in the topic groups, to see exactly what the fan-out sends."""

    def __init__(self, *topics: str):
        self.layer = get_channel_layer()
        self.channel = async_to_sync(self.layer.new_channel)()
        for topic in topics:
            async_to_sync(self.layer.group_add)(group_name(topic), self.channel)

    def receive_all(self, timeout: float = 0.5) -> list[dict]:
        async def drain():
            out = []
            while True:
                try:
                    out.append(await asyncio.wait_for(self.layer.receive(self.channel), timeout))
                except TimeoutError:
                    return out

        return async_to_sync(drain)()


def request_body(scope: str, ids: list, **overrides) -> dict:
    body = {
        "eventType": "task_assignment",
        "targetScope": scope,
        "targetIds": [str(i) for i in ids],
        "payload": {"title": {"en": "Homework", "uz": "Uy vazifasi"}, "content": {"en": "Read p. 5"}},
        "delivery": {"priority": "high", "methods": ["websocket", "in_app"]},
        "cultural": {
            "islamicValuesCompliant": True,
            "prayerTimeAware": True,
            "multilingualContent": True,
            "familyNotificationRequired": False,
        },
    }
    body.update(overrides)
    return body


def test_teacher_broadcast_to_own_student_is_stored_then_fanned_out(
    schools, client_for, django_capture_on_commit_callbacks
):
    a = schools.a
    topic = f"tasks:org_{a.org.pk}:student_{a.student.pk}"
    listener = Listener(topic)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(a.teacher_user).post(
            "/api/realtime/broadcast", request_body("individual", [a.student_user.pk]), format="json"
        )
    assert response.status_code == 201, response.json()
    (result,) = response.json()["events"]
    assert result["topics"] == [topic]
    with dangerously_platform_context():
        event = RealtimeEvent.objects.get(pk=result["id"])
    assert (event.created_by_id, event.target_user_id, event.event_type) == (
        a.teacher_user.pk,
        a.student_user.pk,
        "task_assignment",
    )
    assert event.processed_at is not None and event.delivery_method == ["websocket"]
    assert event.event_payload["title"] == {"en": "Homework", "uz": "Uy vazifasi"}
    (message,) = listener.receive_all()
    assert message == {
        "type": "realtime.broadcast",
        "topic": topic,
        "event": "task_assignment",
        "payload": event.event_payload,
        "meta": {"id": event.seq},
        "sender": None,
    }


def test_group_scope_reaches_the_attendance_topic_and_enrolled_students(
    schools, client_for, django_capture_on_commit_callbacks
):
    a = schools.a
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(a.admin_user).post(
            "/api/realtime/broadcast",
            request_body("group", [a.group.pk], eventType="ranking_update"),
            format="json",
        )
    assert response.status_code == 201, response.json()
    assert response.json()["events"][0]["topics"] == [
        f"attendance:org_{a.org.pk}:group_{a.group.pk}",
        f"rankings:org_{a.org.pk}:student_{a.student.pk}",
    ]


def test_organization_scope_is_for_admins(schools, client_for):
    a = schools.a
    ok = client_for(a.admin_user).post("/api/realtime/broadcast", request_body("organization", []), format="json")
    assert ok.status_code == 201
    assert ok.json()["events"][0]["topics"] == [f"notifications:org_{a.org.pk}:role_all"]
    refused = client_for(a.teacher_user).post(
        "/api/realtime/broadcast", request_body("organization", []), format="json"
    )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden_scope"


@pytest.mark.parametrize(
    ("who", "scope", "target", "status", "code"),
    [
        ("student_user", "individual", "student_user", 403, "forbidden_role"),
        ("parent_user", "individual", "student_user", 403, "forbidden_role"),
        ("teacher_user", "individual", "other_student_user", 403, "forbidden_target"),
        ("outsider_user", "group", "group", 403, "forbidden_target"),
        ("teacher_user", "individual", "b:student_user", 400, "unknown_target"),
        ("admin_user", "group", "b:group", 400, "unknown_target"),
        ("admin_user", "individual", "parent_user", 400, "target_has_no_topic"),
        ("admin_user", "individual", None, 400, "missing_targets"),
        ("admin_user", "organization", "b:org", 400, "unknown_target"),
    ],
)
def test_refusals_store_nothing(schools, client_for, who, scope, target, status, code):
    a, b = schools.a, schools.b
    if target is None:
        ids = []
    elif target.startswith("b:"):
        ids = [getattr(b, target[2:]).pk]
    else:
        ids = [getattr(a, target).pk]
    response = client_for(getattr(a, who)).post("/api/realtime/broadcast", request_body(scope, ids), format="json")
    assert response.status_code == status, response.json()
    assert response.json()["error"]["code"] == code
    with dangerously_platform_context():
        assert not RealtimeEvent.objects.filter(event_metadata__source="broadcast_api").exists()


def test_one_bad_target_refuses_the_whole_request(schools, client_for):
    a = schools.a
    body = request_body("individual", [a.student_user.pk, uuid.uuid4()])
    response = client_for(a.admin_user).post("/api/realtime/broadcast", body, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "unknown_target"
    with dangerously_platform_context():
        assert not RealtimeEvent.objects.filter(event_metadata__source="broadcast_api").exists()


@pytest.mark.parametrize(
    "change",
    [
        {"eventType": "party"},
        {"targetScope": "system"},
        {"payload": {"title": {"uz": "no english"}, "content": {"en": "x"}}},
        {"delivery": {"priority": "urgent", "methods": ["websocket"]}},
        {"delivery": {"priority": "low", "methods": []}},
        {"cultural": {}},
        {"targetIds": ["not-a-uuid"]},
    ],
)
def test_invalid_bodies_are_400(schools, client_for, change):
    a = schools.a
    response = client_for(a.admin_user).post(
        "/api/realtime/broadcast", request_body("individual", [a.student_user.pk], **change), format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] in ("validation_error", "unknown_target")


def test_expired_and_scheduled_deliveries(schools, client_for, django_capture_on_commit_callbacks):
    a = schools.a
    past = (timezone.now() - timedelta(minutes=1)).isoformat()
    body = request_body("individual", [a.student_user.pk], delivery={"priority": "low", "methods": ["websocket"]})
    body["delivery"]["expiresAt"] = past
    expired = client_for(a.admin_user).post("/api/realtime/broadcast", body, format="json")
    assert expired.status_code == 400 and expired.json()["error"]["code"] == "already_expired"

    listener = Listener(f"tasks:org_{a.org.pk}:student_{a.student.pk}")
    body["delivery"] = {"priority": "low", "methods": ["push_notification"]}
    body["delivery"]["scheduledFor"] = (timezone.now() + timedelta(hours=1)).isoformat()
    with django_capture_on_commit_callbacks(execute=True):
        scheduled = client_for(a.admin_user).post("/api/realtime/broadcast", body, format="json")
    assert scheduled.status_code == 201
    with dangerously_platform_context():
        event = RealtimeEvent.objects.get(pk=scheduled.json()["events"][0]["id"])
    # Left for the listener to deliver when due.
    assert event.processed_at is None and event.delivery_status == "pending"
    assert listener.receive_all() == []


def test_unauthenticated_is_401(api):
    assert api.post("/api/realtime/broadcast", {}, format="json").status_code == 401


# -- supabase-js REST fallback -------------------------------------------------------------------


def test_realtime_v1_broadcast_fans_out_and_answers_202(schools, token_for, api, django_capture_on_commit_callbacks):
    a = schools.a
    topic = f"attendance:org_{a.org.pk}:group_{a.group.pk}"
    listener = Listener(topic)
    body = {"messages": [{"topic": topic, "event": "row_focus", "payload": {"s": 1}, "private": False}]}
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/realtime/v1/api/broadcast",
            body,
            format="json",
            HTTP_APIKEY="anon",
            HTTP_AUTHORIZATION=f"Bearer {token_for(a.teacher_user)}",
        )
    assert response.status_code == 202
    (message,) = listener.receive_all()
    assert (message["topic"], message["event"], message["payload"], message["sender"]) == (
        topic,
        "row_focus",
        {"s": 1},
        None,
    )
    assert message["meta"] == {"sender": {"user_id": str(a.teacher_user.pk), "role": "teacher"}}


def test_realtime_v1_broadcast_accepts_the_jwt_as_apikey_and_http_send_form(
    schools, token_for, api, django_capture_on_commit_callbacks
):
    a = schools.a
    topic = f"attendance:org_{a.org.pk}:group_{a.group.pk}"
    listener = Listener(topic)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"/realtime/v1/api/broadcast/{topic}/events/ping",
            {"x": 2},
            format="json",
            HTTP_APIKEY=token_for(a.admin_user),
        )
    assert response.status_code == 202
    assert [(m["event"], m["payload"]) for m in listener.receive_all()] == [("ping", {"x": 2})]


def test_realtime_v1_broadcast_refusals(schools, token_for, api, settings):
    a, b = schools.a, schools.b
    foreign = f"attendance:org_{b.org.pk}:group_{b.group.pk}"
    own = f"attendance:org_{a.org.pk}:group_{a.group.pk}"
    auth = {"HTTP_APIKEY": "anon", "HTTP_AUTHORIZATION": f"Bearer {token_for(a.teacher_user)}"}
    denied = api.post(
        "/realtime/v1/api/broadcast",
        {"messages": [{"topic": own, "event": "e", "payload": {}}, {"topic": foreign, "event": "e", "payload": {}}]},
        format="json",
        **auth,
    )
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden_topic"
    big = {"messages": [{"topic": own, "event": "e", "payload": {"b": "x" * 70000}}]}
    too_big = api.post("/realtime/v1/api/broadcast", big, format="json", **auth)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_size_exceeded"
    assert api.post("/realtime/v1/api/broadcast", {"messages": []}, format="json", **auth).status_code == 400
    assert api.post("/realtime/v1/api/broadcast", {}, format="json", HTTP_APIKEY="anon").status_code == 401
    settings.REALTIME_API_KEY = "server-key"
    wrong_key = api.post("/realtime/v1/api/broadcast", {"messages": []}, format="json", **auth)
    assert wrong_key.status_code == 401 and wrong_key.json()["error"]["code"] == "invalid_apikey"


def _pushes_for(event_id) -> list:
    from notifications.models import PushNotification

    with dangerously_platform_context():
        return list(PushNotification.objects.filter(realtime_event_id=event_id).order_by("target_user_id"))


def test_push_notification_method_creates_pushes_for_the_student_and_family(schools, client_for):
    a = schools.a
    body = request_body("individual", [a.student_user.pk])
    body["delivery"]["methods"] = ["websocket", "push_notification"]
    body["cultural"]["familyNotificationRequired"] = True
    response = client_for(a.teacher_user).post("/api/realtime/broadcast", body, format="json")
    assert response.status_code == 201, response.json()
    (result,) = response.json()["events"]
    pushes = _pushes_for(result["id"])
    assert {p.target_user_id for p in pushes} == {a.student_user.pk, a.parent_user.pk}
    for push in pushes:
        assert (push.notification_type, push.priority, push.title_en, push.title_uz, push.body_en) == (
            "task_assigned",
            "high",
            "Homework",
            "Uy vazifasi",
            "Read p. 5",
        )
        assert push.organization_id == a.org.pk and push.prayer_time_aware


def test_push_notification_method_for_a_group_reaches_its_students_only(schools, client_for):
    a = schools.a
    body = request_body("group", [a.group.pk], eventType="teacher_message")
    body["delivery"] = {"priority": "critical", "methods": ["push_notification"]}
    response = client_for(a.teacher_user).post("/api/realtime/broadcast", body, format="json")
    assert response.status_code == 201, response.json()
    pushes = _pushes_for(response.json()["events"][0]["id"])
    assert [(p.target_user_id, p.notification_type, p.priority) for p in pushes] == [
        (a.student_user.pk, "teacher_message", "urgent")
    ]


def test_websocket_only_broadcast_creates_no_push(schools, client_for):
    a = schools.a
    response = client_for(a.teacher_user).post(
        "/api/realtime/broadcast", request_body("individual", [a.student_user.pk]), format="json"
    )
    assert response.status_code == 201
    assert _pushes_for(response.json()["events"][0]["id"]) == []
