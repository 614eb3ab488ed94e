"""Stored events reaching sockets: postgres_changes bindings, FERPA per recipient, join-time
replay without gap or duplicate, delivery acknowledgement, and nothing across schools."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from events import ferpa
from events.listener import Listener
from events.models import RealtimeEvent
from harry_realtime.tenancy import Tenant, dangerously_platform_context, tenant_context
from harry_realtime.testing import Socket, token
from school.models import Attendance, Student

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]


@pytest.fixture
async def listener():
    await sync_to_async(_backlog_done)()
    running = Listener(poll_interval=30)
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    await asyncio.wait_for(running.is_leader.wait(), 10)
    yield running
    stop.set()
    await asyncio.wait_for(task, 10)


def _backlog_done() -> None:
    with dangerously_platform_context():
        RealtimeEvent.objects.filter(processed_at__isnull=True).update(
            fanout_at="2000-01-01T00:00:00Z", processed_at="2000-01-01T00:00:00Z"
        )


def as_tenant(user):
    return tenant_context(Tenant(user.organization_id, user.pk, user.role))


def set_attendance(school, status: str) -> None:
    with as_tenant(school.teacher_user):
        Attendance.objects.filter(pk=school.attendance.pk).update(status=status)


def attendance_topic(school) -> str:
    return f"realtime:attendance:org_{school.org.pk}:group_{school.group.pk}"


def teacher_topic(school) -> str:
    return f"realtime:groups:org_{school.org.pk}:teacher_{school.teacher.pk}"


async def drain(socket: Socket) -> None:
    """Read whatever is queued (a receive timeout would cancel the application)."""
    while not await socket.no_message(0.3):
        await socket.recv()


def binding(table: str, flt: str = "", event: str = "*") -> dict:
    return {"event": event, "schema": "public", "table": table, "filter": flt}


async def pg_join(user, topic: str, bindings: list[dict], **broadcast) -> tuple[Socket, list[int]]:
    config = {"broadcast": {"ack": False, "self": False, **broadcast}, "postgres_changes": bindings}
    socket = Socket()
    await socket.connect()
    reply = await socket.join(topic, token(user), config)
    assert reply.payload["status"] == "ok", reply.payload
    await socket.until("presence_state", topic=topic)
    if bindings:
        await socket.until("system", topic=topic)
    return socket, [b["id"] for b in reply.payload["response"]["postgres_changes"]]


async def test_postgres_changes_fire_for_matching_filter_only(schools, listener):
    a = schools.a
    topic = attendance_topic(a)
    socket, ids = await pg_join(
        a.teacher_user,
        topic,
        [binding("attendance", f"group_id=eq.{a.group.pk}"), binding("attendance", f"group_id=eq.{a.other_group.pk}")],
    )
    await sync_to_async(set_attendance)(a, "late")
    broadcast = await socket.until("broadcast", topic=topic, timeout=5)
    change = await socket.until("postgres_changes", topic=topic, timeout=5)
    assert change.payload["ids"] == [ids[0]]
    data = change.payload["data"]
    assert (data["table"], data["type"], data["record"]["status"], data["old_record"]["status"]) == (
        "attendance",
        "UPDATE",
        "late",
        "present",
    )
    assert data["commit_timestamp"].endswith("Z") and {"name": "id", "type": "uuid"} in data["columns"]
    assert broadcast.payload["event"] == "attendance_sync"
    assert broadcast.payload["meta"]["id"] == change.payload["meta"]["id"]
    assert broadcast.payload["payload"]["access_level"] == "educator"
    assert await socket.no_message(0.5)  # the other group's binding did not fire separately
    await socket.close()


async def test_ferpa_filters_student_rows_per_recipient(schools, listener):
    a = schools.a
    bindings = [binding("students", event="UPDATE")]
    educator, _ = await pg_join(a.teacher_user, teacher_topic(a), bindings)
    admin, _ = await pg_join(a.admin_user, teacher_topic(a), bindings)

    def note() -> None:
        with as_tenant(a.admin_user):
            Student.objects.filter(pk=a.student.pk).update(medical_notes="asthma", personal_info={"phone": "1"})

    await sync_to_async(note)()
    full = (await educator.until("postgres_changes", timeout=5)).payload["data"]
    school_admin = (await admin.until("postgres_changes", timeout=5)).payload["data"]
    assert full["record"]["medical_notes"] == "asthma" and full["access_level"] == "educator"
    # Admins read the protected fields on every path (issue 13 item 9; events/ferpa.py).
    assert school_admin["record"]["medical_notes"] == "asthma" and school_admin["access_level"] == "admin"
    # Anyone outside the audience gets the public level (as filtered for them).
    public = ferpa.filter_change(full, "public")
    assert "medical_notes" not in public["record"] and "personal_info" not in public["old_record"]
    assert public["access_level"] == "public"
    await educator.close()
    await admin.close()


async def test_one_broadcast_shared_by_a_process_is_filtered_per_access_level(schools, listener):
    """The sockets of one server process share the channel-layer message and what is built from it
    per access level: the educator and the admin must still each get their own filtering."""
    a = schools.a
    topic = attendance_topic(a)
    educator, _ = await pg_join(a.teacher_user, topic, [])
    second_device, _ = await pg_join(a.teacher_user, topic, [])
    admin, _ = await pg_join(a.admin_user, topic, [])
    await sync_to_async(set_attendance)(a, "late")
    frames = [(await s.until("broadcast", topic=topic, timeout=5)).payload for s in (educator, second_device, admin)]
    assert [f["payload"]["access_level"] for f in frames] == ["educator", "educator", "admin"]
    assert frames[0] == frames[1] and frames[0]["meta"] == frames[2]["meta"]
    for socket in (educator, second_device, admin):
        await socket.close()


async def test_replay_then_live_without_gap_or_duplicate(schools, listener):
    a = schools.a
    topic = attendance_topic(a)
    for status in ["late", "absent", "present"]:
        await sync_to_async(set_attendance)(a, status)
    await asyncio.sleep(0.5)  # the listener has fanned these out to nobody

    socket, _ = await pg_join(a.teacher_user, topic, [], replay={"since": 0, "limit": 10})
    replayed = [await socket.until("broadcast", topic=topic) for _ in range(4)]  # fixture insert + 3
    assert all(m.payload["meta"]["replayed"] is True for m in replayed)
    seqs = [m.payload["meta"]["id"] for m in replayed]
    assert seqs == sorted(seqs)
    assert [m.payload["payload"]["payload"]["status"] for m in replayed[1:]] == ["late", "absent", "present"]
    await sync_to_async(set_attendance)(a, "sick")
    live = await socket.until("broadcast", topic=topic, timeout=5)
    assert live.payload["meta"]["id"] > seqs[-1] and "replayed" not in live.payload["meta"]
    assert await socket.no_message(0.5)
    await socket.close()


async def test_rejoin_with_after_id_gets_exactly_what_was_missed(schools, listener):
    a = schools.a
    topic = attendance_topic(a)
    socket, _ = await pg_join(a.teacher_user, topic, [])
    await sync_to_async(set_attendance)(a, "late")
    last_seen = (await socket.until("broadcast", topic=topic, timeout=5)).payload["meta"]["id"]
    await socket.close()
    for status in ["absent", "excused"]:  # while away
        await sync_to_async(set_attendance)(a, status)
    socket, _ = await pg_join(a.teacher_user, topic, [], replay={"after_id": last_seen, "limit": 100})
    missed = [await socket.until("broadcast", topic=topic, timeout=5) for _ in range(2)]
    assert [m.payload["payload"]["payload"]["status"] for m in missed] == ["absent", "excused"]
    assert await socket.no_message(0.5)
    await socket.close()


def store_notes(school, count: int) -> list[int]:
    """`count` broadcasts stored on the school's attendance topic; their seqs."""
    from django.db import transaction

    topic = attendance_topic(school).removeprefix("realtime:")
    with as_tenant(school.admin_user), transaction.atomic():
        RealtimeEvent.objects.bulk_create(
            RealtimeEvent(
                organization_id=school.org.pk,
                event_type="system_announcement",
                event_category="system",
                priority="medium",
                event_payload={"n": n},
                event_metadata={"topics": [topic], "event": "note"},
                broadcast_scope="group",
                fanout_at=timezone.now(),  # fanned out while the socket was away
            )
            for n in range(count)
        )
        return list(
            RealtimeEvent.objects.filter(event_metadata__event="note").order_by("seq").values_list("seq", flat=True)
        )


async def replayed_notes(socket: Socket, count: int) -> list:
    out = []
    while len(out) < count:
        message = await socket.recv()
        if message.event == "broadcast" and message.payload["event"] == "note":
            assert message.payload["meta"]["replayed"] is True
            out.append(message)
    return out


async def test_replay_sends_everything_missed_in_pages(schools, listener):
    """More than two pages of events missed: all of them, in order, and no resync notice."""
    a = schools.a
    seqs = await sync_to_async(store_notes)(a, 1200)
    socket, _ = await pg_join(a.teacher_user, attendance_topic(a), [], replay={"since": 0})
    got = await replayed_notes(socket, 1200)
    assert [m.payload["meta"]["id"] for m in got] == seqs
    assert [m.payload["payload"]["n"] for m in got] == list(range(1200))
    assert await socket.no_message(0.5)
    await socket.close()


async def test_replay_beyond_what_one_join_replays_says_resync_required(schools, settings):
    settings.REALTIME_REPLAY_MAX_EVENTS = 600
    a = schools.a
    seqs = await sync_to_async(store_notes)(a, 700)
    topic = attendance_topic(a)
    socket, _ = await pg_join(a.teacher_user, topic, [], replay={"after_id": seqs[0] - 1})
    got = await replayed_notes(socket, 600)
    assert [m.payload["meta"]["id"] for m in got] == seqs[:600]
    notice = await socket.until("system", topic=topic)
    assert notice.payload == {
        "extension": "replay",
        "status": "error",
        "message": "resync_required: 600 events replayed, more were missed than one join replays",
        "channel": topic.removeprefix("realtime:"),
        "code": "resync_required",
        "replayed": 600,
        "after_id": seqs[599],
        "first_missing_id": seqs[600],
    }
    await socket.close()
    # Rejoining from where the replay stopped gets the rest, and no notice.
    socket, _ = await pg_join(a.teacher_user, topic, [], replay={"after_id": notice.payload["after_id"]})
    assert [m.payload["meta"]["id"] for m in await replayed_notes(socket, 100)] == seqs[600:]
    assert await socket.no_message(0.5)
    await socket.close()


async def test_replay_limit_of_the_client_is_never_silently_less(schools):
    a = schools.a
    seqs = await sync_to_async(store_notes)(a, 20)
    topic = attendance_topic(a)
    socket, _ = await pg_join(a.teacher_user, topic, [], replay={"after_id": seqs[0] - 1, "limit": 10})
    assert [m.payload["meta"]["id"] for m in await replayed_notes(socket, 10)] == seqs[:10]
    notice = await socket.until("system", topic=topic)
    assert (notice.payload["code"], notice.payload["first_missing_id"]) == ("resync_required", seqs[10])
    await socket.close()


async def test_a_scheduled_event_is_not_replayed_before_it_goes_out(schools):
    a = schools.a
    topic = attendance_topic(a)
    [sent] = await sync_to_async(store_notes)(a, 1)
    with_schedule = await sync_to_async(store_scheduled_note)(a)
    socket, _ = await pg_join(a.teacher_user, topic, [], replay={"after_id": sent - 1})
    assert [m.payload["meta"]["id"] for m in await replayed_notes(socket, 1)] == [sent]
    assert with_schedule > sent and await socket.no_message(0.5)
    await socket.close()


def store_scheduled_note(school) -> int:
    topic = attendance_topic(school).removeprefix("realtime:")
    with as_tenant(school.admin_user):
        return RealtimeEvent.objects.create(
            organization_id=school.org.pk,
            event_type="system_announcement",
            event_category="system",
            event_payload={"n": 1},
            event_metadata={"topics": [topic], "event": "note"},
            broadcast_scope="group",
            scheduled_for=timezone.now() + timezone.timedelta(hours=1),
        ).seq


def store_unreadable(school) -> int:
    """A fanned-out event of the topic that cannot be turned into messages (any more: its change
    lacks the table)."""
    topic = attendance_topic(school).removeprefix("realtime:")
    with as_tenant(school.admin_user):
        return RealtimeEvent.objects.create(
            organization_id=school.org.pk,
            event_type="system_announcement",
            event_category="system",
            priority="medium",
            event_payload={"n": -1},
            event_metadata={"topics": [topic], "event": "note", "change": {"schema": "public"}},
            broadcast_scope="group",
            fanout_at=timezone.now(),
        ).seq


async def test_replay_that_cannot_read_a_page_says_resync_required(schools):
    """The first two pages went out after the join's ok; the third cannot be read: the client is
    told where the replay stopped, not left with less."""
    from events.delivery import FIRST_REPLAY_PAGE
    from events.selectors import REPLAY_PAGE

    a = schools.a
    topic = attendance_topic(a)
    readable = FIRST_REPLAY_PAGE + REPLAY_PAGE
    seqs = await sync_to_async(store_notes)(a, readable + 100)
    await sync_to_async(store_unreadable)(a)
    socket, _ = await pg_join(a.teacher_user, topic, [], replay={"after_id": seqs[0] - 1})
    got = await replayed_notes(socket, readable)
    notice = await socket.until("system", topic=topic)
    assert notice.payload["code"] == "resync_required"
    assert notice.payload["replayed"] == readable and notice.payload["first_missing_id"] is None
    assert notice.payload["after_id"] == got[-1].payload["meta"]["id"] == seqs[readable - 1]
    await socket.close()


async def test_invalid_replay_is_refused(schools, settings):
    socket = Socket()
    await socket.connect()
    config = {"broadcast": {"replay": {"since": 0, "limit": settings.REALTIME_REPLAY_MAX_EVENTS + 1}}}
    reply = await socket.join(attendance_topic(schools.a), token(schools.a.teacher_user), config)
    assert reply.payload["status"] == "error"
    assert reply.payload["response"]["reason"].startswith("InvalidReplay:")
    await socket.close()


async def test_delivery_ack_marks_the_users_events_delivered(schools, listener):
    a = schools.a
    topic = f"realtime:rankings:org_{a.org.pk}:student_{a.student.pk}"
    socket, _ = await pg_join(a.student_user, topic, [])

    def rank_up() -> None:
        with as_tenant(a.teacher_user):
            a.ranking.__class__.objects.filter(pk=a.ranking.pk).update(current_rank=1)

    await sync_to_async(rank_up)()
    message = await socket.until("broadcast", topic=topic, timeout=5)
    assert message.payload["event"] == "ranking_celebration"
    assert message.payload["payload"]["payload"]["celebrationType"] == "rank_improvement"
    seq = message.payload["meta"]["id"]
    await asyncio.sleep(0.6)  # the batched "sent" mark
    assert (await sync_to_async(_status)(seq)) == "sent"
    ref = await socket.push(topic, "delivery_ack", {"ids": [seq]})
    reply = await socket.until("phx_reply", ref=ref)
    assert reply.payload == {"status": "ok", "response": {"delivered": 1}}
    assert (await sync_to_async(_status)(seq)) == "delivered"
    bad = await socket.push(topic, "delivery_ack", {"ids": "all"})
    assert (await socket.until("phx_reply", ref=bad)).payload["status"] == "error"
    await socket.close()


def _status(seq: int) -> str:
    with dangerously_platform_context():
        return RealtimeEvent.objects.get(seq=seq).delivery_status


async def test_change_in_school_b_reaches_nobody_in_school_a(schools, listener):
    a, b = schools.a, schools.b
    everything = [binding("*")]
    sockets = [
        (await pg_join(a.teacher_user, attendance_topic(a), everything, replay={"since": 0, "limit": 1000}))[0],
        (await pg_join(a.teacher_user, teacher_topic(a), everything))[0],
        (await pg_join(a.admin_user, f"realtime:notifications:org_{a.org.pk}:role_admin", everything))[0],
        (await pg_join(a.student_user, f"realtime:rankings:org_{a.org.pk}:student_{a.student.pk}", everything))[0],
    ]
    for socket in sockets:  # drain what replay sent for school A itself
        await drain(socket)

    def school_b_changes() -> None:
        set_attendance(b, "late")
        with as_tenant(b.admin_user):
            Student.objects.filter(pk=b.student.pk).update(status="suspended")
            b.ranking.__class__.objects.filter(pk=b.ranking.pk).update(current_rank=1)

    await sync_to_async(school_b_changes)()
    await asyncio.sleep(1.0)
    assert listener.stats.events >= 3
    for socket in sockets:
        assert await socket.no_message(0.3)
        await socket.close()


async def test_a_batch_of_changes_reaches_the_socket_in_order(schools):
    """Changes written while the listener was down go out as one `realtime.batch` per topic."""
    await sync_to_async(_backlog_done)()
    a = schools.a
    topic = attendance_topic(a)
    socket, _ = await pg_join(a.teacher_user, topic, [binding("attendance", f"group_id=eq.{a.group.pk}")])
    for status in ("late", "absent", "excused"):
        await sync_to_async(set_attendance)(a, status)
    running = Listener(poll_interval=30)
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    try:
        frames = []
        while len(frames) < 6:
            message = await socket.recv(5)
            if message.event in ("broadcast", "postgres_changes"):
                frames.append(message)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert [f.event for f in frames] == ["broadcast", "postgres_changes"] * 3
    changes = [f.payload for f in frames if f.event == "postgres_changes"]
    assert [c["data"]["record"]["status"] for c in changes] == ["late", "absent", "excused"]
    ids = [c["meta"]["id"] for c in changes]
    assert ids == sorted(ids) and running.stats.batches == 1
    assert await socket.no_message(0.5)
    await socket.close()


async def test_a_long_replay_lets_the_other_sockets_run_between_its_frames():
    # Sending to a writable socket never yields: without turns, one socket's replay held the
    # process's event loop, and the joins of every other socket waited behind it.
    from events.delivery import STORED_FRAMES_PER_TURN, in_turns

    ticks = 0

    async def another_socket():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.ensure_future(another_socket())
    await asyncio.sleep(0)
    before = ticks
    messages = [{"n": n} for n in range(10 * STORED_FRAMES_PER_TURN)]
    sent = [message async for message in in_turns(messages)]
    turns = ticks - before
    other.cancel()
    assert sent == messages
    assert turns >= 10


async def test_replays_give_way_to_a_join_until_it_is_answered():
    # A client times out an unanswered join and backs off; a replay has no timeout.
    from events.delivery import STORED_FRAMES_PER_TURN, in_turns, join_unanswered

    order: list = []

    async def join():
        with join_unanswered():
            await asyncio.sleep(0.02)  # its reads
            order.append("answered")

    async def replay():
        async for message in in_turns(list(range(2 * STORED_FRAMES_PER_TURN))):
            order.append(message)

    await asyncio.gather(join(), replay())
    assert order.index("answered") == STORED_FRAMES_PER_TURN
    assert [m for m in order if m != "answered"] == list(range(2 * STORED_FRAMES_PER_TURN))


async def test_a_join_that_is_never_answered_only_slows_replays():
    from events.delivery import JOIN_WAY_SECONDS, STORED_FRAMES_PER_TURN, in_turns, join_unanswered

    with join_unanswered():
        started = asyncio.get_running_loop().time()
        sent = [m async for m in in_turns(list(range(3 * STORED_FRAMES_PER_TURN)))]
        took = asyncio.get_running_loop().time() - started
    assert sent == list(range(3 * STORED_FRAMES_PER_TURN))
    assert 3 * JOIN_WAY_SECONDS * 0.9 <= took < 5  # paused at each turn, for a bounded time


async def test_answered_and_refused_joins_leave_no_join_waiting(schools, sockets):
    from events import delivery

    a = schools.a
    await sockets.joined(a.teacher_user, attendance_topic(a))
    refused = await sockets.open()
    reply = await refused.join(attendance_topic(schools.b), token(a.teacher_user))
    assert reply.payload["status"] == "error"
    assert delivery._joins_unanswered == 0
