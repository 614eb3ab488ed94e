"""RealtimeSocket through Channels' WebsocketCommunicator: join, broadcast, presence, tokens."""

from __future__ import annotations

import asyncio
import json

import pytest

from events.protocol import VSN_1, VSN_2
from harry_realtime.testing import Socket, joined, socket_topic, token

# The consumer reads the database from a worker thread, so test data must be committed; the
# owner alias is listed because only it may flush the tables between tests (it owns them).
pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]


@pytest.mark.parametrize("vsn", [VSN_1, VSN_2])
async def test_heartbeat_and_join_reply_in_both_versions(schools, vsn):
    socket = Socket(vsn)
    await socket.connect()
    ref = await socket.push("phoenix", "heartbeat", {})
    beat = await socket.recv()
    assert (beat.topic, beat.event, beat.ref, beat.payload) == (
        "phoenix",
        "phx_reply",
        ref,
        {"status": "ok", "response": {}},
    )

    topic = socket_topic(schools.a)
    reply = await socket.join(topic, token(schools.a.teacher_user))
    assert reply.payload == {"status": "ok", "response": {"postgres_changes": []}}
    assert reply.join_ref == reply.ref
    state = await socket.recv()
    assert (state.event, state.payload, state.ref, state.join_ref) == ("presence_state", {}, None, None)
    await socket.close()


async def test_join_echoes_postgres_changes_with_ids_and_system_message(schools):
    topic = socket_topic(schools.a)
    bindings = [
        {"event": "*", "schema": "public", "table": "attendance", "filter": f"group_id=eq.{schools.a.group.pk}"},
        {"event": "INSERT", "schema": "public", "table": "student_rankings"},
    ]
    socket = Socket()
    await socket.connect()
    reply = await socket.join(topic, token(schools.a.teacher_user), {"postgres_changes": bindings})
    echoed = reply.payload["response"]["postgres_changes"]
    assert [{k: v for k, v in e.items() if k != "id"} for e in echoed] == bindings
    assert all(isinstance(e["id"], int) for e in echoed) and echoed[0]["id"] != echoed[1]["id"]
    await socket.until("presence_state")
    system = await socket.until("system")
    assert system.payload == {
        "extension": "postgres_changes",
        "status": "ok",
        "message": "Subscribed to PostgreSQL",
        "channel": topic.removeprefix("realtime:"),
    }
    await socket.close()


@pytest.mark.parametrize(
    ("binding", "needle"),
    [
        ({"event": "*", "schema": "public", "table": "users"}, "not published"),
        ({"event": "*", "schema": "public", "table": "attendance", "filter": "nope=eq.1"}, "no column"),
        ({"event": "*", "schema": "public", "table": "attendance", "filter": "status=like.x"}, "operator"),
        ({"event": "TRUNCATE", "schema": "public", "table": "attendance"}, "unknown event"),
    ],
)
async def test_invalid_postgres_changes_refuse_the_join(schools, binding, needle):
    socket = Socket()
    await socket.connect()
    reply = await socket.join(socket_topic(schools.a), token(schools.a.teacher_user), {"postgres_changes": [binding]})
    assert reply.payload["status"] == "error"
    assert reply.payload["response"]["reason"].startswith("InvalidPostgresChanges:")
    assert needle in reply.payload["response"]["reason"]
    await socket.close()


async def test_authorization_refuses_other_school_unrelated_subject_and_bad_tokens(schools, caplog):
    a, b = schools.a, schools.b
    socket = Socket()
    await socket.connect()
    cases = [
        (socket_topic(b), token(a.teacher_user), "Unauthorized: the topic belongs to another organization"),
        (socket_topic(a), token(a.outsider_user), "Unauthorized: no access"),
        (socket_topic(a), token(a.student_user), "Unauthorized: no access"),
        (f"realtime:rankings:org_{a.org.pk}:student_{a.other_student.pk}", token(a.student_user), "Unauthorized"),
        ("realtime:lobby", token(a.teacher_user), "Unauthorized: unknown topic pattern"),
        ("realtime:", token(a.teacher_user), "TopicNameRequired"),
        (socket_topic(a), None, "InvalidJWTToken: Invalid token"),  # falls back to apikey "anon"
        (socket_topic(a), "garbage", "InvalidJWTToken: Invalid token"),
        (socket_topic(a), token(a.teacher_user, ttl=-30), "InvalidJWTToken: Token has expired"),
        (socket_topic(a), token(a.teacher_user, organization_id=str(b.org.pk)), "InvalidJWTToken"),
    ]
    for topic, access_token, reason in cases:
        reply = await socket.join(topic, access_token)
        assert reply.payload["status"] == "error", (topic, reply.payload)
        assert reply.payload["response"]["reason"].startswith(reason), reply.payload
    assert "topic_denied" in caplog.text
    # The refusals left the socket usable.
    assert (await socket.join(socket_topic(a), token(a.admin_user))).payload["status"] == "ok"
    await socket.close()


async def test_topic_patterns_admit_the_spec_audiences(schools):
    a = schools.a
    org = a.org.pk
    allowed = [
        (a.student_user, f"rankings:org_{org}:student_{a.student.pk}"),
        (a.parent_user, f"tasks:org_{org}:student_{a.student.pk}"),
        (a.teacher_user, f"rankings:org_{org}:student_{a.student.pk}"),
        (a.teacher_user, f"groups:org_{org}:teacher_{a.teacher.pk}"),
        (a.admin_user, f"groups:org_{org}:teacher_{a.teacher.pk}"),
        (a.parent_user, f"notifications:org_{org}:role_parent"),
        (a.student_user, f"notifications:org_{org}:role_all"),
    ]
    for user, topic in allowed:
        socket = Socket()
        await socket.connect()
        reply = await socket.join(f"realtime:{topic}", token(user))
        assert reply.payload["status"] == "ok", (user.username, topic, reply.payload)
        await socket.close()


async def test_apikey_carries_the_jwt_when_no_api_key_is_configured(schools, settings):
    settings.REALTIME_API_KEY = ""
    socket = Socket(apikey=token(schools.a.teacher_user))
    await socket.connect()
    reply = await socket.join(socket_topic(schools.a), None)
    assert reply.payload["status"] == "ok"
    await socket.close()


async def test_configured_api_key_is_required_to_connect(schools, settings):
    settings.REALTIME_API_KEY = "server-key"
    refused = Socket(apikey="wrong")
    connected, _ = await refused.comm.connect()
    assert not connected
    socket = Socket(apikey="server-key")
    await socket.connect()
    # With a configured key the apikey is not a user token: the join must bring one.
    assert (await socket.join(socket_topic(schools.a), None)).payload["status"] == "error"
    assert (await socket.join(socket_topic(schools.a), token(schools.a.teacher_user))).payload["status"] == "ok"
    await socket.close()


async def test_unsupported_vsn_is_refused():
    socket = Socket(query="apikey=x&vsn=9.9.9")
    connected, _ = await socket.comm.connect()
    assert not connected


@pytest.mark.parametrize("vsn", [VSN_1, VSN_2])
async def test_broadcast_self_and_ack(schools, vsn):
    topic = socket_topic(schools.a)
    sender = await joined(schools.a.teacher_user, topic, vsn=vsn, config={"broadcast": {"self": True, "ack": True}})
    other = await joined(schools.a.admin_user, topic, vsn=vsn)
    ref = await sender.push(topic, "broadcast", {"type": "broadcast", "event": "row_focus", "payload": {"s": 1}})
    ack = await sender.until("phx_reply", ref=ref)
    assert ack.payload == {"status": "ok", "response": {}}
    # The server says who sent it (issue 13 item 3).
    meta = {"sender": {"user_id": str(schools.a.teacher_user.pk), "role": "teacher"}}
    expected = {"type": "broadcast", "event": "row_focus", "payload": {"s": 1}, "meta": meta}
    assert (await sender.until("broadcast")).payload == expected
    got = await other.until("broadcast")
    assert (got.topic, got.payload, got.ref, got.join_ref) == (topic, expected, None, None)

    # Without self the sender hears nothing of its own message; without ack there is no reply.
    await other.push(topic, "broadcast", {"type": "broadcast", "event": "row_blur", "payload": {}})
    assert (await sender.until("broadcast")).payload["event"] == "row_blur"
    assert await other.no_message()
    await sender.close()
    await other.close()


async def test_binary_broadcast_frames_of_vsn2_clients(schools):
    topic = socket_topic(schools.a)
    sender = await joined(schools.a.teacher_user, topic, vsn=VSN_2, config={"broadcast": {"ack": True}})
    listener = await joined(schools.a.admin_user, topic, vsn=VSN_1)
    join_ref, ref, event = sender.join_refs[topic], "9", "row_focus"
    body = json.dumps({"student": "x", "emoji": "✓"}).encode()
    header = bytes([3, len(join_ref), len(ref), len(topic), len(event), 0, 1])
    await sender.comm.send_to(bytes_data=header + (join_ref + ref + topic + event).encode() + body)
    assert (await sender.until("phx_reply", ref=ref)).payload["status"] == "ok"
    got = await listener.until("broadcast")
    assert got.payload == {
        "type": "broadcast",
        "event": event,
        "payload": {"student": "x", "emoji": "✓"},
        "meta": {"sender": {"user_id": str(schools.a.teacher_user.pk), "role": "teacher"}},
    }
    await sender.close()
    await listener.close()


async def test_broadcast_payload_limit_replies_error_and_keeps_socket(schools, settings):
    settings.REALTIME_MAX_PAYLOAD_BYTES = 64 * 1024
    topic = socket_topic(schools.a)
    sender = await joined(schools.a.teacher_user, topic)
    other = await joined(schools.a.admin_user, topic)
    big = {"blob": "x" * (64 * 1024)}
    ref = await sender.push(topic, "broadcast", {"type": "broadcast", "event": "big", "payload": big})
    refused = await sender.until("phx_reply", ref=ref)
    assert refused.payload["status"] == "error"
    assert refused.payload["response"]["error"] == "payload_size_exceeded"
    assert await other.no_message()
    await sender.push(topic, "broadcast", {"type": "broadcast", "event": "small", "payload": {"blob": "x" * 60000}})
    assert (await other.until("broadcast")).payload["event"] == "small"
    await sender.close()
    await other.close()


async def test_server_side_group_message_reaches_joined_sockets_with_meta(schools):
    from channels.layers import get_channel_layer

    from events.topics import group_name

    topic = socket_topic(schools.a)
    socket = await joined(schools.a.teacher_user, topic)
    sub_topic = topic.removeprefix("realtime:")
    await get_channel_layer().group_send(
        group_name(sub_topic),
        {
            "type": "realtime.broadcast",
            "topic": sub_topic,
            "event": "attendance_sync",
            "payload": {"a": 1},
            "meta": {"id": "e1"},
            "sender": None,
        },
    )
    got = await socket.until("broadcast")
    assert got.payload == {"type": "broadcast", "event": "attendance_sync", "payload": {"a": 1}, "meta": {"id": "e1"}}
    await socket.close()


async def test_presence_track_untrack_and_disconnect_diffs(schools):
    topic = socket_topic(schools.a)
    first = await joined(schools.a.teacher_user, topic, config={"presence": {"key": "t1", "enabled": True}})
    ref = await first.push(
        topic, "presence", {"type": "presence", "event": "track", "payload": {"activity": "marking"}}
    )
    assert (await first.until("phx_reply", ref=ref)).payload["status"] == "ok"
    diff = await first.until("presence_diff")
    (meta,) = diff.payload["joins"]["t1"]["metas"]
    assert meta["activity"] == "marking" and meta["phx_ref"]
    assert diff.payload["leaves"] == {}

    second = Socket()
    await second.connect()
    await second.join(topic, token(schools.a.admin_user), {"presence": {"key": ""}})
    state = await second.until("presence_state")
    assert state.payload == {"t1": {"metas": [meta]}}

    # Re-tracking is a leave of the old meta and a join of the new one, in one diff.
    await first.push(topic, "presence", {"type": "presence", "event": "track", "payload": {"activity": "done"}})
    assert (await first.until("presence_diff")).payload["leaves"] == {"t1": {"metas": [meta]}}
    retrack = await second.until("presence_diff")
    assert retrack.payload["leaves"] == {"t1": {"metas": [meta]}}
    assert retrack.payload["joins"]["t1"]["metas"][0]["activity"] == "done"

    # An empty key gets one from the server.
    await second.push(topic, "presence", {"type": "presence", "event": "track", "payload": {}})
    joined_diff = await first.until("presence_diff")
    (assigned,) = joined_diff.payload["joins"].keys()
    assert assigned and assigned != "t1"

    await second.push(topic, "presence", {"type": "presence", "event": "untrack"})
    assert list((await first.until("presence_diff")).payload["leaves"]) == [assigned]
    await second.until("presence_diff")  # its own join
    await second.until("presence_diff")  # its own leave

    # An abrupt disconnect still publishes the leave.
    await first.close()
    left = await second.until("presence_diff")
    assert list(left.payload["leaves"]) == ["t1"]
    await second.close()


async def test_leave_unmatched_topic_and_rejoin(schools):
    topic = socket_topic(schools.a)
    socket = await joined(schools.a.teacher_user, topic)
    old_join_ref = socket.join_refs[topic]

    # Re-joining closes the old join (its phx_close carries the old join_ref) before the reply.
    new_join_ref = await socket.push(topic, "phx_join", {"access_token": token(schools.a.teacher_user)}, join_ref="50")
    close = await socket.recv()
    assert (close.event, close.join_ref, close.topic) == ("phx_close", old_join_ref, topic)
    reply = await socket.recv()
    assert (reply.event, reply.payload["status"], reply.ref) == ("phx_reply", "ok", new_join_ref)
    socket.join_refs[topic] = "50"

    ref = await socket.push(topic, "phx_leave", {})
    assert (await socket.until("phx_reply", ref=ref)).payload["status"] == "ok"
    assert (await socket.until("phx_close")).join_ref == socket.join_refs[topic]

    ref = await socket.push(topic, "broadcast", {"type": "broadcast", "event": "x", "payload": {}})
    unmatched = await socket.until("phx_reply", ref=ref)
    assert unmatched.payload == {"status": "error", "response": {"reason": "unmatched topic"}}
    await socket.close()


async def test_access_token_refresh_and_invalid_token_closes_channel(schools):
    topic = socket_topic(schools.a)
    socket = await joined(schools.a.teacher_user, topic)
    await socket.push(topic, "access_token", {"access_token": token(schools.a.teacher_user)})
    assert await socket.no_message()

    await socket.push(topic, "access_token", {"access_token": token(schools.a.admin_user)})
    system = await socket.until("system")
    assert system.payload["extension"] == "system" and system.payload["status"] == "error"
    assert (await socket.until("phx_close")).topic == topic
    ref = await socket.push(topic, "broadcast", {"type": "broadcast", "event": "x", "payload": {}})
    assert (await socket.until("phx_reply", ref=ref)).payload["response"]["reason"] == "unmatched topic"
    await socket.close()


async def test_token_expiry_mid_session_sends_system_error_then_close(schools):
    topic = socket_topic(schools.a)
    socket = Socket()
    await socket.connect()
    assert (await socket.join(topic, token(schools.a.teacher_user, ttl=2))).payload["status"] == "ok"
    system = await socket.until("system", timeout=6)
    assert system.payload["status"] == "error"
    assert system.payload["message"].startswith("Token has expired")
    assert (await socket.until("phx_close")).topic == topic
    await socket.close()


async def test_refreshed_token_postpones_expiry(schools):
    topic = socket_topic(schools.a)
    socket = Socket()
    await socket.connect()
    assert (await socket.join(topic, token(schools.a.teacher_user, ttl=2))).payload["status"] == "ok"
    await socket.push(topic, "access_token", {"access_token": token(schools.a.teacher_user, ttl=600)})
    await socket.until("presence_state")
    await asyncio.sleep(2.5)
    await socket.push(topic, "broadcast", {"type": "broadcast", "event": "x", "payload": {}})
    # Still joined: no expiry message, and a broadcast without ack gets no error reply.
    assert await socket.no_message(0.5)
    await socket.close()
