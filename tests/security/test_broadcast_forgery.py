"""Issue 13 item 3: a channel member cannot forge the server's events.

Names the server broadcasts under are refused from clients (socket and REST), who may broadcast
where follows the role (events/broadcast_policy.py), a relayed broadcast says who sent it
(`meta.sender`, set by the server), and a presence carries its real user id whatever its key.
"""

from __future__ import annotations

from datetime import date

import pytest
from asgiref.sync import sync_to_async

from events import batching, domain, profiles, services
from events.models import ANNOUNCEMENT_KINDS, EVENT_TYPES, RealtimeEvent
from events.topics import attendance_topic, notifications_topic, rankings_topic
from harry_realtime.testing import receive, subscribe, token

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]


ACK = {"broadcast": {"ack": True, "self": False}, "presence": {"key": ""}}


def realtime(topic: str) -> str:
    return f"realtime:{topic}"


async def broadcast(socket, topic: str, event: str, payload=None, **extra):
    ref = await socket.push(
        realtime(topic), "broadcast", {"type": "broadcast", "event": event, "payload": payload or {}, **extra}
    )
    return (await socket.until("phx_reply", ref=ref)).payload


async def broadcasts_until_sentinel(receiver, sender, topic: str) -> list[dict]:
    """The broadcasts `receiver` got on `topic` before a sentinel that `sender` (allowed there)
    broadcasts now: anything relayed earlier arrives before it."""
    assert (await broadcast(sender, topic, "sentinel"))["status"] == "ok"
    return await read_until_sentinel(receiver, topic)


async def read_until_sentinel(receiver, topic: str) -> list[dict]:
    seen = []
    while True:
        message = await receiver.until("broadcast", topic=realtime(topic))
        if message.payload["event"] == "sentinel":
            return seen
        seen.append(message.payload)


# -- reserved names ----------------------------------------------------------------------------------


async def test_a_student_cannot_send_an_emergency_alert_to_the_whole_school(schools, sockets):
    a = schools.a
    topic = notifications_topic(a.org.pk, "all")
    student = await sockets.joined(a.student_user, realtime(topic), config=ACK)
    teacher = await sockets.joined(a.teacher_user, realtime(topic), config=ACK)
    parent = await sockets.joined(a.parent_user, realtime(topic), config=ACK)
    admin = await sockets.joined(a.admin_user, realtime(topic), config=ACK)

    reply = await broadcast(student, topic, "emergency_alert", {"title": "Evacuate now"})

    assert reply["status"] == "error"
    assert reply["response"]["error"] == "reserved_event"
    assert "ReservedEvent" in reply["response"]["reason"]
    assert await broadcasts_until_sentinel(teacher, admin, topic) == []
    assert await read_until_sentinel(parent, topic) == []


@pytest.mark.parametrize("event", ["level_up_achievement", "LEVEL_UP_Achievement", "ranking_celebration"])
async def test_no_one_forges_a_level_up_on_a_rankings_topic(schools, sockets, event):
    a = schools.a
    topic = rankings_topic(a.org.pk, a.student.pk)
    watcher = await sockets.joined(a.student_user, realtime(topic), config=ACK)
    senders = [
        await sockets.joined(user, realtime(topic), config=ACK)
        for user in (a.parent_user, a.teacher_user, a.admin_user)
    ]
    for socket in senders:  # even staff: the name is the server's
        reply = await broadcast(socket, topic, event, {"payload": {"newLevel": 99}})
        assert (reply["status"], reply["response"]["error"]) == ("error", "reserved_event")
    assert await broadcasts_until_sentinel(watcher, senders[-1], topic) == []


def test_every_name_the_server_broadcasts_under_is_reserved():
    from events.broadcast_policy import is_reserved
    from events.messages import SERVER_EVENTS

    produced = set(services.EVENT_TYPES) | set(EVENT_TYPES) | set(ANNOUNCEMENT_KINDS)
    produced |= {batching.BATCH_EVENT, "family_notice", "deadline_reminder", "prayer_time_reminder", "system_alert"}
    produced |= {"marking_in_progress", "marking_completed"} | profiles.CRITICAL_EVENTS | profiles.ATTENDANCE_EVENTS
    produced |= set(_domain_event_names())
    assert produced <= SERVER_EVENTS, produced - SERVER_EVENTS
    assert all(is_reserved(name) and is_reserved(name.upper()) for name in produced)
    assert not is_reserved("typing") and not is_reserved("cluster_ping")


def _domain_event_names() -> list[str]:
    """Every broadcast name events/domain.py gives a captured change, table by table."""
    ranking = {
        "student_id": "s",
        "organization_id": "o",
        "new_rank": 1,
        "old_rank": 2,
        "new_level": 2,
        "old_level": 1,
        "points_change": 5,
        "total_points": 50,
        "age_group": "10-12",
        "timestamp": 0,
    }
    task = {
        "task_id": "t",
        "student_id": "s",
        "organization_id": "o",
        "task_type": "quiz",
        "title": "x",
        "difficulty": "beginner",
        "estimated_minutes": 5,
        "timestamp": 0,
    }
    attendance = {
        "attendance_id": "a",
        "student_id": "s",
        "group_id": "g",
        "teacher_id": "t",
        "organization_id": "o",
        "status": "present",
        "attendance_date": date.today().isoformat(),
        "marked_offline": False,
        "sync_priority": "normal",
        "sync_status": "synced",
        "marking_method": "manual",
        "timestamp": 0,
    }
    achievement = {
        "achievement_id": "a",
        "student_id": "s",
        "organization_id": "o",
        "celebration_style": "animated_celebration",
        "coins_awarded": 0,
        "bonus_points": 0,
        "timestamp": 0,
    }
    cases = [
        ("student_rankings", "UPDATE", {**ranking, "celebration_triggered": True}, {"current_level": 1}),
        ("student_rankings", "UPDATE", {**ranking, "new_level": 1, "celebration_triggered": True}, {}),
        ("student_rankings", "UPDATE", {**ranking, "new_level": 1, "celebration_triggered": False}, {}),
        ("student_achievements", "INSERT", achievement, {}),
        ("attendance", "UPDATE", attendance, {}),
        ("attendance", "DELETE", attendance, {}),
        ("home_tasks", "INSERT", {**task, "ai_generated": True}, {}),
        ("home_tasks", "INSERT", {**task, "ai_generated": False}, {}),
        ("home_tasks", "UPDATE", {**task, "ai_generated": False}, {}),
        ("home_tasks", "DELETE", {**task, "ai_generated": False}, {}),
        ("feedback_entries", "INSERT", {}, {}),
        ("students", "UPDATE", {}, {}),
        ("student_group_enrollments", "INSERT", {}, {}),
        ("groups", "UPDATE", {}, {}),
    ]
    names = []
    for table, op, data, old in cases:
        event = RealtimeEvent(
            source_table=table,
            event_payload=data,
            event_metadata={
                "topics": ["attendance:x", "groups:x"],
                "change": {"type": op, "record": {}, "old_record": old},
            },
        )
        found = [name for _, name, _ in domain.broadcasts(event)]
        assert found, table
        names += found
    return names


# -- who may broadcast where ---------------------------------------------------------------------------


async def test_a_student_may_not_broadcast_to_the_school_at_all(schools, sockets):
    a = schools.a
    topic = notifications_topic(a.org.pk, "all")
    student = await sockets.joined(a.student_user, realtime(topic), config=ACK)
    teacher = await sockets.joined(a.teacher_user, realtime(topic), config=ACK)
    admin = await sockets.joined(a.admin_user, realtime(topic), config=ACK)

    reply = await broadcast(student, topic, "hello_everyone", {"text": "hi"})

    assert reply["status"] == "error" and reply["response"]["error"] == "broadcast_forbidden"
    assert await broadcasts_until_sentinel(teacher, admin, topic) == []


async def test_only_admins_reach_a_whole_role_and_teachers_the_staff_topic(schools, sockets):
    a = schools.a
    everyone = notifications_topic(a.org.pk, "all")
    staff = notifications_topic(a.org.pk, "teacher")
    teacher = await sockets.joined(a.teacher_user, realtime(everyone), config=ACK)
    await teacher.join(realtime(staff), token(a.teacher_user), ACK)
    admin = await sockets.joined(a.admin_user, realtime(everyone), config=ACK)
    colleague = await sockets.joined(a.outsider_user, realtime(staff), config=ACK)

    refused = await broadcast(teacher, everyone, "hello_everyone")
    assert refused["response"]["error"] == "broadcast_forbidden"
    assert (await broadcast(teacher, staff, "staff_meeting", {"room": 4}))["status"] == "ok"
    (meeting,) = await broadcasts_until_sentinel(colleague, teacher, staff)
    assert meeting["payload"] == {"room": 4}
    assert (await broadcast(admin, everyone, "school_closes_early"))["status"] == "ok"
    assert [m["event"] for m in await broadcasts_until_sentinel(teacher, admin, everyone)] == ["school_closes_early"]


# -- the sender, as the server knows them -----------------------------------------------------------


async def test_a_relayed_broadcast_carries_the_real_sender(schools, sockets):
    a = schools.a
    topic = attendance_topic(a.org.pk, a.group.pk)
    teacher = await sockets.joined(a.teacher_user, realtime(topic), config=ACK)
    admin = await sockets.joined(a.admin_user, realtime(topic), config=ACK)
    forged = {"sender": {"user_id": str(a.admin_user.pk), "role": "admin"}, "id": 1}

    reply = await broadcast(teacher, topic, "note", {"text": "room 4"}, meta=forged)

    assert reply["status"] == "ok"
    (received,) = await broadcasts_until_sentinel(admin, teacher, topic)
    assert received["event"] == "note" and received["payload"] == {"text": "room 4"}
    assert received["meta"] == {"sender": {"user_id": str(a.teacher_user.pk), "role": "teacher"}}


async def test_a_presence_carries_the_real_user_id_whatever_its_key(schools, sockets):
    a = schools.a
    topic = attendance_topic(a.org.pk, a.group.pk)
    admin = await sockets.joined(a.admin_user, realtime(topic), config=ACK)
    config = {"presence": {"key": str(a.admin_user.pk)}, "broadcast": {"self": False, "ack": True}}
    teacher = await sockets.joined(a.teacher_user, realtime(topic), config=config)

    ref = await teacher.push(
        realtime(topic),
        "presence",
        {"type": "presence", "event": "track", "payload": {"user_id": str(a.admin_user.pk), "screen": "x"}},
    )
    assert (await teacher.until("phx_reply", ref=ref)).payload["status"] == "ok"

    diff = await admin.until("presence_diff")
    (meta,) = diff.payload["joins"][str(a.admin_user.pk)]["metas"]
    assert meta["user_id"] == str(a.teacher_user.pk) and meta["screen"] == "x"


# -- the REST fallback -------------------------------------------------------------------------------


def rest_broadcast(api, user, messages):
    return api.post(
        "/realtime/v1/api/broadcast",
        {"messages": messages},
        format="json",
        HTTP_APIKEY=token(user),
    )


async def test_the_rest_fallback_refuses_reserved_names_and_forbidden_topics(schools, api):
    a, b = schools.a, schools.b
    everyone = notifications_topic(a.org.pk, "all")
    rankings = rankings_topic(a.org.pk, a.student.pk)
    channel = await subscribe(everyone, rankings)
    post = sync_to_async(rest_broadcast)

    cases = [
        (a.student_user, [{"topic": everyone, "event": "emergency_alert", "payload": {}}], "reserved_event"),
        (a.teacher_user, [{"topic": rankings, "event": "Level_Up_Achievement", "payload": {}}], "reserved_event"),
        (a.student_user, [{"topic": everyone, "event": "hello", "payload": {}}], "broadcast_forbidden"),
        (a.parent_user, [{"topic": rankings, "event": "hello", "payload": {}}], "broadcast_forbidden"),
        (b.admin_user, [{"topic": everyone, "event": "hello", "payload": {}}], "forbidden_topic"),
        # One bad message refuses the whole request: nothing is sent.
        (
            a.admin_user,
            [{"topic": everyone, "event": "ok_one", "payload": {}}, {"topic": everyone, "event": "batch"}],
            "reserved_event",
        ),
    ]
    for user, messages, code in cases:
        response = await post(api, user, messages)
        assert response.status_code == 403, (user, response.content)
        assert response.json()["error"]["code"] == code

    per_topic = await sync_to_async(api.post)(
        f"/realtime/v1/api/broadcast/{everyone}/events/system_announcement",
        {"title": "x"},
        format="json",
        HTTP_APIKEY=token(a.admin_user),
    )
    assert per_topic.status_code == 403 and per_topic.json()["error"]["code"] == "reserved_event"

    with pytest.raises(TimeoutError):
        await receive(channel, timeout=0.5)

    allowed = await post(api, a.admin_user, [{"topic": everyone, "event": "ok_one", "payload": {"n": 1}}])
    assert allowed.status_code == 202
    relayed = await receive(channel)
    assert relayed["event"] == "ok_one"
    assert relayed["meta"] == {"sender": {"user_id": str(a.admin_user.pk), "role": "admin"}}
