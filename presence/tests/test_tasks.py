"""Expiry (Celery beat): silent connections, expired presences, day-old subscriptions."""

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from events.models import RealtimeSubscription
from events.profiles import ConnectionProfile
from events.topics import attendance_topic
from harry_realtime.tenancy import Tenant, dangerously_platform_context, tenant_context
from presence import services, state, tasks
from presence.models import RealtimePresence

pytestmark = pytest.mark.django_db


def as_tenant(user):
    return tenant_context(Tenant(user.organization_id, user.pk, user.role))


def register(user, device):
    with as_tenant(user):
        return services.connection_register(
            user=user,
            device_id=device,
            platform="ios",
            app_version="2.0",
            subscription_types=["attendance"],
            cultural_preferences={},
            profile=ConnectionProfile(performance_mode="standard"),
        )


def subs(**filters):
    with dangerously_platform_context():
        return list(RealtimeSubscription.objects.filter(**filters))


def presence_of(user, device):
    with dangerously_platform_context():
        return RealtimePresence.objects.get(user=user, device_id=device)


def age(model, minutes, field, **filters):
    with dangerously_platform_context():
        model.objects.filter(**filters).update(**{field: timezone.now() - timedelta(minutes=minutes)})


def test_silent_connections_are_disconnected_and_their_presence_goes_offline(schools):
    a, b = schools.a, schools.b
    silent = register(a.teacher_user, "silent-phone")
    alive = register(a.teacher_user, "alive-phone")
    other_school = register(b.teacher_user, "b-phone")
    age(RealtimeSubscription, 10, "last_heartbeat", session_id=silent.connection_id)
    result = tasks.expire_presence()
    assert result["connections_disconnected"] == len(silent.channels)
    assert {s.connection_status for s in subs(session_id=silent.connection_id)} == {"disconnected"}
    assert presence_of(a.teacher_user, "silent-phone").status == "offline"
    assert {s.connection_status for s in subs(session_id=alive.connection_id)} == {"connected"}
    assert presence_of(a.teacher_user, "alive-phone").status == "online"
    assert {s.connection_status for s in subs(session_id=other_school.connection_id)} == {"connected"}
    assert presence_of(b.teacher_user, "b-phone").status == "online"


def test_expired_presence_goes_offline_and_leaves_its_topics(schools, listen):
    a = schools.a
    connection = register(a.teacher_user, "phone")
    topic = attendance_topic(a.org.pk, a.group.pk)
    with dangerously_platform_context():
        RealtimeSubscription.objects.filter(session_id=connection.connection_id).update(websocket_id="ws-gone")
    async_to_sync(state.track)(
        topic=topic,
        presence_key="teacher",
        meta={"activity": "marking_attendance"},
        user_id=str(a.teacher_user.pk),
        organization_id=str(a.org.pk),
        connection="ws-gone",
    )
    async_to_sync(state.track)(
        topic=topic,
        presence_key="colleague",
        meta={},
        user_id=str(a.admin_user.pk),
        organization_id=str(a.org.pk),
        connection="ws-other",
    )
    listener = listen(topic)
    age(RealtimePresence, 1, "expires_at", user=a.teacher_user)
    result = tasks.expire_presence()
    assert result["presences_offline"] == 1
    assert result["socket_presences_dropped"] == 1
    assert presence_of(a.teacher_user, "phone").status == "offline"
    assert [e["key"] for e in async_to_sync(state.entries)(topic)] == ["colleague"]
    (diff,) = listener.receive_all()
    assert diff["type"] == "realtime.presence_diff"
    assert list(diff["leaves"]) == ["teacher"]


def test_subscriptions_past_their_lifetime_are_removed(schools):
    a = schools.a
    old = register(a.teacher_user, "old")
    fresh = register(a.admin_user, "fresh")
    age(RealtimeSubscription, 1, "expires_at", session_id=old.connection_id)
    result = tasks.expire_presence()
    assert result["subscriptions_expired"] == len(old.channels)
    assert subs(session_id=old.connection_id) == []
    assert len(subs(session_id=fresh.connection_id)) == len(fresh.channels)


def test_nothing_to_expire_changes_nothing(schools):
    register(schools.a.teacher_user, "phone")
    assert tasks.expire_presence() == {
        "connections_disconnected": 0,
        "presences_offline": 0,
        "socket_presences_dropped": 0,
        "subscriptions_expired": 0,
    }
