"""Issue 13: the WebSocket frame fuzz. Frames no client should send — invalid JSON, the other
protocol version's shape, wrong arity, wrong types, unknown events, binary garbage, lone
surrogates, deep nesting, huge numbers, oversize frames, floods, joins of malformed topics, and
messages on topics the socket never joined — go to the real ASGI application
(harry_realtime/asgi.py) on the real Redis and PostgreSQL, as a fixed corpus and as
Hypothesis-generated frames (derandomized, bounded).

After every frame: the consumer did not crash, the socket is still open (unless the server closed
it on purpose with a documented code), the frame got a protocol error reply or none at all (never
the `InternalError` last resort, never more than one reply, no ERROR log), and a heartbeat still
answers. After each run: the server's state of the socket is what its answers told the client —
joined channels, their channel-layer groups, tracked presences and the user's one connection
slot — a valid join still works, and closing the socket releases all of it.
The real uvicorn server gets what the communicator cannot express (invalid UTF-8 text frames,
frames past the server's own size limit): tests/security/test_ws_frame_fuzz_server.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from events.protocol import VSN_1, VSN_2
from events.topics import groups_topic, notifications_topic
from harry_realtime.testing import socket_topic, token

from .fuzzsocket import (
    Closed,
    Probe,
    ServerRegistry,
    assert_consistent,
    assert_released,
    findings,
    internal_error,
    product_application,
)

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]

MALFORMED = "MalformedMessage"
UNMATCHED = "unmatched topic"


@pytest.fixture(scope="module")
def application():
    return product_application()


@pytest.fixture
def registry(monkeypatch):
    return ServerRegistry(monkeypatch)


@pytest.fixture
def generous_rate(settings):
    """The corpus and the generated runs send hundreds of frames a second; the rate limit has its
    own test (test_floods_are_rate_limited_and_the_socket_recovers)."""
    settings.REALTIME_MAX_MESSAGES_PER_SECOND = 1_000_000


@pytest.fixture
def no_error_logs(caplog):
    """Nothing the fuzz sends may make the server log an error (the consumer's catch-all, the
    presence mirror's failed writes, a crashed handler all log at ERROR)."""
    caplog.set_level(logging.INFO)
    yield caplog
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


@dataclass
class World:
    """One school's teacher and the topics the fuzz aims at."""

    user: Any
    token: str
    joined: str  # the channel every run starts joined to
    unjoined: str  # a channel the teacher may join but has not
    other_school: str
    teacher_tokens: dict[str, Any]


@pytest.fixture
def world(schools) -> World:
    a, b = schools.a, schools.b
    return World(
        user=a.teacher_user,
        token=token(a.teacher_user),
        joined=socket_topic(a),
        unjoined=f"realtime:{notifications_topic(a.org.pk, 'all')}",
        other_school=socket_topic(b),
        teacher_tokens={
            "valid": token(a.teacher_user),
            "expired": token(a.teacher_user, ttl=-30),
            "another user": token(a.admin_user),
            "another school": token(b.teacher_user),
            "wrong key": token(a.teacher_user, iss="elsewhere"),
            "garbage": "garbage",
            "not a string": 5,
            "a list": [],
            "an object": {"access_token": "x"},
            "empty": "",
            "nul": "\x00",
        },
    )


async def opened(application, registry, world: World, vsn: str) -> Probe:
    probe = Probe(application, registry, vsn)
    await probe.connect()
    reply = await probe.join(world.joined, world.token, {"presence": {"key": "fuzz"}}, ref="start")
    assert reply.payload["status"] == "ok", reply.payload
    return probe


# -- the fixed corpus -------------------------------------------------------------------------------


@dataclass
class Case:
    """One frame and what must answer it: `error` (one error reply whose reason or error starts
    with `reason`, on `topic` and `ref`), `ignored` (no reply at all) or `answered` (one reply,
    either status: frames whose acceptance depends on details the corpus does not pin down)."""

    label: str
    text: str | None = None
    data: bytes | None = None
    expect: str = "error"
    reason: str = ""
    topic: str | None = "phoenix"
    ref: str | None = None


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def binary(
    join_ref: str, ref: str, topic: str, event: str, payload: bytes, *, meta: str = "", encoding: int = 1, sizes=None
) -> bytes:
    """A kind-3 user broadcast push as realtime-js lays it out (`sizes` lies about the lengths)."""
    fields = (join_ref, ref, topic, event, meta)
    header = bytes([3, *(sizes or [len(f) for f in fields]), encoding])
    return header + "".join(fields).encode("latin-1") + payload


def corpus(probe: Probe, world: World) -> list[Case]:
    T, U, vsn = world.joined, world.unjoined, probe.vsn

    def frame(topic: Any, event: Any, payload: Any, ref: Any = "c", join_ref: Any = None) -> str:
        return probe.envelope(join_ref, ref, topic, event, payload)

    def err(label: str, text: str, reason: str, topic: str | None = None, ref: str | None = "c") -> Case:
        return Case(label, text=text, reason=reason, topic=topic, ref=ref)

    org = world.user.organization_id
    big = 2**63  # parses as an integer (orjson reads up to 2**64 - 1) but is past PostgreSQL's bigint
    cases = [
        # Not JSON, or not a message.
        Case("invalid JSON", text="{not json", reason=MALFORMED),
        Case("empty text frame", text="", reason=MALFORMED),
        Case("whitespace only", text=" \n\t ", reason=MALFORMED),
        Case("JSON null", text="null", reason=MALFORMED),
        Case("JSON string", text='"phx_join"', reason=MALFORMED),
        Case("JSON number past a double", text="1e400", reason=MALFORMED),
        Case("NaN", text="[NaN]", reason=MALFORMED),
        Case("trailing garbage", text=frame("phoenix", "heartbeat", {}) + "]", reason=MALFORMED),
        Case("arrays nested 100,000 deep", text=nested(100_000), reason=MALFORMED),
        Case("objects nested 100,000 deep", text='{"a":' * 100_000 + "1" + "}" * 100_000, reason=MALFORMED),
        Case(
            "lone surrogate, escaped",
            text=frame(T, "broadcast", {"type": "broadcast", "event": "e", "payload": "\ud800"}),
            reason=MALFORMED,
        ),
        Case(
            "lone surrogate, raw", text=json.dumps([None, "c", T, "\udfff", {}], ensure_ascii=False), reason=MALFORMED
        ),
        Case("reversed surrogate pair", text='["\\udc00\\ud800"]', reason=MALFORMED),
        # The other version's shape, and wrong arity.
        Case(
            "the other version's shape",
            text=json.dumps({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "c"})
            if vsn == VSN_2
            else json.dumps([None, "c", "phoenix", "heartbeat", {}]),
            reason=MALFORMED,
        ),
        Case("empty array", text="[]", reason=MALFORMED),
        Case("empty object", text="{}", reason=MALFORMED),
        Case("four elements", text=json.dumps([None, "c", "phoenix", "heartbeat"]), reason=MALFORMED),
        Case("six elements", text=json.dumps([None, "c", "phoenix", "heartbeat", {}, {}]), reason=MALFORMED),
        Case("one element", text=json.dumps([[None, "c", "phoenix", "heartbeat", {}]]), reason=MALFORMED),
        # Wrong types for topic / event / ref / join_ref.
        err("topic a number", frame(5, "heartbeat", {}), MALFORMED, "phoenix"),
        err("topic null", frame(None, "heartbeat", {}), MALFORMED, "phoenix"),
        err("topic empty", frame("", "heartbeat", {}), MALFORMED, "phoenix"),
        err("topic an object", frame({"t": T}, "phx_join", {}), MALFORMED, "phoenix"),
        err("event a number", frame(T, 7, {}), MALFORMED, T),
        err("event null", frame(T, None, {}), MALFORMED, T),
        err("event a list", frame(T, ["broadcast"], {}), MALFORMED, T),
        err("ref a float", frame(T, "broadcast", {}, ref=1.5), MALFORMED, T, None),
        err("ref a boolean", frame(T, "broadcast", {}, ref=True), MALFORMED, T, None),
        err("ref an object", frame(T, "broadcast", {}, ref={"r": 1}), MALFORMED, T, None),
        err("join_ref a list", frame(T, "broadcast", {}, join_ref=[1]), MALFORMED, T, None),
        err("ref a number past 64 bits", frame(T, "broadcast", {}, ref=2**64), MALFORMED, T, None),
        # Wrong payload types for each event of a joined topic.
        err("broadcast payload a string", frame(T, "broadcast", "x"), "invalid_broadcast", T),
        err("broadcast payload a list", frame(T, "broadcast", [1]), "invalid_broadcast", T),
        err("broadcast payload null", frame(T, "broadcast", None), "invalid_broadcast", T),
        err(
            "broadcast event a number", frame(T, "broadcast", {"type": "broadcast", "event": 5}), "invalid_broadcast", T
        ),
        err("broadcast event empty", frame(T, "broadcast", {"type": "broadcast", "event": ""}), "invalid_broadcast", T),
        err(
            "broadcast payload past 64 KB",
            frame(T, "broadcast", {"type": "broadcast", "event": "e", "payload": "x" * 70_000}),
            "payload_size_exceeded",
            T,
        ),
        err(
            "broadcast payload nested 1,000 deep (parses, cannot be relayed)",
            frame(T, "broadcast", {"type": "broadcast", "event": "e", "payload": "@"}).replace('"@"', nested(1000)),
            MALFORMED,
            T,
        ),
        err("presence payload a string", frame(T, "presence", "track"), "UnknownPresenceEvent", T),
        err("presence without an event", frame(T, "presence", {"type": "presence"}), "UnknownPresenceEvent", T),
        err(
            "presence event unknown",
            frame(T, "presence", {"type": "presence", "event": "dance"}),
            "UnknownPresenceEvent",
            T,
        ),
        err(
            "presence meta a list",
            frame(T, "presence", {"type": "presence", "event": "track", "payload": [1]}),
            "InvalidPresence",
            T,
        ),
        err(
            "presence meta a string",
            frame(T, "presence", {"type": "presence", "event": "track", "payload": "x"}),
            "InvalidPresence",
            T,
        ),
        err(
            "presence meta past 64 KB",
            frame(T, "presence", {"type": "presence", "event": "track", "payload": {"a": "x" * 70_000}}),
            "payload_size_exceeded",
            T,
        ),
        err("delivery_ack payload a list", frame(T, "delivery_ack", [1]), "InvalidDeliveryAck", T),
        err("delivery_ack without ids", frame(T, "delivery_ack", {}), "InvalidDeliveryAck", T),
        err("delivery_ack ids empty", frame(T, "delivery_ack", {"ids": []}), "InvalidDeliveryAck", T),
        err("delivery_ack ids strings", frame(T, "delivery_ack", {"ids": ["1"]}), "InvalidDeliveryAck", T),
        err("delivery_ack ids booleans", frame(T, "delivery_ack", {"ids": [True]}), "InvalidDeliveryAck", T),
        err("delivery_ack ids floats", frame(T, "delivery_ack", {"ids": [1.0]}), "InvalidDeliveryAck", T),
        err("delivery_ack 501 ids", frame(T, "delivery_ack", {"ids": list(range(501))}), "InvalidDeliveryAck", T),
        err("delivery_ack id past bigint", frame(T, "delivery_ack", {"ids": [big]}), "InvalidDeliveryAck", T),
        err("delivery_ack id below bigint", frame(T, "delivery_ack", {"ids": [-big - 1]}), "InvalidDeliveryAck", T),
        # Unknown events; server events sent by a client.
        err("unknown event on a joined topic", frame(T, "shout", {}), "UnknownEvent", T),
        err("phx_reply from a client", frame(T, "phx_reply", {"status": "ok"}), "UnknownEvent", T),
        err("system from a client", frame(T, "system", {}), "UnknownEvent", T),
        err("postgres_changes from a client", frame(T, "postgres_changes", {"ids": [1]}), "UnknownEvent", T),
        err("unknown event on phoenix", frame("phoenix", "shout", {}), UNMATCHED, "phoenix"),
        err("phx_join on phoenix", frame("phoenix", "phx_join", {}), UNMATCHED, "phoenix"),
        err("heartbeat on a channel topic", frame(T, "heartbeat", {}), "UnknownEvent", T),
        # Messages on topics this socket never joined.
        err(
            "broadcast on an unjoined topic",
            frame(U, "broadcast", {"type": "broadcast", "event": "e", "payload": {}}),
            UNMATCHED,
            U,
        ),
        err(
            "presence on an unjoined topic",
            frame(U, "presence", {"type": "presence", "event": "track", "payload": {}}),
            UNMATCHED,
            U,
        ),
        err("access_token on an unjoined topic", frame(U, "access_token", {"access_token": world.token}), UNMATCHED, U),
        err("delivery_ack on an unjoined topic", frame(U, "delivery_ack", {"ids": [1]}), UNMATCHED, U),
        err("phx_leave of an unjoined topic", frame(U, "phx_leave", {}), UNMATCHED, U),
        err(
            "broadcast on another school's topic",
            frame(world.other_school, "broadcast", {"type": "broadcast", "event": "e"}),
            UNMATCHED,
            world.other_school,
        ),
        err(
            "broadcast on the bare prefix",
            frame("realtime:", "broadcast", {"type": "broadcast", "event": "e"}),
            UNMATCHED,
            "realtime:",
        ),
        err(
            "profile broadcast before joining it",
            frame("realtime:connection:profile", "broadcast", {"type": "broadcast", "event": "update", "payload": {}}),
            UNMATCHED,
            "realtime:connection:profile",
        ),
        Case(
            "access_token on the profile topic is ignored",
            text=frame("realtime:connection:profile", "access_token", {"access_token": 5}),
            expect="ignored",
        ),
        # Joins of malformed topics, and malformed joins of a topic the teacher may join.
        err(
            "join of the bare prefix",
            frame("realtime:", "phx_join", {"access_token": world.token}),
            "TopicNameRequired",
            "realtime:",
        ),
        err(
            "join without the prefix",
            frame(T.removeprefix("realtime:"), "phx_join", {"access_token": world.token}),
            "TopicNameRequired",
            T.removeprefix("realtime:"),
        ),
        err(
            "join of an unknown pattern",
            frame("realtime:lobby", "phx_join", {"access_token": world.token}),
            "Unauthorized",
            "realtime:lobby",
        ),
        err(
            "join with a trailing newline",
            frame(T + "\n", "phx_join", {"access_token": world.token}),
            "Unauthorized",
            T + "\n",
        ),
        err(
            "join with upper-case ids",
            frame(T.upper().replace("REALTIME:", "realtime:"), "phx_join", {"access_token": world.token}),
            "Unauthorized",
            T.upper().replace("REALTIME:", "realtime:"),
        ),
        err(
            "join with a NUL", frame(T + "\x00", "phx_join", {"access_token": world.token}), "Unauthorized", T + "\x00"
        ),
        err(
            "join of 10,000 characters",
            frame("realtime:" + "a" * 10_000, "phx_join", {"access_token": world.token}),
            "Unauthorized",
            "realtime:" + "a" * 10_000,
        ),
        err(
            "join of colons only",
            frame("realtime::::", "phx_join", {"access_token": world.token}),
            "Unauthorized",
            "realtime::::",
        ),
        err(
            "join of another school's topic",
            frame(world.other_school, "phx_join", {"access_token": world.token}),
            "Unauthorized",
            world.other_school,
        ),
        err(
            "join of another role's topic",
            frame(f"realtime:{notifications_topic(org, 'admin')}", "phx_join", {"access_token": world.token}),
            "Unauthorized",
            f"realtime:{notifications_topic(org, 'admin')}",
        ),
        err("join payload a string", frame(U, "phx_join", "x"), "InvalidJWTToken", U),
        err(
            "join config a list",
            frame(U, "phx_join", {"config": [1], "access_token": world.token}),
            "InvalidJoinPayload",
            U,
        ),
        err(
            "join config a string",
            frame(U, "phx_join", {"config": "x", "access_token": world.token}),
            "InvalidJoinPayload",
            U,
        ),
        err(
            "join config.broadcast a string",
            frame(U, "phx_join", {"config": {"broadcast": "x"}, "access_token": world.token}),
            "InvalidJoinPayload",
            U,
        ),
        err(
            "join config.broadcast a list",
            frame(U, "phx_join", {"config": {"broadcast": [1]}, "access_token": world.token}),
            "InvalidJoinPayload",
            U,
        ),
        err(
            "join config.presence a list",
            frame(U, "phx_join", {"config": {"presence": [1]}, "access_token": world.token}),
            "InvalidJoinPayload",
            U,
        ),
        err(
            "join config.presence.key an object",
            frame(U, "phx_join", {"config": {"presence": {"key": {"k": 1}}}, "access_token": world.token}),
            "InvalidJoinPayload",
            U,
        ),
        err(
            "join postgres_changes a string",
            frame(U, "phx_join", {"config": {"postgres_changes": "x"}, "access_token": world.token}),
            "InvalidPostgresChanges",
            U,
        ),
        err(
            "join postgres_changes an object",
            frame(U, "phx_join", {"config": {"postgres_changes": {"event": "*"}}, "access_token": world.token}),
            "InvalidPostgresChanges",
            U,
        ),
        err(
            "join postgres_changes of numbers",
            frame(U, "phx_join", {"config": {"postgres_changes": [1, 2]}, "access_token": world.token}),
            "InvalidPostgresChanges",
            U,
        ),
        err(
            "join postgres_changes wrong types",
            frame(
                U,
                "phx_join",
                {
                    "config": {"postgres_changes": [{"event": 5, "schema": [], "table": {}, "filter": 1}]},
                    "access_token": world.token,
                },
            ),
            "InvalidPostgresChanges",
            U,
        ),
        err(
            "join replay a string",
            frame(U, "phx_join", {"config": {"broadcast": {"replay": "x"}}, "access_token": world.token}),
            "InvalidReplay",
            U,
        ),
        err(
            "join replay since past any date",
            frame(U, "phx_join", {"config": {"broadcast": {"replay": {"since": big}}}, "access_token": world.token}),
            "InvalidReplay",
            U,
        ),
        err(
            "join replay after_id past bigint",
            frame(U, "phx_join", {"config": {"broadcast": {"replay": {"after_id": big}}}, "access_token": world.token}),
            "InvalidReplay",
            U,
        ),
        err(
            "join replay limit huge",
            frame(
                U,
                "phx_join",
                {"config": {"broadcast": {"replay": {"since": 0, "limit": big}}}, "access_token": world.token},
            ),
            "InvalidReplay",
            U,
        ),
        err(
            "join batch a string",
            frame(U, "phx_join", {"config": {"broadcast": {"batch": "x"}}, "access_token": world.token}),
            "InvalidBatch",
            U,
        ),
        err(
            "join batch max_events huge",
            frame(
                U, "phx_join", {"config": {"broadcast": {"batch": {"max_events": big}}}, "access_token": world.token}
            ),
            "InvalidBatch",
            U,
        ),
    ]
    cases += [
        err(f"join with a token that is {name}", frame(U, "phx_join", {"access_token": value}), "InvalidJWTToken", U)
        for name, value in world.teacher_tokens.items()
        if name != "valid"
    ]
    cases += [
        # Control frames that are fine whatever their payload.
        Case("heartbeat with a list payload", text=frame("phoenix", "heartbeat", [1, 2]), expect="answered", ref="c"),
        Case(
            "heartbeat with a number ref", text=frame("phoenix", "heartbeat", {}, ref=12), expect="answered", ref="12"
        ),
        Case(
            "untrack without a track",
            text=frame(T, "presence", {"type": "presence", "event": "untrack"}),
            expect="answered",
            topic=T,
            ref="c",
        ),
        # Presence metas are mirrored into PostgreSQL, whose text cannot hold NUL: dropped, not failed.
        Case(
            "track of a meta with NUL characters",
            text=frame(
                T,
                "presence",
                {
                    "type": "presence",
                    "event": "track",
                    "payload": {
                        "activity": "a\x00",
                        "current_screen": "\x00",
                        "app_version": "1\x00",
                        "status": "online\x00",
                    },
                },
            ),
            expect="answered",
            topic=T,
            ref="c",
        ),
        Case(
            "untrack again",
            text=frame(T, "presence", {"type": "presence", "event": "untrack"}),
            expect="answered",
            topic=T,
            ref="c",
        ),
        # Binary frames: garbage, lying headers, other kinds, raw encoding, bad JSON, invalid UTF-8.
        Case("one zero byte", data=b"\x00", reason=MALFORMED),
        Case("kind 3 alone", data=b"\x03", reason=MALFORMED),
        Case("every byte value", data=bytes(range(256)), reason=MALFORMED),
        Case("kind 4 (server to client)", data=bytes([4, 0, 0, 1, 1, 0, 1]) + b"te{}", reason=MALFORMED),
        Case(
            "lengths past the end",
            data=binary("1", "c", T, "e", b"{}", sizes=[200, 200, 200, 200, 200]),
            reason=MALFORMED,
        ),
        Case("no topic", data=binary("1", "c", "", "e", b"{}"), reason=MALFORMED, ref="c"),
        Case(
            "raw payload encoding",
            data=binary("1", "c", T, "e", b"\x01\x02", encoding=0),
            reason=MALFORMED,
            topic=T,
            ref="c",
        ),
        Case(
            "unknown payload encoding",
            data=binary("1", "c", T, "e", b"{}", encoding=9),
            reason=MALFORMED,
            topic=T,
            ref="c",
        ),
        Case("invalid JSON payload", data=binary("1", "c", T, "e", b"{nope"), reason=MALFORMED, topic=T, ref="c"),
        Case(
            "invalid UTF-8 payload",
            data=binary("1", "c", T, "e", b'"\xff\xfe\xc0\x80"'),
            reason=MALFORMED,
            topic=T,
            ref="c",
        ),
        Case(
            "deeply nested payload",
            data=binary("1", "c", T, "e", nested(100_000).encode()),
            reason=MALFORMED,
            topic=T,
            ref="c",
        ),
        Case(
            "payload nested 1,000 deep",
            data=binary("1", "c", T, "e", nested(1000).encode()),
            reason=MALFORMED,
            topic=T,
            ref="c",
        ),
        Case("metadata not JSON", data=binary("1", "c", T, "e", b"{}", meta="{x"), reason=MALFORMED, topic=T, ref="c"),
        Case(
            "latin-1 topic",
            data=binary("1", "c", "realtime:\xe9\xff", "e", b"{}"),
            reason=UNMATCHED,
            topic="realtime:\xe9\xff",
            ref="c",
        ),
        Case(
            "binary broadcast on an unjoined topic",
            data=binary("1", "c", U, "e", b"{}"),
            reason=UNMATCHED,
            topic=U,
            ref="c",
        ),
        Case(
            "binary broadcast without an event",
            data=binary("1", "c", T, "", b"{}"),
            reason="invalid_broadcast",
            topic=T,
            ref="c",
        ),
        Case(
            "binary broadcast past 64 KB",
            data=binary("1", "c", T, "e", json.dumps("x" * 70_000).encode()),
            reason="payload_size_exceeded",
            topic=T,
            ref="c",
        ),
        Case(
            "binary broadcast with a non-object metadata",
            data=binary("1", "c", T, "e", b"{}", meta="[1]"),
            expect="ignored",
        ),
        Case("binary broadcast of JSON null", data=binary("1", "c", T, "e", b"null"), expect="ignored"),
    ]
    P = "realtime:connection:profile"  # the reserved profile topic (docs/protocol.md)
    cases += [
        err("profile join with a bad token", frame(P, "phx_join", {"access_token": "garbage"}), "InvalidJWTToken", P),
        err(
            "profile join config a string",
            frame(P, "phx_join", {"config": "x", "access_token": world.token}),
            "InvalidJoinPayload",
            P,
        ),
        err(
            "profile join config.broadcast a list",
            frame(P, "phx_join", {"config": {"broadcast": [1]}, "access_token": world.token}),
            "InvalidJoinPayload",
            P,
        ),
        Case(
            "profile join",
            text=frame(P, "phx_join", {"config": {"broadcast": {"ack": True}}, "access_token": world.token}),
            expect="answered",
            topic=P,
            ref="c",
        ),
        err(
            "profile update not an object",
            frame(P, "broadcast", {"type": "broadcast", "event": "update", "payload": "x"}),
            "InvalidProfile",
            P,
        ),
        err(
            "profile battery past 64 bits",
            frame(P, "broadcast", {"type": "broadcast", "event": "update", "payload": {"battery_level": 2**64 - 1}}),
            "InvalidProfile",
            P,
        ),
        err(
            "profile battery a float",
            frame(P, "broadcast", {"type": "broadcast", "event": "update", "payload": {"battery_level": 1e300}}),
            "InvalidProfile",
            P,
        ),
        err(
            "profile battery text",
            frame(P, "broadcast", {"type": "broadcast", "event": "update", "payload": {"battery_level": "nan"}}),
            "InvalidProfile",
            P,
        ),
        err(
            "profile app_state a list",
            frame(P, "broadcast", {"type": "broadcast", "event": "update", "payload": {"app_state": ["background"]}}),
            "InvalidProfile",
            P,
        ),
        err("profile unknown event", frame(P, "shout", {}), UNMATCHED, P),
        Case("profile leave", text=frame(P, "phx_leave", {}), expect="answered", topic=P, ref="c"),
    ]
    return cases


def check_answer(case: Case, answer: list) -> None:
    assert not findings(answer), (case.label, findings(answer))
    replies = [m for m in answer if m.event == "phx_reply"]
    if case.expect == "ignored":
        assert not replies, (case.label, answer)
        return
    assert len(replies) == 1, (case.label, answer)
    reply = replies[0]
    if case.expect == "answered":
        assert (reply.topic, reply.ref) == (case.topic, case.ref), (case.label, reply)
        return
    response = reply.payload["response"]
    said = [response.get("reason"), response.get("error")]  # a reason text, or a machine code
    assert reply.payload["status"] == "error", (case.label, reply)
    assert any(isinstance(s, str) and s.startswith(case.reason) for s in said), (case.label, reply)
    assert (reply.topic, reply.ref) == (case.topic, case.ref), (case.label, reply)


@pytest.mark.usefixtures("generous_rate")
@pytest.mark.parametrize("vsn", [VSN_1, VSN_2])
async def test_fixed_corpus_is_answered_and_leaves_the_socket_consistent(
    application, registry, world, vsn, no_error_logs
):
    probe = await opened(application, registry, world, vsn)
    try:
        cases = corpus(probe, world)
        findings = []  # every case is tried, so one run lists every finding
        for case in cases:
            answer = await probe.exchange(text=case.text, data=case.data)
            assert not isinstance(answer, Closed), (case.label, answer)
            try:
                check_answer(case, answer)
            except AssertionError as finding:
                findings.append(str(finding)[:500])
        assert not findings, "\n".join(findings)
        # Nothing in the corpus may join or leave a channel, track, or take a second slot.
        assert probe.client_joined == {world.joined}
        await assert_consistent(probe, world.user)
        # The socket still does everything a client needs.
        assert (await probe.join(world.unjoined, world.token)).payload["status"] == "ok"
        track = probe.envelope(
            "start",
            "t",
            world.joined,
            "presence",
            {"type": "presence", "event": "track", "payload": {"status": "online"}},
        )
        answer = await probe.exchange(text=track)
        assert [m.payload["status"] for m in answer if m.event == "phx_reply"] == ["ok"]
        await assert_consistent(probe, world.user)
        assert len(cases) == 141  # README, Security model
    finally:
        await probe.close()
    await assert_released(probe, world.user)


# -- frames that end a channel or the socket on purpose ----------------------------------------------


@pytest.mark.usefixtures("generous_rate")
@pytest.mark.parametrize("bad", ["garbage", "expired", "another user", "not a string"])
async def test_a_bad_access_token_ends_only_that_channel(application, registry, world, bad, no_error_logs):
    probe = await opened(application, registry, world, VSN_1)
    try:
        assert (await probe.join(world.unjoined, world.token)).payload["status"] == "ok"
        track = probe.envelope(
            "start", "t", world.joined, "presence", {"type": "presence", "event": "track", "payload": {}}
        )
        await probe.exchange(text=track)
        frame = probe.envelope("start", "a", world.joined, "access_token", {"access_token": world.teacher_tokens[bad]})
        answer = await probe.exchange(text=frame)
        assert not isinstance(answer, Closed)
        # Documented (docs/protocol.md, Tokens): a system error, then phx_close of that channel.
        assert [m.event for m in answer if m.topic == world.joined][:2] == ["system", "phx_close"], answer
        assert probe.client_joined == {world.unjoined}
        await assert_consistent(probe, world.user)
        assert (await probe.join(world.joined, world.token, ref="again")).payload["status"] == "ok"
        await assert_consistent(probe, world.user)
    finally:
        await probe.close()
    await assert_released(probe, world.user)


async def test_an_oversize_frame_closes_1009_and_releases_everything(
    application, registry, world, settings, no_error_logs
):
    settings.REALTIME_MAX_FRAME_BYTES = 256 * 1024
    probe = await opened(application, registry, world, VSN_2)
    assert (await probe.join(world.unjoined, world.token)).payload["status"] == "ok"
    await probe.exchange(
        text=probe.envelope(
            "start", "t", world.joined, "presence", {"type": "presence", "event": "track", "payload": {}}
        )
    )
    await assert_consistent(probe, world.user)
    # Exactly the limit is still a frame; one byte more closes the socket (docs/protocol.md, 1009).
    at_limit = probe.envelope(None, "p", "phoenix", "heartbeat", {"pad": ""})
    at_limit = at_limit.replace('""', '"' + "x" * (256 * 1024 - len(at_limit)) + '"')
    assert len(at_limit) == 256 * 1024
    answer = await probe.exchange(text=at_limit)
    assert [m.payload["status"] for m in answer if m.ref == "p"] == ["ok"]
    closed = await probe.exchange(data=b"\x03" + b"x" * (256 * 1024))
    assert isinstance(closed, Closed) and closed.code == 1009
    await probe.close()
    await assert_released(probe, world.user)


async def test_floods_are_rate_limited_and_the_socket_recovers(application, registry, world, settings, no_error_logs):
    settings.REALTIME_MAX_MESSAGES_PER_SECOND = 50
    probe = await opened(application, registry, world, VSN_2)
    try:
        floods = {
            "broadcasts": probe.envelope(
                "start", "f", world.joined, "broadcast", {"type": "broadcast", "event": "e", "payload": {}}
            ),
            "malformed frames": "{not json",
            "unknown events": probe.envelope("start", "f", world.joined, "shout", {}),
            "joins of malformed topics": probe.envelope(
                "f", "f", "realtime:lobby", "phx_join", {"access_token": world.token}
            ),
        }
        for name, frame in floods.items():
            await asyncio.sleep(1.1)  # a full bucket
            started = time.monotonic()
            for _ in range(300):
                await probe.send_raw(text=frame)
            answer = await probe.exchange(text=probe.envelope(None, "hb", "phoenix", "heartbeat", {}))
            elapsed = time.monotonic() - started
            assert not isinstance(answer, Closed), name
            replies = [m for m in answer if m.event == "phx_reply" and m.ref != "hb"]
            limited = [m for m in replies if m.payload["response"].get("error") == "rate_limited"]
            # What passes is the bucket's burst (50) plus what refilled (50/s) while the server
            # worked through the flood; the rest is refused. Broadcasts without ack are answered
            # only when refused; everything else gets its own error.
            assert 50 <= 300 - len(limited) <= 50 + 50 * elapsed + 1, (name, len(limited), elapsed)
            assert len(replies) == (len(limited) if name == "broadcasts" else 300), (name, len(replies))
            assert all(m.payload["status"] == "error" and not internal_error(m) for m in replies), name
        await assert_consistent(probe, world.user)
        await asyncio.sleep(1.1)
        assert (await probe.join(world.unjoined, world.token)).payload["status"] == "ok"
        await assert_consistent(probe, world.user)
    finally:
        await probe.close()
    await assert_released(probe, world.user)


# -- generated frames -----------------------------------------------------------------------------

NAMES = ["join_ref", "ref", "topic", "event", "payload"]  # a vsn 2.0.0 frame's fields, in order
EVENTS = (
    ["phx_join"] * 3
    + ["broadcast", "presence"] * 2
    + ["delivery_ack", "access_token", "phx_leave", "heartbeat", "phx_reply"]
)
KEYS = [
    "type", "event", "payload", "config", "access_token", "ids", "broadcast", "presence", "postgres_changes",
    "private", "replay", "batch", "since", "limit", "after_id", "key", "self", "ack", "schema", "table",
    "filter", "max_events", "window_ms", "status", "battery_level", "app_state", "connection_quality",
    "activity", "current_screen", "group_id", "meta",
]  # fmt: skip
ODD_STRINGS = ["", "\x00", "\ud800", "a\udfffb", "*", "public", "attendance", "group_id=eq.1", "track", "untrack",
               "broadcast", "realtime:", "🙂", "\u202e", "x" * 300]  # fmt: skip
ODD_NUMBERS = [0, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.sampled_from(ODD_NUMBERS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(ODD_STRINGS),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=16,
)


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of the strategies, picked with these weights (st.one_of leans to its simplest branch)."""
    picks = [n for n, (weight, _) in enumerate(choices) for _ in range(weight)]
    return st.sampled_from(picks).flatmap(lambda n: choices[n][1])


DEEP = "@deep@"  # a string value that the frame's text then replaces with nested arrays
DEPTHS = [3, 250, 251, 600, 1000, 1023, 1100]  # orjson reads 1,024 levels; the server relays 250


def generated_frame(world: World, vsn: str) -> st.SearchStrategy:
    """Frames aimed at each handler: an event, then a payload of the shape that handler reads,
    filled with odd values at every place (a valid token half of the time, so joins get past the
    token check to the config checks behind it), and sometimes broken into bad frames."""
    org = world.user.organization_id
    odd_topics = [
        world.other_school,
        "phoenix",
        "realtime:",
        "realtime:connection:profile",
        world.joined + "\n",
        "realtime:lobby",
        f"realtime:{groups_topic(org, 'x')}",
        f"realtime:{notifications_topic(org, 'teacher')}",
    ]
    topics = weighted(
        (4, st.just(world.joined)),
        (2, st.just(world.unjoined)),
        (2, st.sampled_from(odd_topics)),
        (1, st.text(max_size=20)),
        (1, st.text(max_size=20).map("realtime:".__add__)),
    )
    tokens = weighted((3, st.just(world.token)), (2, st.sampled_from(list(world.teacher_tokens.values()))), (1, values))
    odd = weighted((3, values), (1, st.just(DEEP)))
    binding = st.fixed_dictionaries({}, optional={k: odd for k in ("event", "schema", "table", "filter")})
    config = st.fixed_dictionaries(
        {},
        optional={
            "broadcast": odd
            | st.fixed_dictionaries(
                {},
                optional={
                    "self": odd,
                    "ack": odd,
                    "replay": odd | st.fixed_dictionaries({}, optional={"since": odd, "limit": odd, "after_id": odd}),
                    "batch": odd | st.fixed_dictionaries({}, optional={"max_events": odd, "window_ms": odd}),
                },
            ),
            "presence": odd | st.fixed_dictionaries({}, optional={"key": odd, "enabled": odd}),
            "postgres_changes": odd | st.lists(binding, max_size=3),
            "private": odd,
        },
    )  # fmt: skip
    payload_for = {
        "phx_join": st.fixed_dictionaries({"config": weighted((3, config), (1, odd)), "access_token": tokens}),
        "broadcast": st.fixed_dictionaries(
            {"type": st.just("broadcast") | odd, "event": st.sampled_from(["e", "update"]) | odd},
            optional={"payload": odd},
        ),
        "presence": st.fixed_dictionaries(
            {"type": st.just("presence") | odd, "event": st.sampled_from(["track", "untrack"]) | odd},
            optional={"payload": odd | st.dictionaries(st.sampled_from(KEYS), odd, max_size=4)},
        ),
        "delivery_ack": st.fixed_dictionaries({"ids": st.lists(st.sampled_from(ODD_NUMBERS) | scalars) | odd}),
        "access_token": st.fixed_dictionaries({"access_token": tokens}),
    }  # fmt: skip
    refs = st.none() | st.text(max_size=4) | scalars

    @st.composite
    def frame(draw) -> tuple[str | None, bytes | None]:
        kind = draw(st.sampled_from(["envelope"] * 6 + ["mutated", "text", "binary", "kind3"]))
        join_ref, ref, topic = draw(refs), draw(refs), draw(topics)
        event = draw(weighted((8, st.sampled_from(EVENTS)), (1, st.text(max_size=8)), (1, scalars)))
        payload = draw(payload_for.get(event, odd) if isinstance(event, str) else odd)
        fields = [join_ref, ref, topic, event, payload]
        ascii_only, depth = draw(st.booleans()), draw(st.sampled_from(DEPTHS))

        def text(value: Any) -> str:
            return json.dumps(value, ensure_ascii=ascii_only).replace(f'"{DEEP}"', nested(depth, "0"))

        if kind == "envelope":
            return text(fields if vsn == VSN_2 else dict(zip(NAMES, fields, strict=True))), None
        if kind == "mutated":
            other_shape = dict(zip(NAMES, fields, strict=True)) if vsn == VSN_2 else fields
            wrong = [fields[:-1], [*fields, draw(values)], fields[::-1], [fields], {"topic": topic, "event": event}]
            return text(draw(st.sampled_from([*wrong, other_shape]))), None
        if kind == "text":
            return draw(
                st.text(max_size=40) | st.sampled_from(["[", "]", "{", '"', "[" * 2000, "{}" * 10, "\\u0000"])
            ), None
        if kind == "binary":
            return None, draw(st.binary(min_size=0, max_size=40))
        event_text = draw(st.sampled_from(["e", "", "update"]) | st.text(st.characters(max_codepoint=255), max_size=6))
        topic_text = topic if isinstance(topic, str) and len(topic.encode("latin-1", "replace")) < 256 else world.joined
        body = draw(st.binary(max_size=20) | odd.map(lambda v: text(v).encode("utf-8", "surrogatepass")))
        meta = draw(st.sampled_from(["", "{}", '{"x":1}', "[1]", "{x", '{"event":"forged"}']))
        topic_text = topic_text.encode("latin-1", "replace").decode("latin-1")
        return None, binary(
            "1", "c", topic_text, event_text, body, meta=meta, encoding=draw(st.sampled_from([0, 1, 1, 1, 2]))
        )

    return frame()


@pytest.mark.usefixtures("generous_rate")
@hypothesis_settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
async def test_generated_frames_never_break_the_socket(application, registry, world, data, caplog):
    vsn = data.draw(st.sampled_from([VSN_1, VSN_2]), label="vsn")
    # unique: Hypothesis likes to repeat a list's elements, which would waste most of the frames.
    frames = data.draw(st.lists(generated_frame(world, vsn), min_size=1, max_size=16, unique_by=str), label="frames")
    caplog.clear()
    probe = await opened(application, registry, world, vsn)
    try:
        for text, raw in frames:
            answer = await probe.exchange(text=text, data=raw)
            assert not isinstance(answer, Closed), (text, raw, answer)
            assert not findings(answer), (text, raw, findings(answer))
        await assert_consistent(probe, world.user)
        if len(probe.client_joined) < 10:
            reply = await probe.join(world.unjoined, world.token, ref="final")
            assert reply.payload["status"] == "ok", reply.payload
            await assert_consistent(probe, world.user)
    finally:
        await probe.close()
    await assert_released(probe, world.user)
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
