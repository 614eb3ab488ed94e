"""RealtimeSocket limits and bad input: every case gets an error reply or a clean close."""

from __future__ import annotations

import asyncio
import json

import pytest

from events.limits import ConnectionSlot
from harry_realtime.testing import Socket, joined, socket_topic, token

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]


async def test_malformed_frames_get_error_replies_and_socket_stays_up(schools):
    socket = Socket()
    await socket.connect()
    for frame in ["{not json", "[1,2,3]", json.dumps({"topic": "", "event": "x"}), "null", "[" * 100000]:
        await socket.comm.send_to(text_data=frame)
        reply = await socket.recv()
        assert reply.event == "phx_reply" and reply.payload["status"] == "error"
        assert reply.payload["response"]["reason"].startswith("MalformedMessage")
    for garbage in [b"\x00", b"\x09garbage-bytes", bytes([3, 200, 200, 200, 200, 0, 1]) + b"short"]:
        await socket.comm.send_to(bytes_data=garbage)
        assert (await socket.recv()).payload["status"] == "error"
    ref = await socket.push("phoenix", "heartbeat", {})
    assert (await socket.recv()).ref == ref
    await socket.close()


async def test_unknown_events_and_topics(schools):
    topic = socket_topic(schools.a)
    socket = await joined(schools.a.teacher_user, topic)
    ref = await socket.push(topic, "shout", {})
    assert (await socket.until("phx_reply", ref=ref)).payload["response"]["reason"].startswith("UnknownEvent")
    ref = await socket.push(topic, "presence", {"type": "presence", "event": "dance"})
    assert (await socket.until("phx_reply", ref=ref)).payload["status"] == "error"
    ref = await socket.push("phoenix", "phx_join", {})
    assert (await socket.until("phx_reply", ref=ref)).payload["status"] == "error"
    ref = await socket.push(topic, "broadcast", {"type": "broadcast"})
    assert (await socket.until("phx_reply", ref=ref)).payload["response"]["error"] == "invalid_broadcast"
    await socket.close()


async def test_ten_megabyte_frame_closes_cleanly(schools):
    socket = Socket()
    await socket.connect()
    await socket.comm.send_to(text_data="x" * (10 * 1024 * 1024))
    closed = await socket.comm.receive_output(5)
    assert closed == {"type": "websocket.close", "code": 1009, "reason": None} or closed["code"] == 1009
    await socket.close()


async def test_channel_limit_per_connection(schools, settings):
    settings.REALTIME_MAX_CHANNELS_PER_CONNECTION = 2
    a = schools.a
    org = a.org.pk
    socket = Socket()
    await socket.connect()
    admin = token(a.admin_user)
    assert (await socket.join(f"realtime:notifications:org_{org}:role_all", admin)).payload["status"] == "ok"
    assert (await socket.join(f"realtime:notifications:org_{org}:role_admin", admin)).payload["status"] == "ok"
    refused = await socket.join(socket_topic(a), admin)
    assert refused.payload["response"]["reason"].startswith("ChannelLimitReached")
    # Re-joining an already joined topic does not count as another channel.
    assert (await socket.join(f"realtime:notifications:org_{org}:role_all", admin)).payload["status"] == "ok"
    await socket.close()


async def test_connections_per_user_and_per_org_are_limited_and_freed(schools, settings):
    settings.REALTIME_MAX_CONNECTIONS_PER_USER = 2
    settings.REALTIME_MAX_CONNECTIONS_PER_ORG = 3
    settings.REALTIME_SLOT_WAIT_SECONDS = 0
    a = schools.a
    topic = socket_topic(a)
    first = await joined(a.teacher_user, topic)
    second = await joined(a.teacher_user, topic)
    third = Socket()
    await third.connect()
    refused = await third.join(topic, token(a.teacher_user))
    assert refused.payload["response"]["reason"] == "ConnectionLimitReached: at most 2 connections per user"

    admin = await joined(a.admin_user, topic)
    other_admin = Socket()
    await other_admin.connect()
    refused = await other_admin.join(topic, token(a.admin_user))
    assert refused.payload["response"]["reason"].endswith("connections per organization")
    # School B has its own count.
    assert (await await_join(schools.b.teacher_user, socket_topic(schools.b))).payload["status"] == "ok"

    # A closed connection frees its slot; the refused socket may retry.
    await first.close()
    assert (await third.join(topic, token(a.teacher_user))).payload["status"] == "ok"
    for socket in (second, third, admin, other_admin):
        await socket.close()


async def await_join(user, topic):
    socket = Socket()
    await socket.connect()
    reply = await socket.join(topic, token(user))
    await socket.close()
    return reply


async def test_lapsed_lease_of_a_dead_process_frees_the_slot(schools, settings):
    settings.REALTIME_MAX_CONNECTIONS_PER_USER = 1
    settings.REALTIME_SLOT_WAIT_SECONDS = 0
    settings.REALTIME_CONNECTION_LEASE_SECONDS = 0.5
    user = schools.a.teacher_user
    # A slot taken by a process that died: nobody renews or releases it.
    await ConnectionSlot("dead-process-connection", str(user.pk), str(user.organization_id)).acquire()
    socket = Socket()
    await socket.connect()
    assert (await socket.join(socket_topic(schools.a), token(user))).payload["status"] == "error"
    await asyncio.sleep(0.6)
    assert (await socket.join(socket_topic(schools.a), token(user))).payload["status"] == "ok"
    await socket.close()


async def test_message_rate_limit(schools, settings):
    settings.REALTIME_MAX_MESSAGES_PER_SECOND = 20
    topic = socket_topic(schools.a)
    socket = await joined(schools.a.teacher_user, topic, config={"broadcast": {"ack": True}})
    refs = [
        await socket.push(topic, "broadcast", {"type": "broadcast", "event": "e", "payload": {}}) for _ in range(40)
    ]
    replies = {}
    while len(replies) < len(refs):
        message = await socket.recv()
        if message.event == "phx_reply":
            replies[message.ref] = message.payload
    limited = [r for r in replies.values() if r["status"] == "error"]
    assert 15 <= len(limited) <= 21
    assert all(r["response"]["error"] == "rate_limited" for r in limited)
    # Heartbeats are never limited, and the bucket refills.
    ref = await socket.push("phoenix", "heartbeat", {})
    assert (await socket.until("phx_reply", ref=ref)).payload["status"] == "ok"
    await asyncio.sleep(0.5)
    ref = await socket.push(topic, "broadcast", {"type": "broadcast", "event": "e", "payload": {}})
    assert (await socket.until("phx_reply", ref=ref)).payload["status"] == "ok"
    await socket.close()


async def test_silent_socket_is_closed(schools, settings):
    settings.REALTIME_IDLE_TIMEOUT_SECONDS = 1
    socket = await joined(schools.a.teacher_user, socket_topic(schools.a))
    closed = await socket.comm.receive_output(4)
    assert closed["type"] == "websocket.close"
    await socket.close()


async def test_idle_socket_with_heartbeats_survives_and_still_receives(schools, settings):
    """The redis-py 8 trap: idle channel-layer connections dropped after ~5 s (docs/design.md, decision 9)."""
    settings.REALTIME_IDLE_TIMEOUT_SECONDS = 3
    topic = socket_topic(schools.a)
    listener = await joined(schools.a.teacher_user, topic)
    for _ in range(4):  # 8 s: past redis-py's idle timeout and past the idle limit without heartbeats
        await asyncio.sleep(2)
        ref = await listener.push("phoenix", "heartbeat", {})
        assert (await listener.until("phx_reply", ref=ref)).payload["status"] == "ok"
    sender = await joined(schools.a.admin_user, topic)
    await sender.push(topic, "broadcast", {"type": "broadcast", "event": "after_idle", "payload": {}})
    assert (await listener.until("broadcast")).payload["event"] == "after_idle"
    await listener.close()
    await sender.close()
