"""The socket-side services the mirror calls, and the tracked-meta mapping."""

import uuid

import pytest

from events.models import RealtimeSubscription
from events.profiles import ConnectionProfile
from harry_realtime.tenancy import Tenant, dangerously_platform_context, tenant_context
from presence import services, sockets
from presence.models import RealtimePresence

pytestmark = pytest.mark.django_db


def run(user, service, **kwargs):
    with tenant_context(Tenant(user.organization_id, user.pk, user.role)):
        return service(user=user, **kwargs)


def rows(**filters):
    with dangerously_platform_context():
        return list(RealtimeSubscription.objects.filter(**filters))


def presence(user, device):
    with dangerously_platform_context():
        return RealtimePresence.objects.get(user=user, device_id=device)


def test_a_socket_binds_to_the_rest_connection_it_names(schools):
    a = schools.a
    connection = run(
        a.teacher_user,
        services.connection_register,
        device_id="phone",
        platform="ios",
        app_version="1",
        subscription_types=["attendance"],
        cultural_preferences={},
        profile=ConnectionProfile(performance_mode="standard"),
    )
    session, device, stored = run(
        a.teacher_user, sockets.socket_opened, websocket_id="ws-1", connection_id=connection.connection_id
    )
    assert (session, device, stored) == (connection.connection_id, "phone", ConnectionProfile())
    assert {r.websocket_id for r in rows(session_id=session)} == {"ws-1"}
    by_device = run(a.teacher_user, sockets.socket_opened, websocket_id="ws-2", device_id="phone")
    assert by_device == (connection.connection_id, "phone", ConnectionProfile())


def test_another_users_connection_id_is_not_bound(schools):
    a, b = schools.a, schools.b
    theirs = run(
        b.teacher_user,
        services.connection_register,
        device_id="b-phone",
        platform="ios",
        app_version="1",
        subscription_types=[],
        cultural_preferences={},
        profile=ConnectionProfile(performance_mode="standard"),
    )
    session, device, _ = run(
        a.teacher_user, sockets.socket_opened, websocket_id="ws", connection_id=theirs.connection_id
    )
    assert session != theirs.connection_id and device == f"socket-{session}"
    assert {r.websocket_id for r in rows(session_id=theirs.connection_id)} == {None}


def test_join_heartbeat_leave_and_close_keep_rows_true(schools):
    a = schools.a
    user = a.teacher_user
    session, device, _ = run(user, sockets.socket_opened, websocket_id="ws", device_id="tablet", platform="web")
    topic = f"attendance:org_{a.org.pk}:group_{a.group.pk}"
    run(user, sockets.socket_joined, session_id=session, device_id=device, websocket_id="ws", topic=topic)
    (row,) = rows(session_id=session)
    assert (row.channel_name, row.subscription_type, row.connection_status) == (topic, "attendance", "connected")
    before = row.last_heartbeat
    run(user, sockets.socket_heartbeat, session_id=session, device_id=device)
    (row,) = rows(session_id=session)
    assert row.last_heartbeat > before
    run(user, sockets.socket_left, session_id=session, topic=topic)
    assert rows(session_id=session) == []
    run(user, sockets.socket_joined, session_id=session, device_id=device, websocket_id="ws", topic=topic)
    run(user, sockets.socket_closed, session_id=session, device_id=device)
    assert {r.connection_status for r in rows(session_id=session)} == {"disconnected"}
    assert presence(user, "tablet").status == "offline"


def test_closing_one_session_keeps_the_device_online_while_another_is_live(schools):
    user = schools.a.teacher_user
    topic = f"notifications:org_{schools.a.org.pk}:role_all"
    first, _, _ = run(user, sockets.socket_opened, websocket_id="ws-1", device_id="laptop")
    second = str(uuid.uuid4())
    run(user, sockets.socket_joined, session_id=first, device_id="laptop", websocket_id="ws-1", topic=topic)
    run(user, sockets.socket_joined, session_id=second, device_id="laptop", websocket_id="ws-2", topic=topic)
    run(user, sockets.socket_closed, session_id=first, device_id="laptop")
    assert presence(user, "laptop").status == "online"
    run(user, sockets.socket_closed, session_id=second, device_id="laptop")
    assert presence(user, "laptop").status == "offline"


def test_tracked_meta_maps_to_columns_and_drops_values_outside_the_checks(schools):
    a = schools.a
    topic = f"attendance:org_{a.org.pk}:group_{a.group.pk}"
    fields = sockets.presence_fields_from_meta(
        {
            "status": "in_class",
            "activity": "marking_attendance",
            "currentScreen": "attendance",
            "connectionQuality": "superb",
            "currentPrayer": "asr",
            "lessonId": "not-a-uuid",
            "teacherId": "ignored",
        },
        topic=topic,
    )
    assert fields == {
        "status": "in_class",
        "activity": "marking_attendance",
        "current_screen": "attendance",
        "current_prayer": "asr",
        "current_group_id": str(a.group.pk),
    }
    run(
        a.teacher_user,
        sockets.presence_tracked,
        device_id="p",
        meta={"status": "nonsense", "groupId": str(schools.b.group.pk)},
    )
    row = presence(a.teacher_user, "p")
    assert (row.status, row.current_group_id) == ("online", None)
    run(a.teacher_user, sockets.presence_tracked, device_id="p", meta={"status": "busy"}, topic=topic)
    row = presence(a.teacher_user, "p")
    assert (row.status, str(row.current_group_id)) == ("busy", str(a.group.pk))
    run(a.teacher_user, sockets.presence_untracked, device_id="p")
    row = presence(a.teacher_user, "p")
    assert (row.status, row.current_group_id, row.activity) == ("busy", None, None)


def test_expiry_gives_each_connection_the_timeout_of_its_heartbeat_interval(schools):
    from datetime import timedelta

    from django.utils import timezone

    from presence.expiry import presence_expire

    user = schools.a.teacher_user
    register = dict(platform="ios", app_version="1", subscription_types=["attendance"], cultural_preferences={})
    foreground = run(user, services.connection_register, device_id="fg", profile=ConnectionProfile(), **register)
    low = ConnectionProfile(battery_level=9)
    saver = run(user, services.connection_register, device_id="low", profile=low, **register)
    assert {r.heartbeat_interval_ms for r in rows(session_id=saver.connection_id)} == {300_000}
    with dangerously_platform_context():
        RealtimeSubscription.objects.filter(user=user).update(last_heartbeat=timezone.now() - timedelta(seconds=400))
    presence_expire()
    assert {r.connection_status for r in rows(session_id=foreground.connection_id)} == {"disconnected"}  # > 150 s
    assert {r.connection_status for r in rows(session_id=saver.connection_id)} == {"connected"}  # < 1,800 s
    with dangerously_platform_context():
        RealtimeSubscription.objects.filter(user=user).update(last_heartbeat=timezone.now() - timedelta(seconds=1900))
    presence_expire()
    assert {r.connection_status for r in rows(session_id=saver.connection_id)} == {"disconnected"}


def test_a_long_idle_timeout_keeps_the_presence_between_heartbeats(schools):
    user = schools.a.teacher_user
    session, device, _ = run(user, sockets.socket_opened, websocket_id="ws", device_id="slow")
    run(user, sockets.socket_heartbeat, session_id=session, device_id=device, idle_timeout_seconds=720)
    row = presence(user, "slow")
    assert (row.expires_at - row.last_seen).total_seconds() == pytest.approx(720, abs=1)
