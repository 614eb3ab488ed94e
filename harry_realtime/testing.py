"""Test support shared by the suites: signed tokens, a minimal Phoenix socket over Channels'
WebsocketCommunicator, and channel-layer subscribers. Fixtures over these (root conftest.py:
`sockets`, `worker_connections_closed`) disconnect whatever a test opened, even when it fails.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings

from events.protocol import VSN_1, VSN_2, Message, decode_text
from events.routing import websocket_urlpatterns
from events.topics import attendance_topic, group_name
from harry_realtime.auth import issue_access_token

application = URLRouter(websocket_urlpatterns)


def socket_topic(school) -> str:
    """The attendance topic of the school's group as a client joins it (with `realtime:`)."""
    return f"realtime:{attendance_topic(school.org.pk, school.group.pk)}"


def token(user, *, ttl: int | None = None, **overrides) -> str:
    if ttl is None and not overrides:
        return issue_access_token(user)
    now = int(time.time())
    claims = {
        "sub": str(user.pk),
        "organization_id": str(user.organization_id),
        "role": user.role,
        "type": "access",
        "iat": now,
        "exp": now + (ttl if ttl is not None else 3600),
        "iss": settings.JWT_ISSUER,
        **overrides,
    }
    return jwt.encode(claims, settings.JWT_SIGNING_KEY, algorithm=settings.JWT_ALGORITHM)


class Socket:
    """A minimal Phoenix client over the communicator, speaking vsn 1.0.0 or 2.0.0."""

    def __init__(self, vsn: str = VSN_1, apikey: str = "anon", query: str | None = None):
        self.vsn = vsn
        path = "/realtime/v1/websocket?" + (query if query is not None else f"apikey={apikey}&vsn={vsn}")
        self.comm = WebsocketCommunicator(application, path)
        self.ref = 0
        self.join_refs: dict[str, str] = {}

    async def connect(self) -> None:
        connected, _ = await self.comm.connect()
        assert connected

    async def push(self, topic: str, event: str, payload: Any, *, join_ref: str | None = None) -> str:
        self.ref += 1
        ref = str(self.ref)
        join_ref = join_ref if join_ref is not None else self.join_refs.get(topic)
        if self.vsn == VSN_2:
            await self.comm.send_to(text_data=json.dumps([join_ref, ref, topic, event, payload]))
        else:
            frame = {"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref}
            await self.comm.send_to(text_data=json.dumps(frame))
        return ref

    async def recv(self, timeout: float = 3) -> Message:
        output = await self.comm.receive_output(timeout)
        assert output["type"] == "websocket.send", output
        return decode_text(output["text"], self.vsn)

    async def until(self, event: str, *, topic: str | None = None, ref: str | None = None, timeout: float = 3):
        """The next message with this event (and topic/ref), skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            message = await self.recv(max(0.05, deadline - time.monotonic()))
            if message.event == event and topic in (None, message.topic) and ref in (None, message.ref):
                return message

    async def join(self, topic: str, access_token: str | None, config: dict | None = None) -> Message:
        self.ref += 1
        join_ref = str(self.ref)
        self.ref -= 1
        payload: dict[str, Any] = {
            "config": config or {"broadcast": {"ack": False, "self": False}, "presence": {"key": ""}}
        }
        if access_token is not None:
            payload["access_token"] = access_token
        ref = await self.push(topic, "phx_join", payload, join_ref=join_ref)
        reply = await self.until("phx_reply", ref=ref)
        if reply.payload["status"] == "ok":
            self.join_refs[topic] = join_ref
        return reply

    async def no_message(self, timeout: float = 0.3) -> bool:
        return await self.comm.receive_nothing(timeout)

    async def close(self) -> None:
        if not self.comm.future.done():  # closed already (or the application gave up)
            await self.comm.disconnect()


async def joined(user, topic: str, *, vsn: str = VSN_1, config: dict | None = None) -> Socket:
    socket = Socket(vsn)
    await socket.connect()
    await _join_checked(socket, user, topic, config)
    return socket


async def _join_checked(socket: Socket, user, topic: str, config: dict | None) -> None:
    reply = await socket.join(topic, token(user), config)
    assert reply.payload["status"] == "ok", reply.payload
    state = await socket.until("presence_state", topic=topic)
    assert isinstance(state.payload, dict)


class Sockets:
    """The `sockets` fixture: every socket opened through it is disconnected at teardown."""

    def __init__(self) -> None:
        self.opened: list[Socket] = []

    async def open(self, vsn: str = VSN_1, **options: Any) -> Socket:
        socket = Socket(vsn, **options)
        self.opened.append(socket)
        await socket.connect()
        return socket

    async def joined(self, user, topic: str, *, vsn: str = VSN_1, config: dict | None = None) -> Socket:
        socket = await self.open(vsn)
        await _join_checked(socket, user, topic, config)
        return socket

    async def close_all(self) -> None:
        for socket in self.opened:
            await socket.close()


async def subscribe(*topics: str) -> str:
    """A new channel-layer channel in the groups of these topics (what a socket would receive)."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    for topic in topics:
        await layer.group_add(group_name(topic), channel)
    return channel


async def receive(channel: str, timeout: float = 10.0) -> dict:
    async with asyncio.timeout(timeout):
        return await get_channel_layer().receive(channel)
