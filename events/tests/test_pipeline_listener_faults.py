"""The listener under faults: a Redis restart, a refused Redis, killed database backends. It keeps
running, backs off, reconnects and delivers what was written during and after the fault."""

import asyncio
import random
import secrets

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings

from events import listener as listener_module
from events.listener import Listener, conninfo, failure_cause, recovery_delay
from events.tests.test_pipeline_listener import (
    attendance_topic,
    collect,
    halt,
    mark_processed_backlog,
    nothing_more,
    set_status,
    start,
)
from harry_realtime import kpi, redis_conn
from harry_realtime.testing import subscribe
from harry_realtime.tests.test_redis_conn import OwnRedis

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]


@pytest.fixture
def own_redis(settings, tmp_path):
    """The channel layer (as configured in settings, retry included) on a Redis the test may kill."""
    server = OwnRedis(tmp_path)
    config = dict(django_settings.CHANNEL_LAYERS["default"]["CONFIG"])
    config["hosts"] = [redis_conn.channel_layer_host(server.url, [], "", socket_timeout=None)]
    config["prefix"] = f"faults{secrets.token_hex(3)}"
    settings.CHANNEL_LAYERS = {"default": {**django_settings.CHANNEL_LAYERS["default"], "CONFIG": config}}
    yield server
    server.stop()


@pytest.fixture
def app_backends_killed(transactional_db):
    """For tests that terminate the app role's backends: the test thread's connections die too;
    close them (and check the pool) before the test database is flushed."""
    yield
    listener_module._drop_database_connections()


def write_status_raw(conn: psycopg.Connection, school, status: str) -> None:
    """An attendance change written on a connection of the test's own, in the teacher's tenant."""
    user = school.teacher_user
    with conn.transaction():
        conn.execute(
            "SELECT set_config('app.org_id', %s, true), set_config('app.user_id', %s, true),"
            " set_config('app.role', %s, true)",
            [str(user.organization_id), str(user.pk), user.role],
        )
        conn.execute("UPDATE attendance SET status = %s WHERE id = %s", [status, school.attendance.pk])


def statuses(messages: list[dict]) -> list[str]:
    return [m["payload"]["payload"]["status"] for m in messages if m["type"] == "realtime.broadcast"]


def test_failures_are_classified_and_waits_grow_bounded_with_jitter():
    from django.db.utils import InterfaceError, OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    assert failure_cause(OperationalError("terminating connection")) == "database"
    assert failure_cause(InterfaceError("connection already closed")) == "database"
    assert failure_cause(psycopg.OperationalError("server closed the connection")) == "database"
    assert failure_cause(RedisConnectionError("Connection closed by server.")) == "redis"
    assert failure_cause(RedisTimeoutError("Timeout reading")) == "redis"
    assert failure_cause(TimeoutError()) == "network"
    assert failure_cause(KeyError("x")) == "unexpected"
    first, cap = listener_module.RECOVERY_BACKOFF_SECONDS
    random.seed(19)
    for failures, bound in ((1, first), (2, 2 * first), (3, 4 * first), (40, cap)):
        waits = [recovery_delay(failures) for _ in range(200)]
        assert all(bound / 2 <= w <= bound for w in waits), (failures, min(waits), max(waits))
        assert len(set(waits)) > 100  # jittered, not one fixed value


async def test_listener_survives_a_redis_restart_and_delivers_what_was_written_meanwhile(schools, own_redis):
    await sync_to_async(mark_processed_backlog)()
    a = schools.a
    channel = await subscribe(attendance_topic(a))
    listener = Listener(poll_interval=0.5)
    stop, task = await start(listener)
    try:
        await sync_to_async(set_status)(a, "late")
        assert statuses(await collect(channel, 2, timeout=10)) == ["late"]
        # The receive clears its in-flight backup right after; killed before that, Redis would
        # hand the message over again after the restart (sockets drop such repeats).
        await asyncio.sleep(0.3)

        own_redis.kill()
        await sync_to_async(set_status)(a, "present")  # written while Redis is down
        async with asyncio.timeout(10):
            while listener.stats.reconnects == 0:
                await asyncio.sleep(0.05)
        assert listener.stats.last_failure == "redis"
        await asyncio.sleep(1.0)  # a few more failed attempts, backing off
        assert not task.done()

        await asyncio.to_thread(own_redis.restart)
        received = await collect(channel, 2, timeout=20)
        assert statuses(received) == ["present"]
        assert received[1]["type"] == "realtime.postgres_change"
        await asyncio.wait_for(listener.is_leader.wait(), 10)
        await sync_to_async(set_status)(a, "late")  # written after the restart
        assert statuses(await collect(channel, 2, timeout=10)) == ["late"]
        assert await nothing_more(channel)
    finally:
        await halt(stop, task)
    assert task.exception() is None


async def test_listener_waits_out_a_paused_redis(schools, own_redis):
    await sync_to_async(mark_processed_backlog)()
    a = schools.a
    channel = await subscribe(attendance_topic(a))
    listener = Listener(poll_interval=0.5)
    stop, task = await start(listener)
    try:
        own_redis.pause()
        await sync_to_async(set_status)(a, "late")
        await asyncio.sleep(2.0)
        assert not task.done()
        own_redis.resume()
        received = await collect(channel, 2, timeout=15)
        assert statuses(received) == ["late"]
        await sync_to_async(set_status)(a, "present")
        assert statuses(await collect(channel, 2, timeout=10)) == ["present"]
        assert await nothing_more(channel)
    finally:
        own_redis.resume()
        await halt(stop, task)


async def test_a_send_redis_never_answers_ends_the_session_and_is_retried(schools, own_redis):
    """A Redis that accepts but never answers (paused past the send timeout): the listener gives
    the send up, reconnects and sends the batch again once Redis answers."""
    await sync_to_async(mark_processed_backlog)()
    a = schools.a
    channel = await subscribe(attendance_topic(a))
    listener = Listener(poll_interval=0.5, send_timeout=1.0)
    stop, task = await start(listener)
    try:
        own_redis.pause()
        await sync_to_async(set_status)(a, "late")
        async with asyncio.timeout(10):
            while listener.stats.reconnects == 0:
                await asyncio.sleep(0.05)
        assert listener.stats.last_failure == "network"
        own_redis.resume()
        received = await collect(channel, 2, timeout=15)
        assert "late" in statuses(received)
    finally:
        own_redis.resume()
        await halt(stop, task)
    assert task.exception() is None


async def test_listener_survives_killed_database_backends_and_resumes_from_the_outbox(schools, app_backends_killed):
    await sync_to_async(mark_processed_backlog)()
    a = schools.a
    channel = await subscribe(attendance_topic(a))
    listener = Listener(poll_interval=0.5)
    stop, task = await start(listener)
    recoveries_before = await sync_to_async(_recoveries)("database")
    own = await sync_to_async(psycopg.connect)(await sync_to_async(conninfo)(), autocommit=True)
    try:
        await sync_to_async(set_status)(a, "late")
        assert statuses(await collect(channel, 2, timeout=10)) == ["late"]
        # Every backend of the app role but this one: the listener's LISTEN connection, the ORM's
        # connections in its thread and the idle ones in the pool.
        for round_ in range(2):
            killed = await sync_to_async(_terminate_app_backends)(own)
            assert killed >= 2
            status = ["present", "late"][round_]
            await sync_to_async(write_status_raw)(own, a, status)  # written during the fault
            received = await collect(channel, 2, timeout=20)
            assert statuses(received) == [status]
        assert not task.done()
        assert listener.stats.reconnects >= 2
        await asyncio.wait_for(listener.is_leader.wait(), 10)
        await sync_to_async(set_status)(a, "present")  # through the ORM again, after the fault
        assert statuses(await collect(channel, 2, timeout=10)) == ["present"]
        assert await nothing_more(channel)
    finally:
        await sync_to_async(own.close)()
        await halt(stop, task)
    assert task.exception() is None
    assert await sync_to_async(_recoveries)("database") >= recoveries_before + 1


async def test_listener_recovers_when_the_orm_connection_dies_between_send_and_mark(schools, monkeypatch):
    """A database failure after the send: the batch stays unprocessed and is sent again after the
    reconnect (at least once; sockets drop the repeat)."""
    await sync_to_async(mark_processed_backlog)()
    a = schools.a
    channel = await subscribe(attendance_topic(a))
    original = listener_module._mark_processed
    calls = {"n": 0}

    def failing_once(seqs: list[int]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            from django.db import connection

            with connection.cursor() as cursor:  # the ORM's own connection is killed under it
                cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        original(seqs)

    monkeypatch.setattr(listener_module, "_mark_processed", failing_once)
    listener = Listener(poll_interval=0.5)
    stop, task = await start(listener)
    try:
        await sync_to_async(set_status)(a, "late")
        received = await collect(channel, 4, timeout=15)
        assert statuses(received) == ["late", "late"]  # sent, not marked, sent again
        assert received[0]["meta"]["id"] == received[2]["meta"]["id"]
        assert listener.stats.reconnects == 1 and listener.stats.last_failure == "database"
        await sync_to_async(set_status)(a, "present")
        assert statuses(await collect(channel, 2, timeout=10)) == ["present"]
    finally:
        await halt(stop, task)
    assert task.exception() is None


def _terminate_app_backends(conn: psycopg.Connection) -> int:
    cursor = conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND usename = current_user AND pid <> pg_backend_pid()"
    )
    return cursor.fetchone()[0]


def _recoveries(cause: str) -> float:
    kpi.flush()
    return kpi.counter_values("harry_listener_recoveries_total").get((cause,), 0.0)
