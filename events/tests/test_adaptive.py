"""The socket side of connection profiles: the profile topic, idle timeouts and slot leases per
profile, events held back for a poor connection and caught up, and opt-in batching."""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from events import limits
from events.models import RealtimeEvent
from events.profiles import PROFILE_TOPIC
from events.tests import test_pipeline_delivery as delivery_tests
from harry_realtime.testing import Socket, token

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]

# The delivery tests' running listener.
pipeline = delivery_tests.listener
as_tenant = delivery_tests.as_tenant


def rankings_topic(school) -> str:
    return f"realtime:rankings:org_{school.org.pk}:student_{school.student.pk}"


async def connected(query: str = "") -> Socket:
    socket = Socket(query=f"apikey=anon&vsn=1.0.0{query}")
    await socket.connect()
    return socket


async def join(socket: Socket, user, topic: str, **broadcast) -> None:
    reply = await socket.join(topic, token(user), {"broadcast": {"ack": False, "self": False, **broadcast}})
    assert reply.payload["status"] == "ok", reply.payload
    await socket.until("presence_state", topic=topic)


def store_broadcast(*, organization_id, topic: str, event: str, payload: dict, priority: str) -> RealtimeEvent:
    """A broadcast stored from Python to one topic, as the listener fans out any stored event."""
    return RealtimeEvent.objects.create(
        organization_id=organization_id,
        event_type="system_announcement",
        event_category="system",
        priority=priority,
        event_payload=payload,
        event_metadata={"topics": [topic], "event": event},
        broadcast_scope="group",
    )


@sync_to_async
def publish(school, topic: str, *events: tuple[str, str]) -> list[int]:
    """Store (event name, priority) broadcasts to a topic in one transaction; their seqs."""
    from django.db import transaction

    with as_tenant(school.admin_user), transaction.atomic():
        stored = [
            store_broadcast(
                organization_id=school.org.pk,
                topic=topic.removeprefix("realtime:"),
                event=name,
                payload={"name": name},
                priority=priority,
            )
            for name, priority in events
        ]
    return [event.seq for event in stored]


async def broadcasts(socket: Socket, count: int, timeout: float = 5) -> list:
    out = []
    while len(out) < count:
        out.append(await socket.until("broadcast", timeout=timeout))
    return out


async def test_profile_from_the_url_is_answered_on_the_profile_topic(schools):
    socket = await connected("&batteryLevel=15&performance_mode=battery_saver")
    reply = await socket.join(PROFILE_TOPIC, token(schools.a.student_user))
    response = reply.payload["response"]
    assert reply.payload["status"] == "ok"
    assert response["heartbeat_interval_ms"] == 300_000 and response["idle_timeout_seconds"] == pytest.approx(720)
    assert response["profile"]["battery_level"] == 15 and response["connection_quality"] == "excellent"
    await socket.close()


async def test_bad_profile_in_the_url_refuses_joins_with_the_reason(schools):
    socket = await connected("&battery_level=150")
    reply = await socket.join(rankings_topic(schools.a), token(schools.a.student_user))
    assert reply.payload["status"] == "error"
    assert reply.payload["response"]["reason"].startswith("InvalidProfile: battery_level")
    await socket.close()


async def test_profile_update_on_the_live_socket(schools):
    socket = await connected()
    reply = await socket.join(PROFILE_TOPIC, token(schools.a.student_user), {"broadcast": {"ack": True}})
    assert reply.payload["response"]["heartbeat_interval_ms"] == 25_000
    ref = await socket.push(
        PROFILE_TOPIC, "broadcast", {"type": "broadcast", "event": "update", "payload": {"appState": "background"}}
    )
    system = await socket.until("system", topic=PROFILE_TOPIC)
    assert system.payload["status"] == "ok" and system.payload["heartbeat_interval_ms"] == 120_000
    assert (await socket.until("phx_reply", ref=ref)).payload["response"]["idle_timeout_seconds"] == pytest.approx(288)
    ref = await socket.push(
        PROFILE_TOPIC, "broadcast", {"type": "broadcast", "event": "update", "payload": {"batteryLevel": "x"}}
    )
    system = await socket.until("system", topic=PROFILE_TOPIC)
    assert system.payload["status"] == "error" and "battery_level" in system.payload["message"]
    assert (await socket.until("phx_reply", ref=ref)).payload["status"] == "error"
    await socket.close()


async def test_profile_topic_refuses_a_bad_token_and_other_users(schools):
    socket = await connected()
    reply = await socket.join(PROFILE_TOPIC, "not-a-token")
    assert reply.payload["response"]["reason"].startswith("InvalidJWTToken")
    await join(socket, schools.a.student_user, rankings_topic(schools.a))
    reply = await socket.join(PROFILE_TOPIC, token(schools.a.teacher_user))
    assert reply.payload["response"]["reason"] == "InvalidJWTToken: this connection belongs to another user"
    await socket.close()


async def test_idle_timeout_and_slot_lease_follow_the_profile(schools, settings):
    settings.REALTIME_IDLE_TIMEOUT_SECONDS = 1
    settings.REALTIME_HEARTBEAT_INTERVAL_MS = 1000
    settings.REALTIME_HEARTBEAT_BACKGROUND_MS = 2500  # idle timeout 2.5 s
    settings.REALTIME_CONNECTION_LEASE_SECONDS = 10
    foreground, background = await connected(), await connected("&app_state=background")
    await join(foreground, schools.a.student_user, rankings_topic(schools.a))
    await join(background, schools.a.parent_user, rankings_topic(schools.a))
    started = time.monotonic()
    assert (await foreground.comm.receive_output(3))["type"] == "websocket.close"
    assert await background.no_message(1.2)  # past the foreground timeout: still open
    assert (await background.comm.receive_output(3))["type"] == "websocket.close"
    assert 2.3 < time.monotonic() - started < 4
    await foreground.close()
    await background.close()

    low = await connected("&battery_level=10")
    await join(low, schools.a.student_user, rankings_topic(schools.a))
    slots = await limits.redis_client().zrange(
        limits.key("conn", "user", str(schools.a.student_user.pk)), 0, -1, withscores=True
    )
    await low.close()
    # 300 s interval: idle timeout 300 s, lease 330 s instead of REALTIME_CONNECTION_LEASE_SECONDS
    assert len(slots) == 1 and slots[0][1] > time.time() + 300


async def test_poor_connection_gets_high_and_critical_live_and_the_rest_when_it_improves(schools, settings, pipeline):
    settings.REALTIME_HELD_NOTICE_SECONDS = 0.2
    a = schools.a
    topic = rankings_topic(a)
    socket = await connected("&connection_quality=poor")
    await join(socket, a.student_user, topic)
    await socket.join(PROFILE_TOPIC, token(a.student_user))
    low, high, medium, critical = await publish(
        a,
        topic,
        ("ranking_update", "low"),
        ("ranking_celebration", "high"),
        ("ranking_update", "medium"),
        ("emergency_alert", "critical"),
    )
    live = await broadcasts(socket, 2)
    assert [m.payload["meta"]["id"] for m in live] == [high, critical]
    notice = await socket.until("system", topic=topic)
    assert notice.payload["extension"] == "held_back"
    assert (notice.payload["held"], notice.payload["oldest_id"], notice.payload["connection_quality"]) == (
        2,
        low,
        "poor",
    )

    await socket.push(
        PROFILE_TOPIC, "broadcast", {"type": "broadcast", "event": "update", "payload": {"connection_quality": "good"}}
    )
    caught_up = await broadcasts(socket, 1)
    assert [m.payload["meta"] for m in caught_up] == [{"id": medium, "replayed": True}]
    assert (await socket.until("system", topic=topic)).payload["held"] == 1
    await socket.push(
        PROFILE_TOPIC,
        "broadcast",
        {"type": "broadcast", "event": "update", "payload": {"connection_quality": "excellent"}},
    )
    assert [m.payload["meta"]["id"] for m in await broadcasts(socket, 1)] == [low]
    assert (await socket.until("system", topic=topic)).payload["held"] == 0
    assert await socket.no_message(0.5)
    await socket.close()


async def test_a_late_heartbeat_holds_back_until_heartbeats_are_on_time(schools, settings, pipeline):
    settings.REALTIME_HEARTBEAT_INTERVAL_MS = 200  # late after 0.4 s; the idle timeout stays 60 s
    settings.REALTIME_HELD_NOTICE_SECONDS = 0.1
    a = schools.a
    topic = rankings_topic(a)
    socket = await connected()
    await join(socket, a.student_user, topic)
    await asyncio.sleep(0.5)
    ref = await socket.push("phoenix", "heartbeat", {})
    await socket.until("phx_reply", ref=ref)
    (seq,) = await publish(a, topic, ("ranking_update", "medium"))
    notice = await socket.until("system", topic=topic)
    assert (notice.payload["held"], notice.payload["connection_quality"]) == (1, "poor")
    ref = await socket.push("phoenix", "heartbeat", {})
    caught_up = await socket.until("broadcast", topic=topic)
    assert caught_up.payload["meta"] == {"id": seq, "replayed": True}
    await socket.close()


async def test_batching_channel_gets_one_batch_and_a_plain_channel_single_events(schools, pipeline):
    a = schools.a
    topic = rankings_topic(a)
    batched, plain = await connected(), await connected()
    await join(batched, a.student_user, topic, batch={"max_events": 3, "window_ms": 300})
    await join(plain, a.parent_user, topic)
    seqs = await publish(a, topic, *[("ranking_update", "medium")] * 3)
    (batch,) = await broadcasts(batched, 1)
    assert batch.payload["event"] == "batch" and batch.payload["meta"] == {"ids": seqs}
    assert [e["meta"]["id"] for e in batch.payload["payload"]["events"]] == seqs
    assert [m.payload["meta"]["id"] for m in await broadcasts(plain, 3)] == seqs

    started = time.monotonic()
    window = await publish(a, topic, ("ranking_update", "medium"), ("ranking_update", "low"))
    (batch,) = await broadcasts(batched, 1)
    assert batch.payload["meta"] == {"ids": window} and time.monotonic() - started >= 0.25

    urgent = await publish(a, topic, ("ranking_update", "medium"), ("emergency_alert", "critical"))
    started = time.monotonic()
    (batch,) = await broadcasts(batched, 1)
    assert batch.payload["meta"] == {"ids": urgent} and time.monotonic() - started < 0.25
    assert await batched.no_message(0.5)
    await batched.close()
    await plain.close()


async def test_malformed_batch_config_refuses_the_join(schools):
    socket = await connected()
    reply = await socket.join(
        rankings_topic(schools.a), token(schools.a.student_user), {"broadcast": {"batch": {"max_events": 500}}}
    )
    assert reply.payload["response"]["reason"].startswith("InvalidBatch: max_events")
    await socket.close()


async def test_leaving_battery_saver_catches_up_what_its_lowered_priorities_held(schools, settings, pipeline):
    settings.REALTIME_HELD_NOTICE_SECONDS = 0.1
    a = schools.a
    topic = rankings_topic(a)
    socket = await connected("&performance_mode=battery_saver&connection_quality=good")
    await join(socket, a.student_user, topic)
    await socket.join(PROFILE_TOPIC, token(a.student_user))
    medium, high = await publish(a, topic, ("ranking_update", "medium"), ("ranking_celebration", "high"))
    assert [m.payload["meta"]["id"] for m in await broadcasts(socket, 1)] == [high]
    assert (await socket.until("system", topic=topic)).payload["held"] == 1
    update = {"type": "broadcast", "event": "update", "payload": {"performanceMode": "standard"}}
    await socket.push(PROFILE_TOPIC, "broadcast", update)
    assert [m.payload["meta"] for m in await broadcasts(socket, 1)] == [{"id": medium, "replayed": True}]
    await socket.close()
