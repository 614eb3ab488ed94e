"""A raw client of the real ASGI application (harry_realtime/asgi.py) for the WebSocket frame fuzz
(tests/security/test_ws_frame_fuzz.py): it sends any frame at all, fences each one with a
heartbeat, and checks what the server then holds for the socket against what the client was told.
"""

from __future__ import annotations

import gc
import json
import re
from dataclasses import dataclass, field
from typing import Any

from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from events import limits
from events.consumers import RealtimeSocket
from events.protocol import VSN_2, Message, decode_text
from events.topics import group_name
from harry_realtime.rediskeys import key
from presence import state as presence_state

# What the server may push besides replies; anything else from it is a finding.
SERVER_EVENTS = {"phx_reply", "phx_close", "phx_error", "presence_state", "presence_diff", "broadcast", "system"}
_GROUP_NAME = re.compile(r"^[a-zA-Z\d\-_.]{1,99}$")


def product_application():
    """The ASGI application uvicorn serves. Importing it settles the start-up heap (gc.freeze and
    the process's GC thresholds, harry_realtime/heap.py); the test process keeps its own."""
    thresholds = gc.get_threshold()
    from harry_realtime.asgi import application

    gc.unfreeze()
    gc.set_threshold(*thresholds)
    return application


class ServerRegistry:
    """Records each RealtimeSocket the application creates, so a test can read the server side of
    the socket it drives (the joined channels, the connection slot)."""

    def __init__(self, monkeypatch) -> None:
        self.created: list[RealtimeSocket] = []
        original = RealtimeSocket.__init__
        created = self.created

        def recording_init(consumer, *args, **kwargs):
            original(consumer, *args, **kwargs)
            created.append(consumer)

        monkeypatch.setattr(RealtimeSocket, "__init__", recording_init)


@dataclass
class Closed:
    code: int | None
    before: list[Message]


def internal_error(message: Message) -> str | None:
    """The text of a 500-like answer (the consumer's last-resort catch), else None."""
    payload = message.payload if isinstance(message.payload, dict) else {}
    response = payload.get("response") if isinstance(payload.get("response"), dict) else {}
    for text in (response.get("reason"), response.get("error"), payload.get("message")):
        if isinstance(text, str) and ("InternalError" in text or "Traceback" in text):
            return text
    return None


def findings(answer: list[Message]) -> list[str]:
    """What in a server's answer to one frame is wrong whatever the frame was: a 500-like reply,
    an event the server never sends, more than one reply."""
    found = [f"internal error: {m}" for m in answer if internal_error(m)]
    found += [f"unexpected event: {m}" for m in answer if m.event not in SERVER_EVENTS]
    if len([m for m in answer if m.event == "phx_reply"]) > 1:
        found.append(f"more than one reply: {answer}")
    return found


@dataclass
class Probe:
    application: Any
    registry: ServerRegistry
    vsn: str
    apikey: str = "anon"
    fences: int = 0
    # The channels the client was told it joined (join replies, phx_close), by topic.
    client_joined: set[str] = field(default_factory=set)
    # Every topic a frame named: their groups and presences must not keep this socket.
    topics_seen: set[str] = field(default_factory=set)
    server: RealtimeSocket | None = None

    def __post_init__(self) -> None:
        self.comm = WebsocketCommunicator(
            self.application, f"/realtime/v1/websocket?apikey={self.apikey}&vsn={self.vsn}"
        )

    async def connect(self) -> None:
        before = len(self.registry.created)
        connected, _ = await self.comm.connect(timeout=5)
        assert connected
        assert len(self.registry.created) == before + 1
        self.server = self.registry.created[before]

    def envelope(self, join_ref: Any, ref: Any, topic: Any, event: Any, payload: Any) -> str:
        if self.vsn == VSN_2:
            return json.dumps([join_ref, ref, topic, event, payload])
        return json.dumps({"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref})

    async def send_raw(self, *, text: str | None = None, data: bytes | None = None) -> None:
        """Any frame, even the empty one (WebsocketCommunicator.send_to refuses empty frames)."""
        frame = (
            {"type": "websocket.receive", "text": text}
            if text is not None
            else {"type": "websocket.receive", "bytes": data}
        )
        await self.comm.send_input(frame)

    async def exchange(
        self, *, text: str | None = None, data: bytes | None = None, timeout: float = 10
    ) -> list[Message] | Closed:
        """Send one frame, then a heartbeat: what the server sent before the heartbeat's reply is
        its whole answer to the frame (a socket handles its frames one at a time). A crash of the
        consumer raises here (the communicator re-raises the application's exception)."""
        if text is not None and isinstance(text, str):
            self._note_topics(text)
        await self.send_raw(text=text, data=data)
        self.fences += 1
        fence = f"fence\u2063{self.fences}"
        await self.send_raw(text=self.envelope(None, fence, "phoenix", "heartbeat", {}))
        answer: list[Message] = []
        while True:
            output = await self.comm.receive_output(timeout)
            if output["type"] == "websocket.close":
                return Closed(output.get("code"), answer)
            assert output["type"] == "websocket.send" and isinstance(output.get("text"), str), output
            message = decode_text(output["text"], self.vsn)
            if message.topic == "phoenix" and message.ref == fence:
                assert message.payload == {"status": "ok", "response": {}}, message
                return answer
            self._observe(message)
            answer.append(message)

    def _note_topics(self, text: str) -> None:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return
        topic = (
            data.get("topic")
            if isinstance(data, dict)
            else data[2]
            if isinstance(data, list) and len(data) > 2
            else None
        )
        if isinstance(topic, str):
            self.topics_seen.add(topic)

    def note_topic(self, topic: str) -> None:
        self.topics_seen.add(topic)

    def _observe(self, message: Message) -> None:
        payload = message.payload if isinstance(message.payload, dict) else {}
        if message.event == "phx_close":
            self.client_joined.discard(message.topic)
        elif message.event == "phx_reply" and payload.get("status") == "ok":
            response = payload.get("response")
            if isinstance(response, dict) and "postgres_changes" in response:  # only a join's reply has it
                self.client_joined.add(message.topic)

    async def heartbeat_ok(self) -> None:
        answer = await self.exchange(text=self.envelope(None, "hb", "phoenix", "heartbeat", {}))
        assert not isinstance(answer, Closed)
        assert [m for m in answer if m.event == "phx_reply" and m.ref == "hb"] == [
            Message(topic="phoenix", event="phx_reply", payload={"status": "ok", "response": {}}, ref="hb")
        ]

    async def join(self, topic: str, access_token: str, config: dict | None = None, *, ref: str = "j") -> Message:
        self.note_topic(topic)
        payload = {"config": config if config is not None else {"presence": {"key": ""}}, "access_token": access_token}
        answer = await self.exchange(text=self.envelope(ref, ref, topic, "phx_join", payload))
        assert not isinstance(answer, Closed), answer
        replies = [m for m in answer if m.event == "phx_reply" and m.ref == ref]
        assert len(replies) == 1, answer
        return replies[0]

    async def close(self) -> None:
        await self.comm.disconnect()


def _group_of(topic: str) -> str | None:
    """The channel-layer group a join of `topic` would use (only `realtime:` topics have one)."""
    sub_topic = topic.removeprefix("realtime:")
    return group_name(sub_topic) if sub_topic and sub_topic != topic else None


async def _in_group(topic: str, channel: str) -> bool:
    group = _group_of(topic)
    if group is None or not _GROUP_NAME.match(group):
        return False  # never a group: channels refuses such names before any Redis call
    layer = get_channel_layer()
    connection = layer.connection(layer.consistent_hash(group))
    return await connection.zscore(layer._group_key(group), channel) is not None


async def _presences_of(topic: str, channel: str) -> set[str]:
    sub_topic = topic.removeprefix("realtime:")
    if not sub_topic or sub_topic == topic:
        return set()
    return {e["ref"] for e in await presence_state.entries(sub_topic) if e.get("connection") == channel}


async def _slot_members(user) -> list[str]:
    """The connections holding a slot of the user's count (a member ends with its connection id)."""
    members = await limits.redis_client().zrange(key("conn", "user", str(user.pk)), 0, -1)
    return [member.rsplit("|", 1)[-1] for member in members]


async def assert_consistent(probe: Probe, user) -> None:
    """The server's state of the socket is what its answers told the client, and nothing more:
    joined channels, their channel-layer groups, tracked presences, the user's connection slot."""
    server = probe.server
    await probe.heartbeat_ok()
    joined = set(server.channels_joined)
    assert joined == probe.client_joined, (joined, probe.client_joined)
    assert len(joined) <= limits.max_channels()
    groups = {channel.group for channel in server.channels_joined.values()}
    for topic in probe.topics_seen | joined:
        assert await _in_group(topic, server.channel_name) == (_group_of(topic) in groups), topic
        channel = server.channels_joined.get(topic)
        tracked = {channel.presence_entry["ref"]} if channel and channel.presence_entry else set()
        assert await _presences_of(topic, server.channel_name) == tracked, topic
    for topic, channel in server.channels_joined.items():
        assert channel.topic == topic and channel.group == group_name(channel.sub_topic)
    members = await _slot_members(user)
    if server.slot is None:
        assert not joined
        assert server.channel_name not in members
    else:
        assert server.slot.user_id == str(user.pk)
        assert members.count(server.channel_name) == 1


async def assert_released(probe: Probe, user) -> None:
    """After the socket ended (however it ended): no slot, no group membership, no presence."""
    server = probe.server
    assert server.channel_name not in await _slot_members(user)
    for topic in probe.topics_seen | probe.client_joined:
        assert not await _in_group(topic, server.channel_name), topic
        assert await _presences_of(topic, server.channel_name) == set(), topic
    assert not server.channels_joined
