"""The socket gateway across a Redis restart: the web process's pooled Redis connections (slots,
presence, the channel layer) are dead once Redis is back, and must not fail the next join,
heartbeat, presence track or broadcast (harry_realtime/redis_conn.py, retry_options); a Redis that
comes back empty has forgotten the groups, and the sockets join them again and catch up from the
outbox (events/delivery.py, realtime_regroup)."""

import asyncio
import secrets
from types import SimpleNamespace

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings

from events.delivery import CATCH_UP_PAGE, _stored_page
from events.limits import key, redis_client
from events.listener import Listener
from events.tests.test_pipeline_delivery import _backlog_done, attendance_topic, set_attendance, store_notes
from harry_realtime import redis_conn
from harry_realtime.tenancy import Tenant
from harry_realtime.testing import socket_topic, token
from harry_realtime.tests.test_redis_conn import OwnRedis

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]


def use_redis(settings, server: OwnRedis) -> None:
    """Every Redis client of the gateway (channel layer, slots, presence) on the test's own Redis."""
    config = dict(django_settings.CHANNEL_LAYERS["default"]["CONFIG"])
    config["hosts"] = [redis_conn.channel_layer_host(server.url, [], "", socket_timeout=None)]
    config["prefix"] = f"restart{secrets.token_hex(3)}"
    settings.CHANNEL_LAYERS = {"default": {**django_settings.CHANNEL_LAYERS["default"], "CONFIG": config}}
    settings.REDIS_URL = server.url


@pytest.fixture
def own_redis(settings, tmp_path):
    server = OwnRedis(tmp_path)
    use_redis(settings, server)
    yield server
    server.stop()


@pytest.fixture
def empty_redis(settings, tmp_path):
    """A Redis without persistence: a restart starts empty, as a crashed cache does."""
    server = OwnRedis(tmp_path, persistent=False)
    use_redis(settings, server)
    yield server
    server.stop()


async def test_joins_heartbeats_presence_and_broadcasts_work_right_after_a_redis_restart(schools, own_redis, sockets):
    a = schools.a
    topic = socket_topic(a)
    config = {"broadcast": {"self": False, "ack": True}, "presence": {"key": "teacher"}}
    teacher = await sockets.open()
    assert (await teacher.join(topic, token(a.teacher_user), config)).payload["status"] == "ok"
    await teacher.until("presence_state", topic=topic)
    ref = await teacher.push(topic, "presence", {"type": "presence", "event": "track", "payload": {"v": 1}})
    assert (await teacher.until("phx_reply", ref=ref)).payload["status"] == "ok"
    await teacher.until("presence_diff", topic=topic)

    own_redis.kill()
    own_redis.restart()

    # The heartbeat renews the connection slot in Redis after its reply: a failure there would
    # answer a second time, with an InternalError.
    ref = await teacher.push("phoenix", "heartbeat", {})
    assert (await teacher.until("phx_reply", ref=ref)).payload == {"status": "ok", "response": {}}
    assert await teacher.no_message(0.5)

    admin = await sockets.open()
    reply = await admin.join(topic, token(a.admin_user), {**config, "presence": {"key": "admin"}})
    assert reply.payload["status"] == "ok", reply.payload
    state = await admin.until("presence_state", topic=topic)
    assert "teacher" in state.payload  # presence tracked before the restart is still there

    ref = await teacher.push(topic, "presence", {"type": "presence", "event": "track", "payload": {"v": 2}})
    assert (await teacher.until("phx_reply", ref=ref)).payload["status"] == "ok"
    diff = await admin.until("presence_diff", topic=topic)
    assert diff.payload["joins"]["teacher"]["metas"][0]["v"] == 2

    ref = await admin.push(topic, "broadcast", {"type": "broadcast", "event": "note", "payload": {"n": 1}})
    assert (await admin.until("phx_reply", ref=ref)).payload["status"] == "ok"
    note = await teacher.until("broadcast", topic=topic)
    assert note.payload["event"] == "note" and note.payload["payload"] == {"n": 1}
    await teacher.close()
    await admin.close()


async def test_sockets_rejoin_their_groups_and_catch_up_when_redis_comes_back_empty(schools, empty_redis, sockets):
    a = schools.a
    topic = socket_topic(a)
    await sync_to_async(_backlog_done)()
    listener = Listener(poll_interval=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    try:
        await asyncio.wait_for(listener.is_leader.wait(), 10)
        teacher = await sockets.joined(a.teacher_user, topic)
        ref = await teacher.push(topic, "presence", {"type": "presence", "event": "track", "payload": {"v": 1}})
        assert (await teacher.until("phx_reply", ref=ref)).payload["status"] == "ok"
        await sync_to_async(set_attendance)(a, "late")
        first = await teacher.until("broadcast", topic=topic, timeout=10)

        empty_redis.kill()
        await sync_to_async(set_attendance)(a, "present")  # while Redis is down
        await asyncio.sleep(1.0)
        await asyncio.to_thread(empty_redis.restart)  # without the groups, slots and presence
        await asyncio.sleep(0.5)
        await sync_to_async(set_attendance)(a, "absent")  # after it is back

        received = []
        while len(received) < 2:
            message = await teacher.until("broadcast", topic=topic, timeout=15)
            received.append(message.payload)
        assert [m["payload"]["payload"]["status"] for m in received] == ["present", "absent"]
        ids = [m["meta"]["id"] for m in received]
        assert ids[0] > first.payload["meta"]["id"] and ids == sorted(ids)
        await sync_to_async(set_attendance)(a, "late")  # live again, once
        after = await teacher.until("broadcast", topic=topic, timeout=10)
        assert after.payload["payload"]["payload"]["status"] == "late" and after.payload["meta"]["id"] > ids[-1]
        admin = await sockets.open()  # joins after the restart: the teacher's presence is back
        assert (await admin.join(topic, token(a.admin_user))).payload["status"] == "ok"
        state = await admin.until("presence_state", topic=topic)
        assert [meta["v"] for entry in state.payload.values() for meta in entry["metas"]] == [1]
        assert await teacher.no_message(1.0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_heartbeats_are_answered_while_redis_is_paused_and_the_slot_goes_with_the_socket(
    schools, own_redis, sockets
):
    """The slot's lease is renewed off the heartbeat's path: a paused Redis must not keep the socket
    from answering the next heartbeats (realtime-js drops a socket whose heartbeat goes unanswered
    until the next one, and reconnects), and the renewal in flight must not count the socket again
    after it closed."""
    a = schools.a
    teacher = await sockets.joined(a.teacher_user, socket_topic(a))
    slots = key("conn", "user", str(a.teacher_user.pk))
    assert len(await redis_client().zrange(slots, 0, -1)) == 1

    own_redis.pause()
    try:
        for _ in range(3):
            ref = await teacher.push("phoenix", "heartbeat", {})
            reply = await teacher.until("phx_reply", ref=ref, timeout=1)
            assert reply.payload == {"status": "ok", "response": {}}
        # Closed while Redis is paused: the communicator gives up waiting after a second and
        # cancels the application; the teardown still runs to the end once Redis answers.
        closing = asyncio.create_task(teacher.close())
        await asyncio.sleep(1.5)
    finally:
        own_redis.resume()
    await closing

    deadline = asyncio.get_running_loop().time() + 10
    while await redis_client().zrange(slots, 0, -1) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    assert await redis_client().zrange(slots, 0, -1) == []
    await asyncio.sleep(0.5)  # a renewal landing late would add the slot again
    assert await redis_client().zrange(slots, 0, -1) == []


async def test_a_catch_up_reads_up_to_its_first_short_page(schools):
    """What is fanned out after a short page reaches the regrouped socket live: the catch-up stops
    there instead of chasing the stream (every socket of a process waits on one database thread)."""
    a = schools.a
    topic = attendance_topic(a)
    seqs = await sync_to_async(store_notes)(a, CATCH_UP_PAGE + 3)
    claims = SimpleNamespace(tenant=Tenant(a.admin_user.organization_id, a.admin_user.pk, a.admin_user.role))
    sub_topic = topic.removeprefix("realtime:")

    full = await _stored_page(claims, sub_topic, after_id=seqs[0] - 1, since=None, size=CATCH_UP_PAGE)
    assert (full.events, full.last_seq) == (CATCH_UP_PAGE, seqs[CATCH_UP_PAGE - 1])
    assert [m["meta"]["id"] for m in full.messages] == seqs[:CATCH_UP_PAGE]
    short = await _stored_page(claims, sub_topic, after_id=full.last_seq, since=None, size=CATCH_UP_PAGE)
    assert short.events < short.asked and [m["meta"]["id"] for m in short.messages] == seqs[CATCH_UP_PAGE:]
