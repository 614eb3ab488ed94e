"""Keeps the realtime_subscriptions and realtime_presence rows true for one WebSocket.

The gateway's consumer calls one method per lifecycle point. The socket authenticates at its
first join, so that is where the connection is bound to its rows: to the REST connection named by
`?connection_id=` (or the device's latest one, `?device_id=`), else to a session of its own.
Heartbeats reach the database at most every PRESENCE_MIRROR_WRITE_SECONDS per socket, and a
re-track with unchanged presence columns is not written again. The tables are a mirror: a failed
write is logged and never disturbs the socket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from events import profiles
from harry_realtime.socket_db import socket_db
from harry_realtime.tenancy import Tenant, tenant_context

from . import sockets

log = logging.getLogger(__name__)


def _first(params: dict[str, list[str]], name: str) -> str | None:
    value = (params.get(name) or [""])[0][:200]
    return value if value and "\x00" not in value else None  # PostgreSQL text cannot hold NUL


class PresenceMirror:
    def __init__(self) -> None:
        self.websocket_id = ""
        self.connection_id: str | None = None
        self.device_id: str | None = None
        self.platform: str | None = None
        self.user = None
        self.session_id: str | None = None
        self.last_write = 0.0
        self.last_event_at: datetime | None = None
        self.written_presence: dict | None = None
        self.closed_already = False
        self.profile = profiles.ConnectionProfile()
        self.profile_declared = False
        self.adopted: profiles.ConnectionProfile | None = None

    def opened(self, *, websocket_id: str, params: dict[str, list[str]], profile: profiles.ConnectionProfile) -> None:
        """`profile`: what the socket URL declared (the default profile when it named no field)."""
        self.websocket_id = websocket_id
        self.profile = profile
        self.profile_declared = profiles.declares_profile(params)
        self.connection_id = sockets.uuid_or_none(_first(params, "connection_id"))
        self.device_id = _first(params, "device_id")
        self.platform = _first(params, "platform")

    async def _run(self, service: Callable[..., Any], **kwargs) -> Any:
        user = self.user

        def call():
            with tenant_context(Tenant(user.organization_id, user.pk, user.role)):
                return service(user=user, **kwargs)

        try:
            return await socket_db(call)()
        except Exception:  # the mirror must never take the socket down
            log.exception("presence mirror write failed: %s", service.__name__)
            return None

    async def joined(self, *, user, topic: str) -> None:
        if self.closed_already:
            return
        if self.user is None:
            self.user = user
            bound = await self._run(
                sockets.socket_opened,
                websocket_id=self.websocket_id,
                connection_id=self.connection_id,
                device_id=self.device_id,
                platform=self.platform,
                profile=self.profile if self.profile_declared else None,
            )
            if bound is None:
                self.user = None
                return
            self.session_id, self.device_id, self.adopted = bound
            self.profile = self.adopted or self.profile
            self.last_write = time.monotonic()
        await self._run(
            sockets.socket_joined,
            session_id=self.session_id,
            device_id=self.device_id,
            websocket_id=self.websocket_id,
            topic=topic,
            platform=self.platform,
            profile=self.profile,
        )

    def take_adopted(self) -> profiles.ConnectionProfile | None:
        """The REST connection's profile, once, when the socket bound to it without its own."""
        adopted, self.adopted = self.adopted, None
        return adopted

    async def profile_changed(self, *, profile: profiles.ConnectionProfile) -> None:
        self.profile = profile
        if self.session_id and not self.closed_already:
            await self._run(
                sockets.socket_profile_changed, session_id=self.session_id, device_id=self.device_id, profile=profile
            )

    async def left(self, *, topic: str) -> None:
        if self.session_id and not self.closed_already:
            await self._run(sockets.socket_left, session_id=self.session_id, topic=topic)

    def event_delivered(self) -> None:
        self.last_event_at = timezone.now()

    async def heartbeat(self) -> None:
        if not self.session_id or self.closed_already:
            return
        if time.monotonic() - self.last_write < settings.PRESENCE_MIRROR_WRITE_SECONDS:
            return
        self.last_write = time.monotonic()
        await self._run(
            sockets.socket_heartbeat,
            session_id=self.session_id,
            device_id=self.device_id,
            last_event_received=self.last_event_at,
            idle_timeout_seconds=profiles.idle_timeout_seconds(self.profile),
        )

    async def tracked(self, *, topic: str, meta: dict) -> None:
        if not self.session_id or self.closed_already:
            return
        fields = sockets.presence_fields_from_meta(meta, topic=topic)
        if fields == self.written_presence:
            return
        self.written_presence = fields
        await self._run(sockets.presence_tracked, device_id=self.device_id, meta=meta, topic=topic)

    async def untracked(self, *, topic: str) -> None:
        if not self.session_id or self.closed_already:
            return
        self.written_presence = None
        await self._run(sockets.presence_untracked, device_id=self.device_id)

    async def closed(self) -> None:
        """The socket ended, cleanly or not; later `left` calls of its teardown change nothing."""
        if self.closed_already:
            return
        self.closed_already = True
        if self.session_id:
            await self._run(sockets.socket_closed, session_id=self.session_id, device_id=self.device_id)
