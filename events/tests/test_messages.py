"""Every producer of channel-layer messages sends what events/messages.py declares.

Each producer runs for real (the listener's drain, the broadcast API's fan-out, a socket's client
broadcast, attendance marking, presence diffs) and the message a topic's subscriber receives is
checked against the TypedDicts: no missing key, no unknown key, every value of its declared type.
"""

import types
import typing
from typing import Any, Literal, NotRequired, get_args, get_origin, get_type_hints, is_typeddict

import pytest
from asgiref.sync import sync_to_async

from events import messages
from events.announcements import announcement_create
from events.listener import Listener
from events.models import RealtimeEvent
from events.services import fan_out
from events.topics import attendance_topic, notifications_topic
from harry_realtime.tenancy import Tenant, dangerously_platform_context, tenant_context
from harry_realtime.testing import receive, subscribe
from presence import state
from presence.attendance import attendance_mark
from school.models import Attendance

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]

SCHEMAS = {
    messages.BROADCAST: messages.BroadcastMessage | messages.ClientBroadcastMessage,
    messages.POSTGRES_CHANGE: messages.PostgresChangeMessage,
    messages.PRESENCE_DIFF: messages.PresenceDiffMessage,
    messages.BATCH: messages.BatchMessage,
}


def schema_errors(expected: Any, value: Any, path: str = "message") -> list[str]:
    """Where `value` departs from the type `expected` (TypedDicts checked key by key)."""
    if expected is Any:
        return []
    if expected is None or expected is type(None):
        return [] if value is None else [f"{path}: {value!r} is not None"]
    if is_typeddict(expected):
        if not isinstance(value, dict):
            return [f"{path}: not an object"]
        hints = get_type_hints(expected, include_extras=True)
        optional = {key for key, hint in hints.items() if get_origin(hint) is NotRequired}
        errors = [f"{path}: missing {key!r}" for key in hints.keys() - optional - value.keys()]
        errors += [f"{path}: unknown key {key!r}" for key in value.keys() - hints.keys()]
        for key in value.keys() & hints.keys():
            hint = hints[key]
            inner = get_args(hint)[0] if get_origin(hint) is NotRequired else hint
            errors += schema_errors(inner, value[key], f"{path}.{key}")
        return errors
    origin = get_origin(expected)
    if origin is Literal:
        return [] if value in get_args(expected) else [f"{path}: {value!r} not in {get_args(expected)}"]
    if origin in (typing.Union, types.UnionType):
        tries = [schema_errors(option, value, path) for option in get_args(expected)]
        return [] if any(not found for found in tries) else [f"{path}: matches no option: {tries}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: not a list"]
        (item,) = get_args(expected)
        return [error for i, v in enumerate(value) for error in schema_errors(item, v, f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: not an object"]
        key_type, value_type = get_args(expected)
        errors = [e for k in value for e in schema_errors(key_type, k, f"{path} key")]
        return errors + [e for k, v in value.items() for e in schema_errors(value_type, v, f"{path}.{k}")]
    return [] if isinstance(value, expected) else [f"{path}: {type(value).__name__} is not {expected.__name__}"]


def check(message: dict) -> dict:
    assert message.get("type") in SCHEMAS, message
    assert schema_errors(SCHEMAS[message["type"]], message) == []
    return message


def test_the_checker_refuses_a_message_off_the_schema():
    good = messages.broadcast_message(topic="t", event="attendance_sync", payload={"a": 1})
    assert schema_errors(messages.BroadcastMessage, good) == []
    assert schema_errors(messages.BroadcastMessage, {**good, "extra": 1}) == ["message: unknown key 'extra'"]
    missing = {key: value for key, value in good.items() if key != "sender"}
    assert schema_errors(messages.BroadcastMessage, missing) == ["message: missing 'sender'"]
    assert schema_errors(messages.BroadcastMessage, {**good, "meta": "seq"}) != []
    # A server broadcast under a name no producer declares is off the schema (issue 13 item 3:
    # the declared names are the reserved ones), and so is a client broadcast without its sender.
    assert schema_errors(messages.BroadcastMessage, {**good, "event": "undeclared"}) != []
    client = messages.client_broadcast_message(
        topic="t", event="hi", payload={}, user_id="u", role="teacher", sender="c"
    )
    assert schema_errors(messages.ClientBroadcastMessage, client) == []
    assert schema_errors(messages.ClientBroadcastMessage, {**client, "meta": None}) != []


def tenant_of(user) -> Tenant:
    return Tenant(user.organization_id, user.pk, user.role)


def _backlog_processed() -> None:
    with dangerously_platform_context():
        RealtimeEvent.objects.filter(processed_at__isnull=True).update(processed_at="2000-01-01T00:00:00Z")


def _change_attendance_and_announce(school) -> None:
    user = school.teacher_user
    with tenant_context(tenant_of(user)):
        Attendance.objects.filter(pk=school.attendance.pk).update(status="late")
    admin = school.admin_user
    with tenant_context(tenant_of(admin)):
        announcement_create(
            sender=admin, kind="system_announcement", audience="admin", title="Hello", message="School is open."
        )


async def test_the_listener_sends_batches_changes_and_stored_broadcasts_of_the_schema(schools):
    a = schools.a
    await sync_to_async(_backlog_processed)()
    channel = await subscribe(attendance_topic(a.org.pk, a.group.pk), notifications_topic(a.org.pk, "admin"))
    await sync_to_async(_change_attendance_and_announce)(a)

    await Listener(poll_interval=30).drain()

    received = [check(await receive(channel)), check(await receive(channel))]
    items = [item for m in received for item in (m["messages"] if m["type"] == messages.BATCH else [m])]
    kinds = {item["type"] for item in items} | {item["broadcast"]["type"] for item in items if "broadcast" in item}
    assert kinds == {messages.BROADCAST, messages.POSTGRES_CHANGE}


async def test_the_broadcast_api_fan_out_is_of_the_schema(schools):
    topic = attendance_topic(schools.a.org.pk, schools.a.group.pk)
    channel = await subscribe(topic)
    await sync_to_async(fan_out)(topic=topic, event="attendance_sync", payload={"x": 1}, meta={"id": 7})
    assert check(await receive(channel))["meta"] == {"id": 7}


def _mark(school) -> None:
    user = school.teacher_user
    with tenant_context(tenant_of(user)):
        attendance_mark(user=user, group_id=school.group.pk, student_id=str(school.student.pk), status="late")


async def test_attendance_marking_notices_are_of_the_schema(schools):
    a = schools.a
    channel = await subscribe(attendance_topic(a.org.pk, a.group.pk))
    await sync_to_async(_mark)(a)
    notices = [check(await receive(channel)), check(await receive(channel))]
    assert [n["event"] for n in notices] == ["marking_in_progress", "marking_completed"]
    assert all(n["meta"] is None for n in notices)


async def test_presence_diffs_are_of_the_schema(schools):
    topic = attendance_topic(schools.a.org.pk, schools.a.group.pk)
    channel = await subscribe(topic)
    entry = {"key": "k1", "ref": "r1", "node": state.NODE_ID, "meta": {"screen": "attendance"}}
    await state.publish_diff(topic, joins=[entry], leaves=[])
    assert check(await receive(channel))["type"] == messages.PRESENCE_DIFF


async def test_a_socket_client_broadcast_is_of_the_schema(schools, sockets):
    a = schools.a
    topic = attendance_topic(a.org.pk, a.group.pk)
    channel = await subscribe(topic)
    socket = await sockets.joined(a.teacher_user, f"realtime:{topic}")
    await socket.push(f"realtime:{topic}", "broadcast", {"type": "broadcast", "event": "hi", "payload": {"x": 1}})
    message = check(await receive(channel))
    while message["type"] != messages.BROADCAST:
        message = check(await receive(channel))
    assert message["event"] == "hi" and message["sender"]
    assert message["meta"] == {"sender": {"user_id": str(a.teacher_user.pk), "role": "teacher"}}
