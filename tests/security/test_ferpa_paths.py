"""Issue 13 item 9: one FERPA rule on every path.

Each reader's access level to a student's protected fields (events/ferpa.py) and each topic's
readers (the join rule, events/topics.py) are the same on the socket (join, live delivery,
replay), the poll, sync/changes and the REST conflicts list. Two schools; the other school's
admin and an unrelated teacher of the same school are the outsiders.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from events import ferpa
from events.listener import Listener
from events.models import RealtimeEvent
from events.topics import TopicDenied, authorize_topic
from harry_realtime.tenancy import Tenant, dangerously_platform_context, tenant_context
from harry_realtime.testing import Socket, token
from school.models import Attendance, Student

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]

PROTECTED = {"medical_notes": "asthma", "personal_info": {"phone": "+998 90 000 00 00"}}


def as_tenant(user):
    return tenant_context(Tenant(user.organization_id, user.pk, user.role))


def _backlog_done() -> None:
    with dangerously_platform_context():
        RealtimeEvent.objects.filter(processed_at__isnull=True).update(processed_at="2000-01-01T00:00:00Z")


def _note_protected_fields(school) -> None:
    with as_tenant(school.admin_user):
        Student.objects.filter(pk=school.student.pk).update(**PROTECTED)


def _mark_late(school) -> None:
    with as_tenant(school.teacher_user):
        Attendance.objects.filter(pk=school.attendance.pk).update(status="late")


async def drained() -> None:
    """Let the listener fan the stored events out (and mark them processed)."""
    await Listener(poll_interval=30).drain()


def groups_topic(school) -> str:
    return f"groups:org_{school.org.pk}:teacher_{school.teacher.pk}"


async def socket_student_record(user, topic: str, *, replay: bool) -> dict:
    """The `students` row `user` gets on `topic`'s socket: live, or by join-time replay."""
    config = {
        "broadcast": {"ack": False, "self": False, **({"replay": {"after_id": 0, "limit": 100}} if replay else {})},
        "postgres_changes": [{"event": "UPDATE", "schema": "public", "table": "students", "filter": ""}],
    }
    socket = Socket()
    await socket.connect()
    try:
        reply = await socket.join(f"realtime:{topic}", token(user), config)
        assert reply.payload["status"] == "ok", reply.payload
        return (await socket.until("postgres_changes", timeout=5)).payload["data"]
    finally:
        await socket.close()


def poll_student_records(client) -> list[dict]:
    body = client.get("/api/realtime/poll", {"since": 0, "limit": 500}).json()
    return [
        m["data"]
        for e in body["events"]
        for m in e["messages"]
        if m["type"] == "postgres_changes" and m["data"]["table"] == "students"
    ]


def sync_student_record(client, student_id) -> dict | None:
    body = client.get("/api/realtime/sync/changes", {"tables": "students", "limit": 500}).json()
    return next((c["record"] for c in body["changes"] if c["id"] == str(student_id)), None)


def has_protected(record: dict) -> bool:
    return all(record.get(key) == value for key, value in PROTECTED.items())


@pytest.mark.parametrize("reader", ["teacher_user", "admin_user"])
async def test_educators_and_admins_get_the_same_fields_on_every_path(schools, client_for, reader):
    a = schools.a
    user = getattr(a, reader)
    level = {"teacher_user": "educator", "admin_user": "admin"}[reader]
    await sync_to_async(_backlog_done)()
    await sync_to_async(_note_protected_fields)(a)
    topic = groups_topic(a)

    # Socket, live.
    live_socket = Socket()
    await live_socket.connect()
    config = {
        "broadcast": {"ack": False, "self": False},
        "postgres_changes": [{"event": "UPDATE", "schema": "public", "table": "students", "filter": ""}],
    }
    assert (await live_socket.join(f"realtime:{topic}", token(user), config)).payload["status"] == "ok"
    await drained()
    live = (await live_socket.until("postgres_changes", timeout=5)).payload["data"]
    await live_socket.close()
    assert has_protected(live["record"]) and live["access_level"] == level
    # Socket, replay (once fanned out): the stored change of the student row, at the reader's level.
    replayed = await socket_student_record(user, topic, replay=True)
    assert has_protected(replayed["record"]) and replayed["access_level"] == level

    client = client_for(user)
    # Poll.
    polled = await sync_to_async(poll_student_records)(client)
    assert polled and all(has_protected(d["record"]) and d["access_level"] == level for d in polled)
    # sync/changes.
    synced = await sync_to_async(sync_student_record)(client, a.student.pk)
    assert synced is not None and has_protected(synced)


async def test_the_student_and_family_get_their_own_record_and_no_one_else_does(schools, client_for):
    a, b = schools.a, schools.b
    await sync_to_async(_note_protected_fields)(a)
    for user in (a.student_user, a.parent_user):
        synced = await sync_to_async(sync_student_record)(client_for(user), a.student.pk)
        assert synced is not None and has_protected(synced)
    for user in (a.outsider_user, a.other_student_user, b.admin_user, b.teacher_user):
        assert await sync_to_async(sync_student_record)(client_for(user), a.student.pk) is None


def test_the_rule_itself():
    audience = {"student_user_id": "s", "family_user_ids": ["p"], "educator_user_ids": ["t"]}
    levels = [
        ferpa.access_level(user, audience, role=role)
        for user, role in (("s", "student"), ("p", "parent"), ("t", "teacher"), ("a", "admin"), ("x", "teacher"))
    ]
    assert levels == ["self", "family", "educator", "admin", "public"]
    record = {"id": 1, "full_name": "A", **PROTECTED, "family_details": {"x": 1}}
    assert ferpa.filter_record(record, "public") == {"id": 1, "full_name": "A"}
    assert all(ferpa.filter_record(record, level) == record for level in levels[:4])
    assert not ferpa.filter_payload({"student": record}, "public")["student"].keys() & set(ferpa.PROTECTED_KEYS)


async def test_the_poll_gives_no_one_the_messages_of_topics_they_may_not_join(schools, client_for):
    a = schools.a
    await sync_to_async(_backlog_done)()
    await sync_to_async(_mark_late)(a)
    await drained()

    def poll_topics(user) -> set[str]:
        body = client_for(user).get("/api/realtime/poll", {"since": 0, "limit": 500}).json()
        return {m["topic"] for e in body["events"] for m in e["messages"]}

    def may_join(user, topic: str) -> bool:
        with as_tenant(user):
            try:
                authorize_topic(user, topic)
                return True
            except TopicDenied:
                return False

    attendance = f"attendance:org_{a.org.pk}:group_{a.group.pk}"
    teacher_topic = groups_topic(a)
    for user in (a.student_user, a.parent_user, a.outsider_user, a.other_student_user, schools.b.admin_user):
        seen = await sync_to_async(poll_topics)(user)
        assert attendance not in seen and teacher_topic not in seen, (user.username, seen)
        for topic in seen:  # whatever the poll gives, the socket would let them join
            assert await sync_to_async(may_join)(user, topic), (user.username, topic)
    assert attendance in await sync_to_async(poll_topics)(a.teacher_user)
    assert attendance in await sync_to_async(poll_topics)(a.admin_user)
