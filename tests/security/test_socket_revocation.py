"""Issue 13 item 4 (socket side): deactivating a user closes their sockets within seconds, however
the row was changed (here a raw UPDATE, which no Django signal sees)."""

from __future__ import annotations

import time

import pytest
from channels.db import database_sync_to_async
from django.db import connection

from harry_realtime.tenancy import dangerously_platform_context
from harry_realtime.testing import Socket, joined, socket_topic

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "owner"]),
    pytest.mark.usefixtures("worker_connections_closed"),
]


@pytest.fixture(autouse=True)
def fast_revocation_poll(settings):
    settings.REALTIME_REVOCATION_POLL_SECONDS = 0.2


@database_sync_to_async
def raw_update(sql: str, *params) -> None:
    with dangerously_platform_context(), connection.cursor() as cursor:
        cursor.execute(sql, params)


async def closed_within(socket: Socket, seconds: float) -> list[str]:
    """The events the socket received until the server closed it; fails if it stays open."""
    deadline = time.monotonic() + seconds
    events = []
    while time.monotonic() < deadline:
        output = await socket.comm.receive_output(max(0.05, deadline - time.monotonic()))
        if output["type"] == "websocket.close":
            assert output.get("code") == 1008
            return events
        events.append(output.get("text", ""))
    raise AssertionError("the socket stayed open")


async def test_deactivating_a_user_by_raw_update_closes_their_socket(schools):
    topic = socket_topic(schools.a)
    socket = await joined(schools.a.teacher_user, topic)
    bystander = await joined(schools.a.admin_user, topic)

    await raw_update("UPDATE users SET is_active = false WHERE id = %s", schools.a.teacher_user.pk)

    events = await closed_within(socket, 3)
    assert any("may no longer sign in" in frame for frame in events)
    assert any("phx_close" in frame for frame in events)
    # Another user's socket stays open and working.
    ref = await bystander.push("phoenix", "heartbeat", {})
    assert (await bystander.until("phx_reply", ref=ref)).payload["status"] == "ok"
    await bystander.close()


async def test_moving_a_user_to_another_role_closes_their_socket(schools):
    topic = f"realtime:notifications:org_{schools.a.org.pk}:role_all"
    socket = await joined(schools.a.student_user, topic)
    await raw_update("UPDATE users SET role = 'teacher' WHERE id = %s", schools.a.student_user.pk)
    await closed_within(socket, 3)


async def test_an_active_users_socket_stays_open(schools):
    topic = socket_topic(schools.a)
    socket = await joined(schools.a.teacher_user, topic)
    assert await socket.no_message(1.0)
    ref = await socket.push("phoenix", "heartbeat", {})
    assert (await socket.until("phx_reply", ref=ref)).payload["status"] == "ok"
    await socket.close()
