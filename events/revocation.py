"""Sockets of users who may no longer sign in are closed within seconds, in every server process.

Each web process keeps the signed-in identity (user, school, role) of each of its sockets and
asks PostgreSQL every REALTIME_REVOCATION_POLL_SECONDS which of those users are still active in
that school with that role. A socket whose user is not (deactivated in the admin, through the API
or by a raw UPDATE; deleted; moved to another school or role) gets `realtime.revoked` and closes.

A poll rather than a trigger and NOTIFY: it needs no other process (the listener) to be up, misses
nothing while a connection is down or a notification is lost, and costs one indexed query per
process per interval whatever the number of sockets.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from channels.layers import get_channel_layer
from django.conf import settings

from harry_realtime.socket_db import socket_db
from school.selectors import dangerously_users_still_signed_in

log = logging.getLogger(__name__)

Identity = tuple[str, str, str]  # (user id, organization id, role)


class _Registry:
    """The sockets of one event loop (a server process has one; tests run one per test)."""

    def __init__(self) -> None:
        self.sockets: dict[str, Identity] = {}  # channel name -> identity
        self.task: asyncio.Task | None = None


_registries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Registry] = weakref.WeakKeyDictionary()


def _registry() -> _Registry:
    loop = asyncio.get_running_loop()
    registry = _registries.get(loop)
    if registry is None:
        registry = _registries[loop] = _Registry()
    if registry.task is None or registry.task.done():
        registry.task = loop.create_task(_poll_loop(registry), name="realtime-revocation")
    return registry


def watch(channel_name: str, *, user_id: str, organization_id: str, role: str) -> None:
    """Close this socket when its user may no longer sign in."""
    _registry().sockets[channel_name] = (str(user_id), str(organization_id), role)


def forget(channel_name: str) -> None:
    registry = _registries.get(asyncio.get_running_loop())
    if registry is not None:
        registry.sockets.pop(channel_name, None)


async def check_now(registry: _Registry) -> int:
    """One round: tell every socket whose user may no longer sign in; how many were told."""
    watched = dict(registry.sockets)
    if not watched:
        return 0
    allowed = await socket_db(dangerously_users_still_signed_in)(set(watched.values()))
    revoked = [name for name, identity in watched.items() if identity not in allowed]
    layer = get_channel_layer()
    for name in revoked:
        registry.sockets.pop(name, None)
        await layer.send(name, {"type": "realtime.revoked"})
    if revoked:
        log.info("closing %d socket(s) of users who may no longer sign in", len(revoked))
    return len(revoked)


async def _poll_loop(registry: _Registry) -> None:
    while True:
        await asyncio.sleep(settings.REALTIME_REVOCATION_POLL_SECONDS)
        try:
            await check_now(registry)
        except asyncio.CancelledError:
            raise
        except Exception:  # a database or Redis outage must not end the poll for good
            log.exception("revocation poll failed")
