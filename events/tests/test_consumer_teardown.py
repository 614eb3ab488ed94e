"""Every way a socket ends leaves nothing behind (issue 19 item 3, issue 13 item 6), and a join is
answered `ok` only once it has fully succeeded (issue 19 item 5).

The send-failure cases need the real ASGI server: uvicorn (in this process, on a free port,
`--ws websockets-sansio` as the Procfile runs it) raises `ClientDisconnected` out of a send to a
peer that went away. A raw `websockets` client closes mid-join, mid-replay, mid-send; then the
test checks, within a second: the connection slot is free (the user's next socket, limited to one
connection, is accepted at once), the topic's channel-layer group is empty in Redis, the tracked
presence is gone, and no watchdog of the dead socket is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket as stdlib_socket
import time
from urllib.parse import urlsplit

import pytest
import uvicorn
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone
from websockets.asyncio.client import connect

from events.consumers import INBOX_STRAGGLERS_SECONDS
from events.limits import redis_client
from events.models import RealtimeEvent
from events.topics import attendance_topic, group_name
from harry_realtime.rediskeys import key
from harry_realtime.tenancy import Tenant, tenant_context
from harry_realtime.testing import Socket, application, socket_topic, token
from presence import state as presence_state

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]

LARGE = "x" * 30_000  # a frame large enough that a few fill the socket buffers of a silent peer


@pytest.fixture
async def server(settings):
    settings.REALTIME_MAX_CONNECTIONS_PER_USER = 1
    config = uvicorn.Config(
        application, host="127.0.0.1", port=0, ws="websockets-sansio", lifespan="off", log_level="warning"
    )
    running = uvicorn.Server(config)
    task = asyncio.create_task(running.serve())
    while not running.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    port = running.servers[0].sockets[0].getsockname()[1]
    yield f"ws://127.0.0.1:{port}/realtime/v1/websocket?apikey=anon&vsn=1.0.0"
    running.should_exit = True
    await asyncio.wait_for(task, 15)


def frame(topic: str, event: str, payload: dict, ref: str) -> str:
    return json.dumps({"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": ref})


def join_frame(topic: str, user, ref: str = "1", **broadcast) -> str:
    config = {"broadcast": {"ack": False, "self": False, **broadcast}, "presence": {"key": "me"}}
    return frame(topic, "phx_join", {"config": config, "access_token": token(user)}, ref)


async def open_raw(url: str, *, receive_buffer: int | None = None):
    """A raw client; a small receive buffer and a small queue make it a peer that stops reading."""
    sock = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM)
    if receive_buffer:
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    address = urlsplit(url)
    await asyncio.get_running_loop().sock_connect(sock, (address.hostname, address.port))
    return await connect(url, sock=sock, max_queue=4, max_size=None, compression=None)


async def until(client, event: str, ref: str | None = None) -> dict:
    async with asyncio.timeout(5):
        while True:
            message = json.loads(await client.recv())
            if message["event"] == event and ref in (None, message["ref"]):
                return message


def abort(client) -> None:
    """The peer vanishes: the TCP connection is reset, unread data and all."""
    client.transport.abort()


def watchdogs() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if not t.done() and t.get_coro().__qualname__ == "RealtimeSocket._watch"]


async def traces(user, sub_topic: str) -> dict:
    """What is left in Redis and on the loop of this user's sockets on this topic."""
    client = redis_client()
    return {
        "slots": await client.zrange(key("conn", "user", str(user.pk)), 0, -1),
        "group": await client.zrange(get_channel_layer()._group_key(group_name(sub_topic)), 0, -1),
        "presences": await presence_state.entries(sub_topic),
        "watchdogs": watchdogs(),
    }


async def nothing_left(user, sub_topic: str, within: float = 1.0) -> dict:
    deadline = time.monotonic() + within
    while True:
        left = await traces(user, sub_topic)
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.05)


async def accepted_at_once(url: str, user, topic: str) -> None:
    """The user's only connection slot is free: a new socket joins on its first attempt."""
    client = await open_raw(url)
    await client.send(join_frame(topic, user, ref="9"))
    reply = await until(client, "phx_reply", ref="9")
    assert reply["payload"]["status"] == "ok", reply["payload"]
    await client.close()


async def test_close_during_join_leaves_nothing(schools, server, caplog):
    user, topic = schools.a.teacher_user, socket_topic(schools.a)
    sub_topic = topic.removeprefix("realtime:")
    caplog.set_level(logging.INFO, logger="events.consumers")
    for _ in range(5):  # the join-then-close rounds, each followed by a reconnect
        client = await open_raw(server)
        await client.send(join_frame(topic, user))
        abort(client)
        assert await nothing_left(user, sub_topic) == {"slots": [], "group": [], "presences": [], "watchdogs": []}
        await accepted_at_once(server, user, topic)
        assert await nothing_left(user, sub_topic) == {"slots": [], "group": [], "presences": [], "watchdogs": []}
    assert "socket gone while sending" in caplog.text  # the join's reply met the closed peer


async def test_close_while_the_server_sends_leaves_nothing(schools, server, caplog):
    user, topic = schools.a.teacher_user, socket_topic(schools.a)
    sub_topic = topic.removeprefix("realtime:")
    caplog.set_level(logging.INFO, logger="events.consumers")
    client = await open_raw(server, receive_buffer=4096)
    await client.send(join_frame(topic, user))
    assert (await until(client, "phx_reply", ref="1"))["payload"]["status"] == "ok"
    await client.send(frame(topic, "presence", {"type": "presence", "event": "track", "payload": {"a": 1}}, "2"))
    await until(client, "phx_reply", ref="2")
    assert len(await presence_state.entries(sub_topic)) == 1
    # Fan-out the silent client cannot take: the server's send blocks on the full buffers.
    layer = get_channel_layer()
    for n in range(200):
        message = {"type": "realtime.broadcast", "topic": sub_topic, "event": "big", "payload": {"n": n, "x": LARGE}}
        await layer.group_send(group_name(sub_topic), {**message, "meta": None, "sender": None})
    await asyncio.sleep(0.5)
    abort(client)
    assert await nothing_left(user, sub_topic) == {"slots": [], "group": [], "presences": [], "watchdogs": []}
    assert "socket gone while sending" in caplog.text
    await accepted_at_once(server, user, topic)
    # The fan-out already on its way to the dead channel does not wait in this process for ever.
    await asyncio.sleep(INBOX_STRAGGLERS_SECONDS + 0.3)
    assert {name: q.qsize() for name, q in layer.receive_buffer.items() if q.qsize()} == {}


@sync_to_async
def store_events(school, sub_topic: str, count: int) -> None:
    admin = school.admin_user
    with tenant_context(Tenant(admin.organization_id, admin.pk, admin.role)), transaction.atomic():
        RealtimeEvent.objects.bulk_create(
            RealtimeEvent(
                organization_id=school.org.pk,
                event_type="system_announcement",
                event_category="system",
                priority="medium",
                event_payload={"n": n, "x": LARGE},
                event_metadata={"topics": [sub_topic], "event": "note"},
                broadcast_scope="group",
                fanout_at=timezone.now(),  # fanned out before the socket joined: replayed
            )
            for n in range(count)
        )


async def test_close_during_replay_leaves_nothing(schools, server, caplog):
    user, topic = schools.a.teacher_user, socket_topic(schools.a)
    sub_topic = topic.removeprefix("realtime:")
    await store_events(schools.a, sub_topic, 200)
    caplog.set_level(logging.INFO, logger="events.consumers")
    client = await open_raw(server, receive_buffer=4096)
    await client.send(join_frame(topic, user, replay={"since": 0, "limit": 1000}))
    assert (await until(client, "phx_reply", ref="1"))["payload"]["status"] == "ok"
    await asyncio.sleep(0.3)  # the replay fills the buffers of the client that stopped reading
    abort(client)
    assert await nothing_left(user, sub_topic) == {"slots": [], "group": [], "presences": [], "watchdogs": []}
    assert "socket gone while sending" in caplog.text
    await accepted_at_once(server, user, topic)


async def test_idle_timeout_closes_and_leaves_nothing(schools, server, settings):
    settings.REALTIME_IDLE_TIMEOUT_SECONDS = 1.0
    user, topic = schools.a.teacher_user, socket_topic(schools.a)
    sub_topic = topic.removeprefix("realtime:")
    client = await open_raw(server)
    await client.send(join_frame(topic, user))
    await until(client, "phx_reply", ref="1")
    await client.send(frame(topic, "presence", {"type": "presence", "event": "track", "payload": {}}, "2"))
    await until(client, "phx_reply", ref="2")
    async with asyncio.timeout(5):  # silent: the server closes it
        await client.wait_closed()
    assert client.close_code == 1000
    assert await nothing_left(user, sub_topic) == {"slots": [], "group": [], "presences": [], "watchdogs": []}
    await accepted_at_once(server, user, topic)


async def test_join_that_cannot_complete_is_a_join_error_and_leaves_nothing(schools):
    """The presence state cannot be read (the topic's key holds another type): the join is refused
    with a reason the client retries on, the channel is not registered and its group is left; the
    retry succeeds once the state can be read."""
    user, topic = schools.a.teacher_user, socket_topic(schools.a)
    sub_topic = topic.removeprefix("realtime:")
    client = redis_client()
    await client.set(key("presence", "topic", sub_topic), "not a hash")
    socket = Socket()
    await socket.connect()
    refused = await socket.join(topic, token(user))
    assert refused.payload == {
        "status": "error",
        "response": {"reason": "JoinFailed: the server could not complete the join; retry"},
    }
    assert await socket.no_message()  # no presence_state, no replay after a refused join
    assert await client.zrange(get_channel_layer()._group_key(group_name(sub_topic)), 0, -1) == []
    ref = await socket.push(topic, "broadcast", {"type": "broadcast", "event": "x", "payload": {}})
    assert (await socket.until("phx_reply", ref=ref)).payload["response"]["reason"] == "unmatched topic"

    await client.delete(key("presence", "topic", sub_topic))
    assert (await socket.join(topic, token(user))).payload["status"] == "ok"
    await socket.until("presence_state", topic=topic)
    assert len(await client.zrange(get_channel_layer()._group_key(group_name(sub_topic)), 0, -1)) == 1
    await socket.close()
    assert await nothing_left(user, sub_topic) == {"slots": [], "group": [], "presences": [], "watchdogs": []}


async def test_join_reply_follows_group_presence_and_replay(schools):
    """`ok` comes only when the socket is in the group and the replay is ready: the presence state
    and the replayed events follow the reply at once, before anything live."""
    a = schools.a
    sub_topic = attendance_topic(a.org.pk, a.group.pk)
    await store_events(a, sub_topic, 3)
    socket = Socket()
    await socket.connect()
    reply = await socket.join(f"realtime:{sub_topic}", token(a.teacher_user), {"broadcast": {"replay": {"since": 0}}})
    assert reply.payload["status"] == "ok"
    assert len(await redis_client().zrange(get_channel_layer()._group_key(group_name(sub_topic)), 0, -1)) == 1
    assert (await socket.recv()).event == "presence_state"
    replayed = [await socket.recv() for _ in range(3)]  # ours (the fixture's rows were never fanned out)
    assert [m.event for m in replayed] == ["broadcast"] * 3
    assert [m.payload["payload"].get("n") for m in replayed] == [0, 1, 2]
    assert all(m.payload["meta"]["replayed"] for m in replayed)
    assert await socket.no_message()
    await socket.close()


async def test_a_cancelled_consumer_leaves_nothing(schools):
    """The server cancels the consumer's task (a forced shutdown): the teardown still runs."""
    user, topic = schools.a.teacher_user, socket_topic(schools.a)
    sub_topic = topic.removeprefix("realtime:")
    socket = Socket()
    await socket.connect()
    assert (await socket.join(topic, token(user))).payload["status"] == "ok"
    ref = await socket.push(topic, "presence", {"type": "presence", "event": "track", "payload": {"a": 1}})
    await socket.until("phx_reply", ref=ref)
    assert len((await traces(user, sub_topic))["presences"]) == 1
    socket.comm.future.cancel()
    assert await nothing_left(user, sub_topic) == {"slots": [], "group": [], "presences": [], "watchdogs": []}
    with contextlib.suppress(asyncio.CancelledError):
        await socket.close()


async def test_the_idle_close_is_sent_once_and_the_watchdog_stops(schools, settings):
    """After the server's close only the client's disconnect is awaited: no further ticks, closes
    or missed-heartbeat counts while it comes."""
    settings.REALTIME_IDLE_TIMEOUT_SECONDS = 0.5
    user, topic = schools.a.teacher_user, socket_topic(schools.a)
    socket = Socket()
    await socket.connect()
    assert (await socket.join(topic, token(user))).payload["status"] == "ok"
    await socket.until("presence_state", topic=topic)
    assert (await socket.comm.receive_output(3))["type"] == "websocket.close"
    assert await socket.no_message(1.5)
    assert watchdogs() == []
    await socket.close()
    assert await nothing_left(user, topic.removeprefix("realtime:")) == {
        "slots": [],
        "group": [],
        "presences": [],
        "watchdogs": [],
    }


async def test_forgetting_the_inbox_while_the_layer_receives_keeps_the_process_receiving():
    """A socket's teardown empties its inbox while the layer's receive for that channel is still
    waiting behind another channel's receive (the consumer's receive task is cancelled after the
    teardown): the cancelled receive ends cleanly and the other channel still gets its messages."""
    from types import SimpleNamespace

    from events.consumers import RealtimeSocket

    layer = get_channel_layer()
    gone, alive = await layer.new_channel(), await layer.new_channel()
    receiving = asyncio.create_task(layer.receive(alive))  # takes the layer's receive lock
    await asyncio.sleep(0.1)
    waiting = asyncio.create_task(layer.receive(gone))  # waits on its queue and on the lock
    await asyncio.sleep(0.1)
    await RealtimeSocket._forget_inbox(SimpleNamespace(channel_layer=layer, channel_name=gone))
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting  # before the fix: KeyError from channels_redis' own clean-up
    for n in range(2):
        await layer.send(alive, {"type": "ping", "n": n})
        message = await asyncio.wait_for(receiving if n == 0 else layer.receive(alive), 5)
        assert message == {"type": "ping", "n": n}
    assert not layer.receive_lock or not layer.receive_lock.locked()
