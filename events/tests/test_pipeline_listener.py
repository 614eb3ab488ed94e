"""The listener: live fan-out, nothing lost while it was down, late commits, standby, reconnect."""

import asyncio

import psycopg
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection

from events import selectors
from events.listener import Listener, conninfo
from events.models import RealtimeEvent
from harry_realtime.tenancy import Tenant, dangerously_platform_context, tenant_context
from harry_realtime.testing import subscribe
from school.models import Attendance

# Committed data (the listener reads from its own thread); only the owner may flush between tests.
pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]

STATUSES = ["late", "present"]


def family_notice_count() -> int:
    with dangerously_platform_context():
        return RealtimeEvent.objects.filter(event_metadata__event="family_notice").count()


def attendance_topic(school) -> str:
    return f"attendance:org_{school.org.pk}:group_{school.group.pk}"


async def collect(channel: str, count: int, timeout: float = 20.0) -> list[dict]:
    """`count` frames: a batch counts as its items, a change carrying its broadcast as the broadcast
    and then the change."""
    layer = get_channel_layer()
    received: list[dict] = []
    async with asyncio.timeout(timeout):
        while len(received) < count:
            message = await layer.receive(channel)
            # Subscribers in one process share the received dict, as consumers do: never mutate it.
            for item in message["messages"] if message["type"] == "realtime.batch" else [message]:
                if "broadcast" in item:
                    received.append(item["broadcast"])
                received.append({key: value for key, value in item.items() if key != "broadcast"})
    return received


async def nothing_more(channel: str, wait: float = 0.5) -> bool:
    try:
        async with asyncio.timeout(wait):
            await get_channel_layer().receive(channel)
    except TimeoutError:
        return True
    return False


async def start(listener: Listener) -> tuple[asyncio.Event, asyncio.Task]:
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    await asyncio.wait_for(listener.is_leader.wait(), 10)
    return stop, task


async def wait_until(predicate, *, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def halt(stop: asyncio.Event, task: asyncio.Task) -> None:
    stop.set()
    await asyncio.wait_for(task, 10)


def mark_processed_backlog() -> None:
    """The fixture's own writes are old news for these tests."""
    with dangerously_platform_context():
        RealtimeEvent.objects.filter(processed_at__isnull=True).update(processed_at="2000-01-01T00:00:00Z")


def set_status(school, status: str) -> None:
    user = school.teacher_user
    with tenant_context(Tenant(user.organization_id, user.pk, user.role)):
        Attendance.objects.filter(pk=school.attendance.pk).update(status=status)


def set_status_raw(school, status: str) -> None:
    with dangerously_platform_context(), connection.cursor() as cursor:
        cursor.execute("UPDATE attendance SET status = %s WHERE id = %s", [status, school.attendance.pk])


async def test_live_change_reaches_group_and_teacher_topics(schools):
    await sync_to_async(mark_processed_backlog)()
    a = schools.a
    teacher_topic = f"groups:org_{a.org.pk}:teacher_{a.teacher.pk}"
    on_group, on_teacher = await subscribe(attendance_topic(a)), await subscribe(teacher_topic)
    listener = Listener(poll_interval=30)
    stop, task = await start(listener)
    await sync_to_async(set_status)(a, "late")
    group_msgs = await collect(on_group, 2, timeout=5)
    teacher_msgs = await collect(on_teacher, 2, timeout=5)
    await halt(stop, task)

    broadcast, change = group_msgs
    assert broadcast["type"] == "realtime.broadcast" and broadcast["event"] == "attendance_sync"
    assert broadcast["payload"]["payload"]["status"] == "late"
    assert broadcast["payload"]["payload"]["attendanceId"] == str(a.attendance.pk)
    assert change["type"] == "realtime.postgres_change"
    assert change["data"]["table"] == "attendance" and change["data"]["type"] == "UPDATE"
    assert {"name": "status", "type": "varchar"} in change["data"]["columns"]
    assert broadcast["meta"]["id"] == change["meta"]["id"]
    assert teacher_msgs[0]["event"] == "attendance_update"
    stored = await sync_to_async(_event_by_seq)(broadcast["meta"]["id"])
    assert stored.processed_at is not None and stored.delivery_status == "sent"


def _event_by_seq(seq: int) -> RealtimeEvent:
    with dangerously_platform_context():
        return RealtimeEvent.objects.get(seq=seq)


async def test_thousand_changes_written_while_down_reach_every_subscriber_in_order_once(schools):
    await sync_to_async(mark_processed_backlog)()
    a, b = schools.a, schools.b
    subscribers = [await subscribe(attendance_topic(a)) for _ in range(3)]
    other_school = await subscribe(attendance_topic(b), f"groups:org_{b.org.pk}:teacher_{b.teacher.pk}")

    def write_thousand() -> None:
        for i in range(500):
            set_status(a, STATUSES[i % 2])  # the ORM in the teacher's tenant context, as the API does
        for i in range(500):
            set_status_raw(a, STATUSES[(i + 1) % 2])

    await sync_to_async(write_thousand)()
    listener = Listener(poll_interval=30)
    stop, task = await start(listener)
    try:
        for channel in subscribers:
            messages = await collect(channel, 2000, timeout=20)
            broadcasts = [m["meta"]["id"] for m in messages if m["type"] == "realtime.broadcast"]
            changes = [m["meta"]["id"] for m in messages if m["type"] == "realtime.postgres_change"]
            assert len(broadcasts) == len(set(broadcasts)) == 1000
            assert broadcasts == sorted(broadcasts) == changes
            assert await nothing_more(channel)
        assert await nothing_more(other_school)
    finally:
        await halt(stop, task)
    # Plus the parent's family notices (a late mark, then its correction: events/family.py).
    assert listener.stats.events == 1000 + await sync_to_async(family_notice_count)()


async def test_event_committing_after_a_higher_seq_is_not_skipped(schools):
    """seq is taken at insert; a transaction that inserted first may commit last."""
    await sync_to_async(mark_processed_backlog)()
    a = schools.a
    channel = await subscribe(f"groups:org_{a.org.pk}:teacher_{a.teacher.pk}")
    listener = Listener(poll_interval=30)
    stop, task = await start(listener)
    slow = await psycopg.AsyncConnection.connect(await sync_to_async(conninfo)())
    try:
        await slow.execute(
            "SELECT set_config('app.org_id', %s, true), set_config('app.user_id', %s, true),"
            " set_config('app.role', 'admin', true)",
            [str(a.org.pk), str(a.admin_user.pk)],
        )
        await slow.execute("UPDATE groups SET name = 'slow' WHERE id = %s", [a.group.pk])
        cursor = await slow.execute("SELECT max(seq) FROM realtime_events")
        slow_seq = (await cursor.fetchone())[0]
        horizon_before = await sync_to_async(_stable_seq)()
        assert horizon_before < slow_seq  # the poll cursor will not pass the open transaction

        await sync_to_async(set_status)(a, "late")  # a higher seq, committed first
        fast = await collect(channel, 2, timeout=5)
        assert fast[0]["meta"]["id"] > slow_seq
        assert fast[0]["event"] == "attendance_update"
        await slow.commit()
        late = await collect(channel, 2, timeout=5)
        assert late[0]["meta"]["id"] == slow_seq
        assert late[0]["event"] == "group_update"
        assert late[1]["data"]["record"]["name"] == "slow"
        assert await sync_to_async(_stable_seq)() >= fast[0]["meta"]["id"]
    finally:
        await slow.close()
        await halt(stop, task)


def _stable_seq() -> int:
    with dangerously_platform_context():
        return selectors.stable_seq()


async def test_second_listener_stands_by_and_takes_over(schools):
    await sync_to_async(mark_processed_backlog)()
    a = schools.a
    channel = await subscribe(attendance_topic(a))
    first, second = Listener(poll_interval=30), Listener(poll_interval=30, standby_interval=0.1)
    stop1, task1 = await start(first)
    stop2 = asyncio.Event()
    task2 = asyncio.create_task(second.run(stop2))
    await asyncio.sleep(0.5)
    assert not second.is_leader.is_set()
    await halt(stop1, task1)
    await sync_to_async(set_status)(a, "late")  # written while nobody leads
    await asyncio.wait_for(second.is_leader.wait(), 5)
    messages = await collect(channel, 2, timeout=5)
    assert messages[0]["payload"]["payload"]["status"] == "late"
    assert await nothing_more(channel)
    await halt(stop2, task2)
    assert first.stats.events == 0 and second.stats.events == 1 + await sync_to_async(family_notice_count)()


async def test_listener_reconnects_and_resumes_after_losing_its_connection(schools):
    await sync_to_async(mark_processed_backlog)()
    a = schools.a
    channel = await subscribe(attendance_topic(a))
    listener = Listener(poll_interval=30)
    stop, task = await start(listener)
    async with await psycopg.AsyncConnection.connect(await sync_to_async(conninfo)(), autocommit=True) as killer:
        cursor = await killer.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'realtime_listen' AND datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert (await cursor.fetchone())[0] == 1
    # The write comes after the listener noticed, so only a resumed session can deliver it.
    await wait_until(lambda: listener.stats.reconnects >= 1, timeout=10)
    await sync_to_async(set_status)(a, "late")
    messages = await collect(channel, 2, timeout=15)
    await halt(stop, task)
    assert messages[0]["payload"]["payload"]["status"] == "late"
