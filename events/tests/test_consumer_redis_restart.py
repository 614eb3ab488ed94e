"""The socket gateway across a Redis restart: the web process's pooled Redis connections (slots,
presence, the channel layer) are dead once Redis is back, and must not fail the next join,
heartbeat, presence track or broadcast (harry_realtime/redis_conn.py, retry_options)."""

import secrets

import pytest
from django.conf import settings as django_settings

from harry_realtime import redis_conn
from harry_realtime.testing import socket_topic, token
from harry_realtime.tests.test_redis_conn import OwnRedis

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("worker_connections_closed")]


@pytest.fixture
def own_redis(settings, tmp_path):
    """Every Redis client of the gateway (channel layer, slots, presence) on a Redis the test restarts."""
    server = OwnRedis(tmp_path)
    config = dict(django_settings.CHANNEL_LAYERS["default"]["CONFIG"])
    config["hosts"] = [redis_conn.channel_layer_host(server.url, [], "", socket_timeout=None)]
    config["prefix"] = f"restart{secrets.token_hex(3)}"
    settings.CHANNEL_LAYERS = {"default": {**django_settings.CHANNEL_LAYERS["default"], "CONFIG": config}}
    settings.REDIS_URL = server.url
    yield server
    server.stop()


async def test_joins_heartbeats_presence_and_broadcasts_work_right_after_a_redis_restart(schools, sockets, own_redis):
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
