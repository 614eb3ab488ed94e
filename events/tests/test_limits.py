"""Connection slots belong to the server process holding the socket (issue 19 item 4): the slots
of a dead process are reclaimed as soon as a join needs them, never those of a live one; a web
process killed and restarted lets its users straight back in."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from django.conf import settings
from django.db import connections
from websockets.asyncio.client import connect

from events import limits
from events.limits import ConnectionSlot, redis_client
from harry_realtime.rediskeys import key
from harry_realtime.testing import ServerProcess, Socket, socket_topic, token
from presence import state as presence_state

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]


def dead_pid() -> int:
    """The id of a process of this host that has exited."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


async def node_heartbeat(node: str, *, host: str, pid: int, ttl_ms: int = 10_000) -> None:
    await redis_client().set(key("node", node), json.dumps({"host": host, "pid": pid}), px=ttl_ms)


async def slot_of(node: str, user) -> ConnectionSlot:
    slot = ConnectionSlot(f"conn-{uuid.uuid4().hex}", str(user.pk), str(user.organization_id), node=node)
    await slot.acquire()
    return slot


async def join_status(user, topic: str) -> tuple[str, Socket]:
    socket = Socket()
    await socket.connect()
    reply = await socket.join(topic, token(user))
    return reply.payload["status"], socket


async def test_slots_of_a_dead_process_of_this_host_are_reclaimed_at_once(schools, settings):
    settings.REALTIME_MAX_CONNECTIONS_PER_USER = 1
    user = schools.a.teacher_user
    crashed = uuid.uuid4().hex
    # Its heartbeat has not lapsed yet, but the process it names is gone.
    await node_heartbeat(crashed, host=limits.HOST, pid=dead_pid())
    slot = await slot_of(crashed, user)
    status, socket = await join_status(user, socket_topic(schools.a))
    assert status == "ok"
    client = redis_client()
    assert slot.member not in await client.zrange(key("conn", "user", str(user.pk)), 0, -1)
    assert slot.member not in await client.zrange(key("conn", "org", str(user.organization_id)), 0, -1)
    await socket.close()


async def test_slots_of_a_process_of_another_host_are_reclaimed_when_its_heartbeat_lapses(schools, settings):
    settings.REALTIME_MAX_CONNECTIONS_PER_USER = 1
    settings.REALTIME_SLOT_WAIT_SECONDS = 0
    user = schools.a.teacher_user
    elsewhere = uuid.uuid4().hex
    await node_heartbeat(elsewhere, host="another-host/pid:[1]", pid=1, ttl_ms=600)
    await slot_of(elsewhere, user)
    status, socket = await join_status(user, socket_topic(schools.a))
    assert status == "error"  # alive as far as anyone here can tell
    await asyncio.sleep(0.7)
    assert (await socket.join(socket_topic(schools.a), token(user))).payload["status"] == "ok"
    await socket.close()


async def test_slots_of_live_processes_are_kept(schools, settings):
    settings.REALTIME_MAX_CONNECTIONS_PER_USER = 2
    settings.REALTIME_SLOT_WAIT_SECONDS = 0.3
    user = schools.a.teacher_user
    live = uuid.uuid4().hex
    await node_heartbeat(live, host=limits.HOST, pid=os.getppid())
    await slot_of(live, user)
    await slot_of(limits.NODE_ID, user)  # this process's own, heartbeat current
    status, socket = await join_status(user, socket_topic(schools.a))
    assert status == "error"
    assert len(await redis_client().zrange(key("conn", "user", str(user.pk)), 0, -1)) == 2
    await socket.close()


async def test_a_join_waits_for_the_slot_of_a_closing_socket(schools, settings):
    """The client reconnects before the server has ended its previous socket: the join waits for
    that teardown instead of being refused."""
    settings.REALTIME_MAX_CONNECTIONS_PER_USER = 1
    user, topic = schools.a.teacher_user, socket_topic(schools.a)
    status, previous = await join_status(user, topic)
    assert status == "ok"
    reconnect = Socket()
    await reconnect.connect()
    joining = asyncio.create_task(reconnect.join(topic, token(user)))
    await asyncio.sleep(0.5)
    assert not joining.done()  # waiting, not refused
    await previous.close()
    assert (await joining).payload["status"] == "ok"
    await reconnect.close()


async def test_renew_keeps_the_counts_alive_past_the_first_lease(schools, settings):
    """A long-lived connection: renewals push both the slot's lease and the counts' expiry."""
    user = schools.a.teacher_user
    slot = await slot_of(limits.NODE_ID, user)
    client = redis_client()
    await client.expire(slot.keys[0], 2)
    await slot.renew(lease=90)
    assert await client.ttl(slot.keys[0]) > 80
    assert await client.zscore(slot.keys[0], slot.member) > time.time() + 80
    await slot.release()
    assert await client.zrange(slot.keys[0], 0, -1) == []


async def test_a_live_socket_takes_its_slot_back_after_redis_lost_it(schools):
    """Redis came back empty (or the node was taken for dead): the next heartbeat counts the socket
    again (its renewal runs beside the heartbeat's reply)."""
    user, topic = schools.a.teacher_user, socket_topic(schools.a)
    status, socket = await join_status(user, topic)
    assert status == "ok"
    client = redis_client()
    user_key, org_key = key("conn", "user", str(user.pk)), key("conn", "org", str(user.organization_id))
    members = await client.zrange(user_key, 0, -1)
    await client.delete(user_key, org_key)
    ref = await socket.push("phoenix", "heartbeat", {})
    await socket.until("phx_reply", ref=ref)
    async with asyncio.timeout(5):
        while not await client.zrange(org_key, 0, -1):
            await asyncio.sleep(0.05)
    assert await client.zrange(user_key, 0, -1) == members == await client.zrange(org_key, 0, -1)
    assert await client.ttl(user_key) > 0
    await socket.close()
    assert await client.zrange(user_key, 0, -1) == []


async def test_heartbeats_back_to_back_renew_the_slot_once_per_interval(schools, monkeypatch):
    """Heartbeats pass the message rate limit; their slot renewals (Redis round trips) do not."""
    monkeypatch.setattr(limits, "SLOT_RENEW_MIN_SECONDS", 1.0)
    user, topic = schools.a.teacher_user, socket_topic(schools.a)
    status, socket = await join_status(user, topic)
    assert status == "ok"
    client, user_key = redis_client(), key("conn", "user", str(user.pk))

    async def lease_end_after_heartbeats(count: int) -> float:
        for _ in range(count):
            ref = await socket.push("phoenix", "heartbeat", {})
            await socket.until("phx_reply", ref=ref)
        await asyncio.sleep(0.3)  # a renewal runs beside the replies
        [(_, score)] = await client.zrange(user_key, 0, -1, withscores=True)
        return score

    joined = (await client.zrange(user_key, 0, -1, withscores=True))[0][1]
    renewed = await lease_end_after_heartbeats(1)
    assert renewed > joined
    assert await lease_end_after_heartbeats(20) == renewed
    await asyncio.sleep(1.0)
    assert await lease_end_after_heartbeats(1) > renewed
    await socket.close()


# -- a real web process killed and restarted ------------------------------------------------------


def start_server(port: int = 0) -> ServerProcess:
    """A web process as the Procfile starts it, on `port` (0: a free one)."""
    database = connections["default"].settings_dict
    owner = connections["owner"].settings_dict
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "HARRY_INSECURE_DEV_KEYS": "1",
        "DATABASE_URL": f"postgres://{database['USER']}:{database['PASSWORD']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "DATABASE_OWNER_URL": f"postgres://{owner['USER']}:{owner['PASSWORD']}@{owner['HOST']}:{owner['PORT']}/{database['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "CHANNEL_LAYER_PREFIX": settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
        "REALTIME_MAX_CONNECTIONS_PER_USER": "1",
    }
    args = ["-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--ws", "websockets-sansio"]
    return ServerProcess([*args, "--lifespan", "off", "harry_realtime.asgi:application"], env)


async def join_raw(port: int, user, topic: str) -> tuple[dict, object]:
    client = await connect(f"ws://127.0.0.1:{port}/realtime/v1/websocket?apikey=anon&vsn=1.0.0")
    config = {"broadcast": {"ack": False, "self": False}, "presence": {"key": "me"}}
    frame = {"topic": topic, "event": "phx_join", "payload": {"config": config, "access_token": token(user)}}
    await client.send(json.dumps({**frame, "ref": "1", "join_ref": "1"}))
    async with asyncio.timeout(10):
        while (message := json.loads(await client.recv()))["event"] != "phx_reply":
            pass
    return message["payload"], client


async def test_users_of_a_killed_web_process_are_let_back_in_at_once(schools):
    user, topic = schools.a.teacher_user, socket_topic(schools.a)
    sub_topic = topic.removeprefix("realtime:")
    first = await asyncio.to_thread(start_server)
    port = first.port
    try:
        reply, client = await join_raw(port, user, topic)
        assert reply["status"] == "ok"
        track = {"type": "presence", "event": "track", "payload": {"screen": "x"}}
        await client.send(json.dumps({"topic": topic, "event": "presence", "payload": track, "ref": "2"}))
        async with asyncio.timeout(10):
            while json.loads(await client.recv())["ref"] != "2":
                pass
        assert len(await presence_state.entries(sub_topic)) == 1
    finally:
        first.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.stop)
    assert len(await redis_client().zrange(key("conn", "user", str(user.pk)), 0, -1)) == 1  # left behind

    second = await asyncio.to_thread(start_server, port)  # the replacement, at the same address
    try:
        reply, client = await join_raw(port, user, topic)  # the first attempt, right after the restart
        assert reply["status"] == "ok", reply
        members = await redis_client().zrange(key("conn", "user", str(user.pk)), 0, -1)
        assert [limits.member_node(m) for m in members] != [] and len(members) == 1
        # The dead process's presence leaves at the new process's first liveness round.
        async with asyncio.timeout(3):
            while await presence_state.entries(sub_topic):
                await asyncio.sleep(0.05)
        await client.close()
    finally:
        await asyncio.to_thread(second.stop)
