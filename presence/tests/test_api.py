"""The REST lifecycle: connect, disconnect, subscribe, unsubscribe, presence."""

import uuid

import pytest
from django.test import override_settings

from events.models import RealtimeSubscription
from harry_realtime.tenancy import dangerously_platform_context
from presence.models import RealtimePresence
from syncqueue.models import OfflineSyncOperation

pytestmark = pytest.mark.django_db

CONNECT = "/api/realtime/connect"
DISCONNECT = "/api/realtime/disconnect"
SUBSCRIBE = "/api/realtime/subscribe"
PRESENCE = "/api/realtime/presence"


def connect_body(device="phone-1", types=("dashboard", "attendance", "notifications"), **extra):
    return {
        "deviceId": device,
        "platform": "android",
        "appVersion": "1.4.0",
        "subscriptionTypes": list(types),
        "culturalPreferences": {"language": "uz", "islamicCalendarEnabled": True},
        "performanceMode": "battery_saver",
        **extra,
    }


def connect(client, **kwargs):
    response = client.post(CONNECT, connect_body(**kwargs), format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def rows(**filters):
    with dangerously_platform_context():
        return list(RealtimeSubscription.objects.filter(**filters).order_by("channel_name"))


def presence(user, device):
    with dangerously_platform_context():
        return RealtimePresence.objects.filter(user=user, device_id=device).first()


# --- connect ---


def test_teacher_connect_registers_rows_and_returns_their_channels(schools, client_for):
    a = schools.a
    body = connect(client_for(a.teacher_user), networkType="wifi", batteryLevel=42)
    org = a.org.pk
    assert body["success"] is True
    assert body["websocketUrl"] == "ws://testserver/realtime/v1/websocket?vsn=2.0.0"
    assert body["heartbeatInterval"] == 120_000  # battery_saver
    assert body["offlineCapabilities"]["maxQueueSize"] == 1000
    cultural = body["culturalContext"]
    assert set(cultural) >= {"nextPrayerTime", "ramadanMode", "islamicDate"}
    assert isinstance(cultural["ramadanMode"], bool) and cultural["islamicDate"]
    assert body["subscriptionChannels"] == [
        f"notifications:org_{org}:role_all",
        f"notifications:org_{org}:role_teacher",
        f"groups:org_{org}:teacher_{a.teacher.pk}",
        f"attendance:org_{org}:group_{a.group.pk}",
    ]
    stored = rows(session_id=body["connectionId"])
    assert sorted(r.channel_name for r in stored) == sorted(body["subscriptionChannels"])
    row = next(r for r in stored if r.channel_name.startswith("attendance:"))
    assert (row.subscription_type, row.connection_status, row.platform) == ("attendance", "connected", "android")
    assert (row.network_type, row.battery_level, row.performance_mode) == ("wifi", 42, "battery_saver")
    assert row.cultural_preferences["language"] == "uz"
    assert row.target_entities == [str(a.group.pk)]
    online = presence(a.teacher_user, "phone-1")
    assert (online.status, online.platform, online.app_version) == ("online", "android", "1.4.0")


def test_student_dashboard_channels_are_their_own_student_topics(schools, client_for):
    a = schools.a
    body = connect(client_for(a.student_user), types=["dashboard"])
    org = a.org.pk
    assert f"rankings:org_{org}:student_{a.student.pk}" in body["subscriptionChannels"]
    assert f"tasks:org_{org}:student_{a.student.pk}" in body["subscriptionChannels"]
    assert not any(str(a.other_student.pk) in c for c in body["subscriptionChannels"])
    assert not any(str(schools.b.org.pk) in c for c in body["subscriptionChannels"])


def test_reconnecting_device_replaces_its_previous_session(schools, client_for):
    client = client_for(schools.a.teacher_user)
    first = connect(client)
    second = connect(client)
    assert first["connectionId"] != second["connectionId"]
    assert {r.connection_status for r in rows(session_id=first["connectionId"])} == {"disconnected"}
    assert {r.connection_status for r in rows(session_id=second["connectionId"])} == {"connected"}


@override_settings(REALTIME_MAX_CONNECTIONS_PER_USER=2)
def test_connection_limit_per_user_refuses_another_device(schools, client_for):
    client = client_for(schools.a.teacher_user)
    connect(client, device="d1")
    connect(client, device="d2")
    before = len(rows(user=schools.a.teacher_user))
    response = client.post(CONNECT, connect_body(device="d3"), format="json")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "too_many_connections"
    assert len(rows(user=schools.a.teacher_user)) == before
    assert presence(schools.a.teacher_user, "d3") is None


@override_settings(REALTIME_MAX_CHANNELS_PER_CONNECTION=2)
def test_channels_beyond_the_per_connection_limit_are_reported_not_stored(schools, client_for):
    body = connect(client_for(schools.a.teacher_user))
    assert len(body["subscriptionChannels"]) == 2
    assert len(body["omittedChannels"]) == 2
    assert len(rows(session_id=body["connectionId"])) == 2


@pytest.mark.parametrize(
    "change",
    [
        {"deviceId": ""},
        {"platform": "windows"},
        {"subscriptionTypes": ["bogus"]},
        {"batteryLevel": 150},
        {"performanceMode": "turbo"},
        {"culturalPreferences": {"language": "fr"}},
    ],
)
def test_connect_bad_input_is_refused_and_writes_nothing(schools, client_for, change):
    response = client_for(schools.a.teacher_user).post(CONNECT, {**connect_body(), **change}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert rows(user=schools.a.teacher_user) == []


def test_connect_needs_a_token(schools, api):
    response = api.post(CONNECT, connect_body(), format="json")
    assert response.status_code == 401


# --- disconnect ---


def test_disconnect_closes_the_session_and_takes_presence_offline(schools, client_for):
    a = schools.a
    client = client_for(a.teacher_user)
    body = connect(client)
    with dangerously_platform_context():
        OfflineSyncOperation.objects.create(
            organization=a.org,
            user=a.teacher_user,
            device_id="phone-1",
            operation_id="op-1",
            operation_type="UPDATE",
            table_name="attendance",
            record_id=a.attendance.pk,
            new_data={"status": "late"},
            local_timestamp="2026-01-01T00:00:00Z",
        )
    response = client.post(
        DISCONNECT,
        {"connectionId": body["connectionId"], "reason": "user_logout", "syncPendingData": True},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["pendingSyncOperations"] == 1
    assert {r.connection_status for r in rows(session_id=body["connectionId"])} == {"disconnected"}
    assert presence(a.teacher_user, "phone-1").status == "offline"


def test_disconnect_for_prayer_shows_the_user_at_prayer(schools, client_for):
    client = client_for(schools.a.teacher_user)
    body = connect(client)
    client.post(DISCONNECT, {"connectionId": body["connectionId"], "reason": "prayer_time"}, format="json")
    assert presence(schools.a.teacher_user, "phone-1").status == "prayer"


def test_disconnect_of_another_schools_connection_is_not_found(schools, client_for):
    theirs = connect(client_for(schools.b.teacher_user))
    response = client_for(schools.a.teacher_user).post(
        DISCONNECT, {"connectionId": theirs["connectionId"], "reason": "user_logout"}, format="json"
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "connection_not_found"
    assert {r.connection_status for r in rows(session_id=theirs["connectionId"])} == {"connected"}


@pytest.mark.parametrize("body", [{"connectionId": "nope", "reason": "user_logout"}, {"reason": "user_logout"}])
def test_disconnect_bad_input(schools, client_for, body):
    response = client_for(schools.a.teacher_user).post(DISCONNECT, body, format="json")
    assert response.status_code == 400


def test_disconnect_bad_reason(schools, client_for):
    body = connect(client_for(schools.a.teacher_user))
    response = client_for(schools.a.teacher_user).post(
        DISCONNECT, {"connectionId": body["connectionId"], "reason": "bored"}, format="json"
    )
    assert response.status_code == 400
    assert {r.connection_status for r in rows(session_id=body["connectionId"])} == {"connected"}


# --- subscribe / unsubscribe ---


def subscribe(client, connection_id, kind, **targets):
    return client.post(
        SUBSCRIBE,
        {
            "connectionId": connection_id,
            "subscriptionType": kind,
            "targetEntities": targets,
            "offlineSettings": {"bufferEvents": True},
        },
        format="json",
    )


def test_subscribe_adds_an_authorized_channel_to_the_connection(schools, client_for):
    a = schools.a
    client = client_for(a.teacher_user)
    body = connect(client, types=["notifications"])
    response = subscribe(client, body["connectionId"], "tasks", studentIds=[str(a.student.pk)])
    assert response.status_code == 201, response.json()
    (sub,) = response.json()["subscriptions"]
    assert sub["channel"] == f"tasks:org_{a.org.pk}:student_{a.student.pk}"
    (row,) = rows(pk=sub["subscriptionId"])
    assert (row.session_id, row.device_id, row.platform) == (body["connectionId"], "phone-1", "android")
    assert row.subscription_filters["offlineSettings"]["bufferEvents"] is True
    again = subscribe(client, body["connectionId"], "tasks", studentIds=[str(a.student.pk)])
    assert again.json()["subscriptions"][0]["subscriptionId"] == sub["subscriptionId"]


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        ({"filters": {"eventTypes": ["attendance_sync"]}}, ["filters.eventTypes"]),
        ({"filters": {"priority": ["high"], "cultural": {}}}, ["filters.priority", "filters.cultural"]),
        ({"offlineSettings": {"bufferEvents": False}}, ["offlineSettings.bufferEvents"]),
        (
            {"offlineSettings": {"bufferEvents": True, "maxBufferSize": 100, "priorityThreshold": 3}},
            ["offlineSettings.maxBufferSize", "offlineSettings.priorityThreshold"],
        ),
    ],
)
def test_subscribe_refuses_options_it_would_not_apply(schools, client_for, extra, refused):
    a = schools.a
    client = client_for(a.teacher_user)
    body = connect(client, types=["notifications"])
    before = len(rows(session_id=body["connectionId"]))
    request = {
        "connectionId": body["connectionId"],
        "subscriptionType": "tasks",
        "targetEntities": {"studentIds": [str(a.student.pk)]},
        **extra,
    }
    response = client.post(SUBSCRIBE, request, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["details"]["options"]) == ("unsupported_option", refused)
    assert len(rows(session_id=body["connectionId"])) == before


def test_unsubscribe_refuses_flush_buffer_and_keeps_the_subscription(schools, client_for):
    a = schools.a
    client = client_for(a.teacher_user)
    body = connect(client)
    mine = rows(session_id=body["connectionId"])[0]
    response = client.delete(
        f"{SUBSCRIBE}/{mine.pk}", {"connectionId": body["connectionId"], "flushBuffer": True}, format="json"
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, "unsupported_option")
    assert rows(pk=mine.pk)


def test_dashboard_subscription_for_a_student_gives_rankings_and_tasks(schools, client_for):
    a = schools.a
    client = client_for(a.parent_user)
    body = connect(client, types=[])
    response = subscribe(client, body["connectionId"], "dashboard", studentIds=[str(a.student.pk)])
    assert response.status_code == 201, response.json()
    assert [s["subscriptionType"] for s in response.json()["subscriptions"]] == ["rankings", "tasks"]


@pytest.mark.parametrize("target", ["other_school_group", "unrelated_group"])
def test_subscribe_to_a_group_the_user_may_not_watch_is_refused(schools, client_for, target):
    a = schools.a
    group = schools.b.group if target == "other_school_group" else a.other_group
    client = client_for(a.teacher_user)
    body = connect(client, types=[])
    before = len(rows(session_id=body["connectionId"]))
    response = subscribe(client, body["connectionId"], "attendance", groupIds=[str(group.pk)])
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "topic_denied"
    assert len(rows(session_id=body["connectionId"])) == before


def test_subscribe_refuses_mismatched_and_missing_targets(schools, client_for):
    client = client_for(schools.a.teacher_user)
    body = connect(client, types=[])
    wrong = subscribe(client, body["connectionId"], "rankings", teacherIds=[str(schools.a.teacher.pk)])
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (400, "unsupported_target")
    empty = subscribe(client, body["connectionId"], "attendance")
    assert (empty.status_code, empty.json()["error"]["code"]) == (400, "no_targets")
    bad_id = subscribe(client, body["connectionId"], "attendance", groupIds=["not-a-uuid"])
    assert (bad_id.status_code, bad_id.json()["error"]["code"]) == (400, "validation_error")


def test_subscribe_on_another_users_connection_is_not_found(schools, client_for):
    theirs = connect(client_for(schools.b.teacher_user))
    response = subscribe(
        client_for(schools.a.teacher_user), theirs["connectionId"], "attendance", groupIds=[str(schools.a.group.pk)]
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "connection_not_found"


@override_settings(REALTIME_MAX_CHANNELS_PER_CONNECTION=2)
def test_subscribe_beyond_the_channel_limit_is_refused(schools, client_for):
    client = client_for(schools.a.teacher_user)
    body = connect(client, types=[])
    response = subscribe(client, body["connectionId"], "attendance", groupIds=[str(schools.a.group.pk)])
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "channel_limit_reached"


def test_unsubscribe_removes_only_the_callers_subscription(schools, client_for):
    a, b = schools.a, schools.b
    client = client_for(a.teacher_user)
    body = connect(client)
    mine = rows(session_id=body["connectionId"])[0]
    theirs = rows(session_id=connect(client_for(b.teacher_user))["connectionId"])[0]
    response = client.delete(f"{SUBSCRIBE}/{theirs.pk}", {"connectionId": body["connectionId"]}, format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "subscription_not_found")
    assert rows(pk=theirs.pk)
    wrong_connection = client.delete(f"{SUBSCRIBE}/{mine.pk}", {"connectionId": str(uuid.uuid4())}, format="json")
    assert wrong_connection.status_code == 404
    response = client.delete(f"{SUBSCRIBE}/{mine.pk}", {"connectionId": body["connectionId"]}, format="json")
    assert response.status_code == 200
    assert rows(pk=mine.pk) == []
    assert client.delete(f"{SUBSCRIBE}/not-a-uuid").status_code == 404


# --- presence ---


def track(user, device, **fields):
    from harry_realtime.tenancy import Tenant, tenant_context
    from presence import sockets

    with tenant_context(Tenant(user.organization_id, user.pk, user.role)):
        sockets.presence_tracked(user=user, device_id=device, meta=fields)


def test_group_presence_lists_who_is_online_there_with_activity(schools, client_for, co_teacher_for):
    a = schools.a
    colleague = co_teacher_for(a, "colleague")
    track(a.teacher_user, "t1", activity="marking_attendance", groupId=str(a.group.pk), status="in_class")
    track(colleague, "t2", activity="reviewing", groupId=str(a.group.pk))
    track(a.admin_user, "a1", activity="dashboard")
    track(schools.b.teacher_user, "b1", groupId=str(schools.b.group.pk))
    response = client_for(a.teacher_user).get(PRESENCE, {"group": str(a.group.pk)})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["onlineUsers"] == 2
    seen = {p["userId"]: p for p in body["presence"]}
    assert seen[str(a.teacher_user.pk)]["activity"] == "marking_attendance"
    assert seen[str(a.teacher_user.pk)]["status"] == "in_class"
    assert seen[str(colleague.pk)]["groupId"] == str(a.group.pk)


def test_organization_presence_is_staff_only_and_stays_in_the_school(schools, client_for):
    a = schools.a
    track(a.student_user, "s1", activity="homework")
    track(schools.b.teacher_user, "b1", activity="grading")
    response = client_for(a.admin_user).get(PRESENCE, {"scope": "organization"})
    assert response.status_code == 200
    assert [p["userId"] for p in response.json()["presence"]] == [str(a.student_user.pk)]
    denied = client_for(a.student_user).get(PRESENCE, {"scope": "organization"})
    assert (denied.status_code, denied.json()["error"]["code"]) == (403, "forbidden")


def test_group_presence_refuses_other_schools_and_unrelated_users(schools, client_for):
    a = schools.a
    other_school = client_for(a.teacher_user).get(PRESENCE, {"group": str(schools.b.group.pk)})
    assert (other_school.status_code, other_school.json()["error"]["code"]) == (404, "group_not_found")
    outsider = client_for(a.outsider_user).get(PRESENCE, {"group": str(a.group.pk)})
    assert outsider.status_code == 403
    student_elsewhere = client_for(a.other_student_user).get(PRESENCE, {"group": str(a.group.pk)})
    assert student_elsewhere.status_code == 403
    enrolled = client_for(a.student_user).get(PRESENCE, {"group": str(a.group.pk)})
    assert enrolled.status_code == 200


@pytest.mark.parametrize(
    "params", [{}, {"scope": "school"}, {"group": "x"}, {"group": str(uuid.uuid4()), "scope": "organization"}]
)
def test_presence_bad_query(schools, client_for, params):
    response = client_for(schools.a.admin_user).get(PRESENCE, params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_offline_and_expired_presence_is_not_listed(schools, client_for):
    a = schools.a
    track(a.teacher_user, "t1", groupId=str(a.group.pk), status="offline")
    track(a.admin_user, "a1", groupId=str(a.group.pk))
    with dangerously_platform_context():
        RealtimePresence.objects.filter(device_id="a1").update(expires_at="2020-01-01T00:00:00Z")
    response = client_for(a.admin_user).get(PRESENCE, {"group": str(a.group.pk)})
    assert response.json()["presence"] == []


@pytest.mark.parametrize(
    ("extra", "interval"),
    [
        ({"performanceMode": "standard"}, 25_000),
        ({"performanceMode": "standard", "appState": "background"}, 120_000),
        ({}, 120_000),  # battery_saver
        ({"batteryLevel": 15, "networkType": "cellular"}, 300_000),
    ],
)
def test_connect_answers_the_heartbeat_interval_of_the_profile(schools, client_for, extra, interval):
    body = connect(client_for(schools.a.teacher_user), **extra)
    assert body["heartbeatInterval"] == interval
    assert body["idleTimeout"] == pytest.approx(interval * 2.4)
    assert {r.heartbeat_interval_ms for r in rows(session_id=body["connectionId"])} == {interval}


def test_connect_refuses_an_unknown_app_state(schools, client_for):
    response = client_for(schools.a.teacher_user).post(CONNECT, connect_body(appState="asleep"), format="json")
    assert response.status_code == 400 and "appState" in response.json()["error"]["details"]
