"""The tables follow the sockets: join, heartbeat, track, abrupt disconnect, expiry."""

import json
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from django.utils import timezone

from events.models import RealtimeSubscription
from events.profiles import ConnectionProfile
from events.routing import websocket_urlpatterns
from harry_realtime.auth import issue_access_token
from harry_realtime.tenancy import Tenant, dangerously_platform_context, tenant_context
from presence import services, tasks
from presence.models import RealtimePresence

# The consumer writes from a worker thread, so test data must be committed; only the owner alias
# may flush the tables between tests.
pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]

application = URLRouter(websocket_urlpatterns)


class Client:
    """Just enough of the Phoenix JSON protocol (vsn 1.0.0) to drive the lifecycle."""

    def __init__(self, query: str):
        self.comm = WebsocketCommunicator(application, f"/realtime/v1/websocket?apikey=anon&vsn=1.0.0&{query}")
        self.ref = 0

    async def connect(self):
        connected, _ = await self.comm.connect()
        assert connected

    async def push(self, topic, event, payload):
        reply = await self._request(topic, event, payload)
        # The socket handles frames in order and mirrors to the tables after replying (a heartbeat
        # too): once a later heartbeat is answered, this message's table writes are done.
        await self._request("phoenix", "heartbeat", {})
        return reply

    async def _request(self, topic, event, payload):
        self.ref += 1
        ref = str(self.ref)
        frame = {"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": "1"}
        await self.comm.send_to(text_data=json.dumps(frame))
        while True:
            message = json.loads(await self.comm.receive_from(3))
            if message["event"] == "phx_reply" and message["ref"] == ref:
                assert message["payload"]["status"] == "ok", message
                return message

    async def join(self, topic, user):
        payload = {"config": {"presence": {"key": str(user.pk)}}, "access_token": issue_access_token(user)}
        return await self.push(f"realtime:{topic}", "phx_join", payload)


def attendance(school):
    return f"attendance:org_{school.org.pk}:group_{school.group.pk}"


@database_sync_to_async
def rows(**filters):
    with dangerously_platform_context():
        return list(RealtimeSubscription.objects.filter(**filters).order_by("channel_name"))


@database_sync_to_async
def presence(user, device):
    with dangerously_platform_context():
        return RealtimePresence.objects.filter(user=user, device_id=device).first()


@database_sync_to_async
def register(user, device):
    with tenant_context(Tenant(user.organization_id, user.pk, user.role)):
        return services.connection_register(
            user=user,
            device_id=device,
            platform="android",
            app_version="3.1",
            subscription_types=["attendance"],
            cultural_preferences={},
            profile=ConnectionProfile(performance_mode="high_performance"),
        )


async def test_join_creates_the_subscription_and_online_presence(schools):
    a = schools.a
    client = Client("device_id=tab-1&platform=web")
    await client.connect()
    await client.join(attendance(a), a.teacher_user)
    (row,) = await rows(user=a.teacher_user)
    assert (row.channel_name, row.connection_status, row.device_id) == (attendance(a), "connected", "tab-1")
    assert (row.subscription_type, row.platform) == ("attendance", "web")
    assert row.websocket_id
    online = await presence(a.teacher_user, "tab-1")
    assert (online.status, online.platform) == ("online", "web")
    await client.push(f"realtime:{attendance(a)}", "phx_leave", {})
    assert await rows(user=a.teacher_user) == []
    await client.comm.disconnect()


async def test_socket_binds_to_its_rest_connection(schools):
    a = schools.a
    connection = await register(a.teacher_user, "phone-9")
    client = Client(f"connection_id={connection.connection_id}")
    await client.connect()
    await client.join(attendance(a), a.teacher_user)
    stored = await rows(session_id=connection.connection_id)
    assert len(stored) == len(connection.channels)
    assert len({r.websocket_id for r in stored}) == 1 and stored[0].websocket_id
    assert {r.performance_mode for r in stored} == {"high_performance"}
    await client.comm.disconnect()


@override_settings(PRESENCE_MIRROR_WRITE_SECONDS=3600)
async def test_heartbeats_are_not_written_one_by_one(schools):
    a = schools.a
    client = Client("device_id=d")
    await client.connect()
    await client.join(attendance(a), a.teacher_user)
    (before,) = await rows(user=a.teacher_user)
    for _ in range(3):
        await client.push("phoenix", "heartbeat", {})
    (after,) = await rows(user=a.teacher_user)
    assert after.last_heartbeat == before.last_heartbeat
    await client.comm.disconnect()


@override_settings(PRESENCE_MIRROR_WRITE_SECONDS=0)
async def test_a_due_heartbeat_refreshes_the_rows(schools):
    a = schools.a
    client = Client("device_id=d")
    await client.connect()
    await client.join(attendance(a), a.teacher_user)
    (before,) = await rows(user=a.teacher_user)
    seen_before = (await presence(a.teacher_user, "d")).last_seen
    await client.push("phoenix", "heartbeat", {})
    (after,) = await rows(user=a.teacher_user)
    assert after.last_heartbeat > before.last_heartbeat
    assert (await presence(a.teacher_user, "d")).last_seen > seen_before
    await client.comm.disconnect()


async def test_track_writes_activity_status_and_group(schools):
    a = schools.a
    client = Client("device_id=d")
    await client.connect()
    await client.join(attendance(a), a.teacher_user)
    meta = {"teacherId": str(a.teacher.pk), "activity": "marking_attendance", "status": "in_class"}
    await client.push(f"realtime:{attendance(a)}", "presence", {"type": "presence", "event": "track", "payload": meta})
    row = await presence(a.teacher_user, "d")
    assert (row.activity, row.status, row.current_group_id) == ("marking_attendance", "in_class", a.group.pk)
    await client.push(f"realtime:{attendance(a)}", "presence", {"type": "presence", "event": "untrack"})
    row = await presence(a.teacher_user, "d")
    assert (row.activity, row.current_group_id) == (None, None)
    await client.comm.disconnect()


async def test_abrupt_disconnect_marks_rows_disconnected_and_presence_offline(schools):
    a = schools.a
    client = Client("device_id=d")
    await client.connect()
    await client.join(attendance(a), a.teacher_user)
    await client.push(f"realtime:{attendance(a)}", "presence", {"type": "presence", "event": "track", "payload": {}})
    await client.comm.disconnect(code=1006)
    (row,) = await rows(user=a.teacher_user)
    assert row.connection_status == "disconnected"
    assert (await presence(a.teacher_user, "d")).status == "offline"


async def test_expiry_disconnects_a_socket_that_stopped_heartbeating(schools):
    a = schools.a
    client = Client("device_id=d")
    await client.connect()
    await client.join(attendance(a), a.teacher_user)

    @database_sync_to_async
    def silence_and_expire():
        with dangerously_platform_context():
            RealtimeSubscription.objects.filter(user=a.teacher_user).update(
                last_heartbeat=timezone.now() - timedelta(minutes=10)
            )
        return tasks.expire_presence()

    result = await silence_and_expire()
    assert result["connections_disconnected"] == 1
    assert result["presences_offline"] == 1
    (row,) = await rows(user=a.teacher_user)
    assert row.connection_status == "disconnected"
    assert (await presence(a.teacher_user, "d")).status == "offline"
    await client.comm.disconnect()


@database_sync_to_async
def register_profile(user, device, profile):
    with tenant_context(Tenant(user.organization_id, user.pk, user.role)):
        return services.connection_register(
            user=user,
            device_id=device,
            platform="android",
            app_version="3.1",
            subscription_types=["attendance"],
            cultural_preferences={},
            profile=profile,
        )


async def test_a_socket_without_a_profile_adopts_its_rest_connections(schools):
    a = schools.a
    connection = await register_profile(a.teacher_user, "phone", ConnectionProfile(battery_level=12))
    client = Client(f"connection_id={connection.connection_id}")
    await client.connect()
    await client.join(attendance(a), a.teacher_user)
    reply = await client.push(
        "realtime:connection:profile", "phx_join", {"access_token": issue_access_token(a.teacher_user)}
    )
    assert reply["payload"]["response"]["heartbeat_interval_ms"] == 300_000
    assert reply["payload"]["response"]["profile"]["battery_level"] == 12
    await client.comm.disconnect()


async def test_the_urls_profile_and_its_changes_are_written_to_the_connection(schools):
    a = schools.a
    connection = await register_profile(a.teacher_user, "phone", ConnectionProfile())
    client = Client(f"connection_id={connection.connection_id}&app_state=background&connection_quality=good")
    await client.connect()
    await client.join(attendance(a), a.teacher_user)
    stored = {
        (r.app_state, r.connection_quality, r.heartbeat_interval_ms)
        for r in await rows(session_id=connection.connection_id)
    }
    assert stored == {("background", "good", 120_000)}
    assert (await presence(a.teacher_user, "phone")).connection_quality == "good"
    await client.push("realtime:connection:profile", "phx_join", {"access_token": issue_access_token(a.teacher_user)})
    update = {"type": "broadcast", "event": "update", "payload": {"batteryLevel": 9, "connectionQuality": "poor"}}
    await client.comm.send_to(
        text_data=json.dumps(
            {
                "topic": "realtime:connection:profile",
                "event": "broadcast",
                "payload": update,
                "ref": "u",
                "join_ref": "1",
            }
        )
    )
    await client.push("phoenix", "heartbeat", {})
    stored = {
        (r.battery_level, r.connection_quality, r.heartbeat_interval_ms)
        for r in await rows(session_id=connection.connection_id)
    }
    assert stored == {(9, "poor", 300_000)}
    assert (await presence(a.teacher_user, "phone")).connection_quality == "poor"
    await client.comm.disconnect()


async def test_nul_characters_from_the_url_or_a_meta_are_dropped_not_written(schools):
    """PostgreSQL text cannot hold NUL: such values are left out, so the mirror write succeeds."""
    a = schools.a
    client = Client("device_id=%00&platform=android%00")
    await client.connect()
    await client.join(attendance(a), a.teacher_user)
    [row] = await rows(user=a.teacher_user)
    assert "\x00" not in row.device_id and row.platform is None
    meta = {"activity": "marking\x00", "current_screen": "\x00", "status": "in_class"}
    await client.push(f"realtime:{attendance(a)}", "presence", {"type": "presence", "event": "track", "payload": meta})
    tracked = await presence(a.teacher_user, row.device_id)
    assert (tracked.activity, tracked.current_screen, tracked.status) == (None, None, "in_class")
    await client.comm.disconnect()
