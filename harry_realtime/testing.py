"""Test support shared by the suites: signed tokens, a minimal Phoenix socket over Channels'
WebsocketCommunicator, channel-layer subscribers, and real server processes (uvicorn on a free
port). Fixtures over these (root conftest.py: `sockets`, `worker_connections_closed`) disconnect
whatever a test opened, even when it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
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


ROOT = Path(__file__).resolve().parent.parent
UVICORN_READY = r"Uvicorn running on http://127\.0\.0\.1:(\d+)"


class ServerProcess:
    """`python *args` in the repository root (uvicorn, daphne, a management command), returned once
    its output matches `ready`: for uvicorn on `--port 0`, the line with the port it bound.

    Its stdout and stderr go to `log`, or to an unnamed temporary file, never to a pipe: a server
    whose output nobody reads any more would block on a full pipe. `output` is what it wrote so
    far, and all of it once stopped. A context manager: leaving it stops the process.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        ready: str = UVICORN_READY,
        log: Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.args = list(args)
        self._out = log.open("w+b") if log is not None else tempfile.TemporaryFile()
        self._output: str | None = None  # set when stopped
        self.process = subprocess.Popen(
            [sys.executable, *self.args], cwd=ROOT, env=dict(env), stdout=self._out, stderr=subprocess.STDOUT
        )
        try:
            self.match = self._wait_ready(re.compile(ready), timeout)
        except BaseException:  # a process the caller never gets must not outlive the test
            self.stop()
            raise

    def _wait_ready(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (match := pattern.search(self.output)) is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                code = self.process.returncode
                how = f"exited with code {code}" if code is not None else f"did not start within {timeout:.0f} s"
                raise RuntimeError(f"{' '.join(self.args)} {how}:\n{self.stop()[-3000:]}")
            time.sleep(0.1)
        return match

    @property
    def port(self) -> int:
        """The port of the ready line (the first group of `ready`)."""
        return int(self.match[1])

    @property
    def output(self) -> str:
        """stdout and stderr so far, interleaved as written."""
        if self._output is not None:
            return self._output
        # pread: the process shares this file's offset, and a seek would move it under its writes.
        fd = self._out.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def stop(self, grace: float = 10.0) -> str:
        """Terminate the process, kill it if it has not exited after `grace` seconds (a no-op
        once stopped); its whole output."""
        if self._output is None:
            if self.process.poll() is None:
                self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            output = self.output
            self._out.close()
            self._output = output
        return self._output

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
