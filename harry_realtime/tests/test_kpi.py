"""The spec's KPIs read back from /metrics after real traffic: a socket that joins, beats, gets a
database change delivered and closes; HTTP requests; the sync and push tables."""

import asyncio
import os
import secrets

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import Client

from events.listener import LEADER_LOCK, Listener
from events.tests.test_pipeline_delivery import _backlog_done, attendance_topic, binding, set_attendance
from harry_realtime import kpi
from harry_realtime.testing import Socket, token

from .test_metrics import samples

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]


def figures() -> dict:
    kpi.flush()
    return samples(Client().get("/metrics"))


def value(snapshot: dict, name: str, **labels) -> float:
    return snapshot.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_a_sockets_life_shows_in_the_kpis(schools):
    a = schools.a
    await sync_to_async(_backlog_done)()
    before = await sync_to_async(figures)()
    listener = Listener(poll_interval=30)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    await asyncio.wait_for(listener.is_leader.wait(), 10)

    topic = attendance_topic(a)
    config = {"broadcast": {"ack": False, "self": False}, "postgres_changes": [binding("attendance")]}
    socket = Socket()
    await socket.connect()
    assert (await socket.join(topic, token(a.teacher_user), config)).payload["status"] == "ok"
    for _ in range(3):
        ref = await socket.push("phoenix", "heartbeat", {})
        await socket.until("phx_reply", ref=ref)
    await sync_to_async(set_attendance)(a, "late")
    await socket.until("postgres_changes", topic=topic, timeout=5)
    await socket.close()
    # The same user again within five minutes: a reconnect.
    again = Socket()
    await again.connect()
    assert (await again.join(topic, token(a.teacher_user), config)).payload["status"] == "ok"
    during = await sync_to_async(figures)()
    await again.close()
    stop.set()
    await asyncio.wait_for(task, 10)
    after = await sync_to_async(figures)()

    assert value(during, "harry_listener_active") == 1
    assert value(during, "harry_websocket_connections") >= 1
    grew = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)
    assert grew("harry_websocket_connects_total", kind="new") >= 1
    assert grew("harry_websocket_connects_total", kind="reconnect") >= 1
    assert grew("harry_websocket_disconnects_total", reason="client") == 2
    assert grew("harry_heartbeats_total", outcome="ok") == 3
    # The change's broadcast and postgres_changes frames, medium priority, each observed once.
    assert grew("harry_delivery_latency_seconds_count", priority="medium") == 2
    assert 0 < grew("harry_delivery_latency_seconds_sum", priority="medium") < 10
    assert grew("harry_delivery_latency_seconds_bucket", priority="medium", le="+Inf") == 2
    assert grew("harry_websocket_message_duration_seconds_count", event="heartbeat") == 3
    assert grew("harry_websocket_message_duration_seconds_count", event="phx_join") == 2


def test_http_requests_are_timed_by_route_and_logged_as_json(client, schools, caplog):
    before = figures()
    caplog.set_level("INFO", logger="harry.request")
    for _ in range(2):
        assert client.get("/healthz?apikey=secret-token").status_code == 200
    assert client.get("/api/me").status_code == 401
    after = figures()
    grew = lambda **labels: (
        value(after, "harry_http_request_duration_seconds_count", **labels)
        - value(before, "harry_http_request_duration_seconds_count", **labels)
    )
    assert grew(route="/healthz", method="GET", status="2xx") == 2
    assert grew(route="/api/me", method="GET", status="4xx") == 1
    lines = [r for r in caplog.records if r.name == "harry.request"]
    assert lines and all("secret-token" not in r.getMessage() and "apikey" not in str(vars(r)) for r in lines)
    assert {r.path for r in lines} >= {"/healthz", "/api/me"}
    assert all(len(r.request_id) == 32 and r.duration_ms >= 0 for r in lines)


def test_listener_active_counts_only_this_databases_leader(client, schools):
    """Another checkout's listener on the same server holds the same lock key in its own database."""
    other_database = os.environ["DATABASE_URL"]  # the dev database, not the test database
    with psycopg.connect(other_database, autocommit=True) as elsewhere:
        assert elsewhere.execute("SELECT pg_try_advisory_lock(%s, %s)", LEADER_LOCK).fetchone()[0]
        assert value(figures(), "harry_listener_active") == 0


async def test_channel_layer_drops_are_counted():
    from channels.layers import get_channel_layer
    from channels_redis.core import RedisChannelLayer

    from events.listener import group_send_many

    base = get_channel_layer()
    assert isinstance(base, RedisChannelLayer)
    small = RedisChannelLayer(hosts=base.hosts, prefix=base.prefix, capacity=2)
    group = f"kpi-drops-{secrets.token_hex(4)}"
    channel = await small.new_channel()
    await small.group_add(group, channel)
    before = value(await sync_to_async(figures)(), "harry_channel_layer_dropped_total", source="listener")

    await group_send_many(small, [(group, {"type": "test.message", "n": n}) for n in range(5)])

    after = value(await sync_to_async(figures)(), "harry_channel_layer_dropped_total", source="listener")
    assert after - before == 3
    await small.flush()


def test_sync_and_push_outcomes_of_the_last_day(schools):
    from django.utils import timezone

    from harry_realtime.tenancy import dangerously_platform_context
    from notifications.models import DeviceToken, PushDelivery, PushNotification
    from syncqueue.models import OfflineSyncOperation

    a = schools.a
    before = figures()
    with dangerously_platform_context():
        for n, (status, conflict) in enumerate([("completed", False), ("completed", False), ("conflict", True)]):
            OfflineSyncOperation.objects.create(
                organization=a.org,
                user=a.teacher_user,
                device_id=f"kpi-{secrets.token_hex(3)}",
                operation_id=f"op-{n}",
                operation_type="UPDATE",
                table_name="attendance",
                sync_status=status,
                conflict_detected=conflict,
                local_timestamp=timezone.now(),
            )
        push = PushNotification.objects.create(
            organization=a.org, target_user=a.student_user, notification_type="system_alert", title_en="t", body_en="b"
        )
        for status in ("sent", "invalid_token"):
            device = DeviceToken.objects.create(
                organization=a.org, user=a.student_user, platform="android", token=secrets.token_hex(8)
            )
            PushDelivery.objects.create(
                organization=a.org, notification=push, device=device, provider="fcm", status=status
            )
    after = figures()
    grew = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)
    assert grew("harry_sync_operations_24h", status="completed", conflict="false") == 2
    assert grew("harry_sync_operations_24h", status="conflict", conflict="true") == 1
    assert grew("harry_push_deliveries_24h", provider="fcm", status="sent") == 1
    assert grew("harry_push_deliveries_24h", provider="fcm", status="invalid_token") == 1


async def test_silent_and_dropped_sockets_count_as_such(schools, settings):
    settings.REALTIME_IDLE_TIMEOUT_SECONDS = 1
    topic = f"realtime:attendance:org_{schools.a.org.pk}:group_{schools.a.group.pk}"
    before = await sync_to_async(figures)()
    silent = Socket()
    await silent.connect()
    assert (await silent.join(topic, token(schools.a.teacher_user))).payload["status"] == "ok"
    while (await silent.comm.receive_output(4))["type"] != "websocket.close":
        pass  # the join's presence frames, then the server's close
    await silent.close()
    lost = Socket()
    await lost.connect()
    assert (await lost.join(topic, token(schools.a.admin_user))).payload["status"] == "ok"
    await lost.comm.disconnect(code=1006)  # the network went away: no close frame
    after = await sync_to_async(figures)()
    await sync_to_async(connections.close_all)()

    grew = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)
    assert grew("harry_heartbeats_total", outcome="missed") == 1
    assert grew("harry_websocket_disconnects_total", reason="idle_timeout") == 1
    assert grew("harry_websocket_disconnects_total", reason="dropped") == 1


def test_a_process_flushes_its_last_observations_and_ends_at_exit():
    import subprocess
    import sys
    import uuid

    outcome = f"exit-{uuid.uuid4().hex[:8]}"
    code = (
        "import django; django.setup(); from harry_realtime import kpi; "
        f"kpi.inc('harry_heartbeats_total', outcome='{outcome}')"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "harry_realtime.settings"}
    done = subprocess.run([sys.executable, "-c", code], env=env, timeout=60, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert kpi.counter_values("harry_heartbeats_total").get((outcome,)) == 1
