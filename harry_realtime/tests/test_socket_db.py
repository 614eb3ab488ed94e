"""The sockets' database threads: calls of different sockets overlap, each call's connection
goes back to the pool, and the RLS context of one call never reaches another."""

import asyncio
import os
import threading

import pytest
from django.conf import settings
from django.db import connection

from harry_realtime.socket_db import socket_db
from harry_realtime.tenancy import Tenant, current_tenant, tenant_context

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner"])


async def test_calls_of_different_sockets_run_at_the_same_time():
    # Each call waits until as many calls as there are threads are inside at once: on one thread
    # (Channels' thread-sensitive default) the first would wait alone and time out.
    inside = threading.Barrier(settings.REALTIME_DB_THREADS, timeout=5)

    @socket_db
    def meet() -> str:
        inside.wait()
        return threading.current_thread().name

    names = await asyncio.gather(*(meet() for _ in range(settings.REALTIME_DB_THREADS)))
    assert len(set(names)) == settings.REALTIME_DB_THREADS
    assert all(name.startswith("socket-db") for name in names)


async def test_a_call_holds_no_connection_after_it_returns():
    @socket_db
    def query_and_report() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return connection.connection is not None

    @socket_db
    def still_connected() -> bool:
        return connection.connection is not None

    assert await query_and_report() is True
    for _ in range(settings.REALTIME_DB_THREADS * 2):  # whichever thread runs it
        assert await still_connected() is False


async def test_the_tenant_context_of_one_call_does_not_reach_the_next(schools):
    a = schools.a.admin_user

    @socket_db
    def as_school_a() -> str:
        with tenant_context(Tenant(a.organization_id, a.pk, "admin")):
            return current_tenant().organization_id

    @socket_db
    def outside_any() -> Tenant | None:
        return current_tenant()

    assert await as_school_a() == str(a.organization_id)
    for _ in range(settings.REALTIME_DB_THREADS * 2):
        assert await outside_any() is None


async def test_a_call_after_postgresql_ended_the_idle_connections_succeeds():
    # The pool's idle connections die with their backends (a PostgreSQL restart, an operator's
    # pg_terminate_backend); the pool checks a connection before it hands it out.
    import psycopg

    @socket_db
    def count_users() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
            return cursor.fetchone()[0]

    await asyncio.gather(*(count_users() for _ in range(settings.REALTIME_DB_THREADS)))
    with psycopg.connect(os.environ["DATABASE_ADMIN_URL"], autocommit=True) as admin:
        ended = [
            pid
            for (pid,) in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND usename = %s AND state = 'idle'",
                [connection.settings_dict["NAME"], connection.settings_dict["USER"]],
            ).fetchall()
        ]
        for pid in ended:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        # A backend ends when it handles the signal: until then a check could still pass, and the
        # next test would meet the end of it.
        for _ in range(200):
            alive = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [ended]).fetchone()[0]
            if not alive:
                break
            await asyncio.sleep(0.05)
    assert ended
    for _ in range(settings.REALTIME_DB_THREADS * 2):
        assert await count_users() >= 1
