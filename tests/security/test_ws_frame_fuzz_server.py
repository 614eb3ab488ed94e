"""Issue 13: the WebSocket frame fuzz against the real uvicorn server (as the Procfile runs it),
for what Channels' communicator cannot express: text frames that are not UTF-8, frames past the
gateway's limit and past the server's own, handshakes with garbage in the URL. No 5xx, no crash
(the process serves on, its log has no traceback), each socket closed with the documented code,
and the user's connection slot freed whatever way the socket ended.
"""

from __future__ import annotations

import base64
import json
import os
import socket as tcp
import time
import urllib.request

import pytest
import redis
from django.conf import settings
from django.db import connections
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from events.topics import notifications_topic
from harry_realtime.rediskeys import key
from harry_realtime.testing import ServerProcess, socket_topic, token

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner"])

PORT = 18610  # this suite's port (helpers running tests side by side each have their own range)
GATEWAY_LIMIT = 64 * 1024  # REALTIME_MAX_FRAME_BYTES of the server below
UVICORN_LIMIT = 16 * 1024 * 1024  # uvicorn's --ws-max-size default, which the Procfile keeps


@pytest.fixture
def server(tmp_path):
    db = connections["default"].settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CHANNEL_LAYER_PREFIX": settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
        "REALTIME_MAX_FRAME_BYTES": str(GATEWAY_LIMIT),
        "HARRY_INSECURE_DEV_KEYS": "1",
        "LOG_FORMAT": "plain",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "uvicorn.log"
    args = ["-m", "uvicorn", "--host", "127.0.0.1", "--port", str(PORT), "--ws", "websockets-sansio"]
    with ServerProcess([*args, "--lifespan", "off", "harry_realtime.asgi:application"], env, log=log) as server:
        yield server.process, log


def url(query: str) -> str:
    return f"ws://127.0.0.1:{PORT}/realtime/v1/websocket?{query}"


def frame(join_ref, ref, topic, event, payload) -> str:
    return json.dumps([join_ref, ref, topic, event, payload])


def recv_until(socket, ref: str) -> list:
    """Messages up to and including the reply with this ref."""
    got = []
    while True:
        message = json.loads(socket.recv(timeout=10))
        got.append(message)
        if message[1] == ref and message[3] == "phx_reply":
            return got


def joined_socket(user, topic: str):
    """An open socket joined to `topic` (the caller ends it, or the server does)."""
    socket = connect(url("vsn=2.0.0&apikey=anon"), compression=None, max_size=None, open_timeout=10, legacy=True)
    socket.send(frame("1", "1", topic, "phx_join", {"config": {}, "access_token": token(user)}))
    reply = recv_until(socket, "1")[-1]
    assert reply[4]["status"] == "ok", reply
    return socket


def closed_with(socket, send) -> int:
    """Send something the server must refuse; the close code it answered with."""
    try:
        send()
        while True:
            socket.recv(timeout=10)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the server never sent a close frame"
        return closed.rcvd.code
    raise AssertionError("unreachable")


class RawSocket:
    """A WebSocket client on a bare TCP socket, for frames no client library sends: a header
    announcing more than the server takes. Frames go out masked with a zero key (RFC 6455 allows
    any key; the payload then needs no XOR)."""

    def __init__(self) -> None:
        self.sock = tcp.create_connection(("127.0.0.1", PORT), timeout=10)
        nonce = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /realtime/v1/websocket?vsn=2.0.0&apikey=anon HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(4096)
        head, _, self.buffer = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def send_header(self, *, opcode: int, length: int) -> None:
        if length < 126:
            size = bytes([0x80 | length])
        elif length < 2**16:
            size = bytes([0x80 | 126]) + length.to_bytes(2, "big")
        else:
            size = bytes([0x80 | 127]) + length.to_bytes(8, "big")
        self.sock.sendall(bytes([0x80 | opcode]) + size + b"\0\0\0\0")

    def send_text(self, text: str) -> None:
        data = text.encode()
        self.send_header(opcode=0x1, length=len(data))
        self.sock.sendall(data)

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection without a close frame")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def frame(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(self._read(2), "big")
        elif length == 127:
            length = int.from_bytes(self._read(8), "big")
        return first & 0x0F, self._read(length)

    def until_reply(self, ref: str) -> list:
        while True:
            opcode, data = self.frame()
            message = json.loads(data) if opcode == 0x1 else None
            if message and message[1] == ref and message[3] == "phx_reply":
                return message

    def close_code(self) -> int:
        while True:
            opcode, data = self.frame()
            if opcode == 0x8:
                return int.from_bytes(data[:2], "big")


def slots_of(user) -> int:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return client.zcard(key("conn", "user", str(user.pk)))
    finally:
        client.close()


def released(user, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while slots_of(user) and time.monotonic() < deadline:
        time.sleep(0.1)
    return slots_of(user) == 0


def healthy() -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=10) as response:
        return response.status


INVALID_UTF8 = {
    "a lone 0xff": b'["1","2","phoenix","heartbeat",{}]\xff',
    "an overlong NUL": b'["1","2","phoenix","heartbeat",{"a":"\xc0\x80"}]',
    "a CESU-8 lone surrogate": b'["1","2","phoenix","heartbeat",{"a":"\xed\xa0\x80"}]',
    "a truncated sequence": b'["1","2","phoenix","heartbeat",{"a":"\xe2\x82"}]',
}


def test_the_real_server_survives_what_the_communicator_cannot_send(server, schools):
    process, log = server
    user, topic = schools.a.teacher_user, socket_topic(schools.a)

    # Text frames that are not UTF-8: the WebSocket layer closes 1007 before the app sees them.
    for label, data in INVALID_UTF8.items():
        socket = joined_socket(user, topic)
        assert slots_of(user) == 1
        assert closed_with(socket, lambda s=socket, d=data: s.send(d, text=True)) == 1007, label
        assert released(user), label

    # Past the gateway's limit (REALTIME_MAX_FRAME_BYTES): the app closes 1009 (docs/protocol.md).
    socket = joined_socket(user, topic)
    at_limit = frame(None, "p", "phoenix", "heartbeat", {"pad": ""})
    at_limit = at_limit.replace('""', '"' + "x" * (GATEWAY_LIMIT - len(at_limit)) + '"')
    socket.send(at_limit)
    assert recv_until(socket, "p")[-1][4]["status"] == "ok"
    assert closed_with(socket, lambda: socket.send("x" * (GATEWAY_LIMIT + 1))) == 1009
    assert released(user)
    socket = joined_socket(user, topic)
    assert closed_with(socket, lambda: socket.send(b"\x03" * (GATEWAY_LIMIT + 1))) == 1009
    assert released(user)

    # Past uvicorn's own message size: uvicorn closes 1009 on the frame's header, before the
    # payload (a client library would still be sending it and see the connection reset).
    raw = RawSocket()
    raw.send_text(frame("1", "1", topic, "phx_join", {"config": {}, "access_token": token(user)}))
    assert raw.until_reply("1")[4]["status"] == "ok"
    assert slots_of(user) == 1
    raw.send_header(opcode=0x1, length=UVICORN_LIMIT + 1)
    raw.sock.sendall(b"y" * 4096)
    assert raw.close_code() == 1009
    raw.sock.close()
    assert released(user)

    # The same malformed frames the communicator corpus sends get the same protocol errors here.
    socket = joined_socket(user, topic)
    for n, bad in enumerate(
        ["{not json", "[" * 60_000, '["\\ud800"]', json.dumps({"topic": "phoenix"}), "[]", b"\x09garbage"]
    ):
        socket.send(bad)
        socket.send(frame(None, f"fence-{n}", "phoenix", "heartbeat", {}))
        replies = [m for m in recv_until(socket, f"fence-{n}")[:-1] if m[3] == "phx_reply"]
        assert len(replies) == 1 and replies[0][2] == "phoenix", (bad[:20], replies)
        assert replies[0][4]["response"]["reason"].startswith("MalformedMessage"), replies
    socket.close()
    assert released(user)

    # Handshakes with garbage in the URL: refused or served, never a 500.
    for query in ["vsn=9.9.9&apikey=x", "vsn=%ff%fe&apikey=%00", "vsn=2.0.0&apikey=%ed%a0%80"]:
        try:
            with connect(url(query), open_timeout=10) as socket:
                socket.send(frame(None, "hb", "phoenix", "heartbeat", {}))
                assert json.loads(socket.recv(timeout=10))[4]["status"] == "ok"
        except InvalidStatus as refused:
            assert refused.response.status_code == 403, query
    with connect(url("vsn=2.0.0&apikey=anon&device_id=%00&platform=%00&connection_id=%00"), open_timeout=10) as odd:
        role_all = f"realtime:{notifications_topic(user.organization_id, 'all')}"
        odd.send(frame("1", "1", role_all, "phx_join", {"access_token": token(user)}))
        assert recv_until(odd, "1")[-1][4]["status"] == "ok"
    assert released(user)

    # The process serves on, and nothing above reached its log as an error: uvicorn's own line
    # about the invalid UTF-8 is a warning without its traceback (harry_realtime/logs.py).
    assert healthy() == 200
    assert process.poll() is None
    text = log.read_text()
    for needle in ("Traceback", "ERROR", "Exception in ASGI application"):
        assert needle not in text, text[-3000:]
    assert text.count("Invalid UTF-8 sequence received from client.") == len(INVALID_UTF8)
