"""Frames of the Supabase Realtime (Phoenix channels) wire protocol, both serializer versions.

vsn 1.0.0: text frames holding a JSON object `{topic, event, payload, ref, join_ref}`.
vsn 2.0.0: text frames holding a JSON array `[join_ref, ref, topic, event, payload]`, plus binary
"user broadcast push" frames (kind 3) that realtime-js uses for every client broadcast:
byte 0 = 3, then one-byte lengths of join_ref, ref, topic, user event and metadata, then an
encoding byte (0 raw bytes, 1 JSON), then those strings, then the payload.
The server always answers in text; realtime-js accepts broadcasts as text arrays too.

JSON goes through `harry_realtime.jsonutil` (orjson): every fan-out frame is encoded once per
socket, and the standard library's encoder was a quarter of a web process's time on that path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from harry_realtime import jsonutil

VSN_1 = "1.0.0"
VSN_2 = "2.0.0"
SUPPORTED_VSNS = (VSN_1, VSN_2)

KIND_USER_BROADCAST_PUSH = 3
ENCODING_RAW = 0
ENCODING_JSON = 1
_BINARY_HEADER = 7

TOPIC_PREFIX = "realtime:"

# Payloads travel on in server frames, which put up to 4 levels of envelope around them; orjson
# encodes at most 254 levels (the standard library's fallback overflows the interpreter's stack
# near 1,000) but reads up to 1,024. A payload nested deeper than this could be read and never
# sent on, so it is refused at the door.
MAX_PAYLOAD_DEPTH = 250
_ENVELOPE_LEVELS = 254 - MAX_PAYLOAD_DEPTH


class ProtocolError(Exception):
    """A frame that cannot be understood; `topic`/`ref` are set when they could be read."""

    def __init__(self, reason: str, *, topic: str | None = None, ref: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.topic = topic
        self.ref = ref


@dataclass
class Message:
    topic: str
    event: str
    payload: Any
    ref: str | None = None
    join_ref: str | None = None


def _ref(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    raise ProtocolError("ref must be a string")


def _nested_too_deep(value: Any) -> bool:
    """Whether `value` nests more than MAX_PAYLOAD_DEPTH levels (orjson finds out at C speed)."""
    if not isinstance(value, dict | list):
        return False
    for _ in range(_ENVELOPE_LEVELS):
        value = [value]
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return True
    return False


def _message(topic: Any, event: Any, payload: Any, ref: Any, join_ref: Any) -> Message:
    if not isinstance(topic, str) or not topic:
        raise ProtocolError("topic must be a non-empty string", ref=ref if isinstance(ref, str) else None)
    if not isinstance(event, str) or not event:
        raise ProtocolError("event must be a non-empty string", topic=topic, ref=ref if isinstance(ref, str) else None)
    try:
        message = Message(topic=topic, event=event, payload=payload, ref=_ref(ref), join_ref=_ref(join_ref))
    except ProtocolError as exc:
        raise ProtocolError(exc.reason, topic=topic) from None
    if _nested_too_deep(payload):
        raise ProtocolError(f"payload nested more than {MAX_PAYLOAD_DEPTH} levels", topic=topic, ref=message.ref)
    return message


def decode_text(text: str, vsn: str) -> Message:
    try:
        data = jsonutil.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("malformed JSON") from None
    if vsn == VSN_2:
        if not isinstance(data, list) or len(data) != 5:
            raise ProtocolError("expected a JSON array [join_ref, ref, topic, event, payload]")
        join_ref, ref, topic, event, payload = data
    else:
        if not isinstance(data, dict):
            raise ProtocolError("expected a JSON object {topic, event, payload, ref, join_ref}")
        topic, event, payload = data.get("topic"), data.get("event"), data.get("payload")
        ref, join_ref = data.get("ref"), data.get("join_ref")
    return _message(topic, event, payload, ref, join_ref)


def decode_binary(data: bytes) -> Message:
    """A kind-3 user broadcast push, returned as the equivalent `broadcast` text message."""
    if len(data) < _BINARY_HEADER:
        raise ProtocolError("binary frame too short")
    kind = data[0]
    if kind != KIND_USER_BROADCAST_PUSH:
        raise ProtocolError(f"unsupported binary frame kind {kind}")
    sizes = data[1:6]
    encoding = data[6]
    offset = _BINARY_HEADER
    fields = []
    for size in sizes:
        if offset + size > len(data):
            raise ProtocolError("binary frame shorter than its header says")
        # realtime-js writes these with charCodeAt, one byte per character.
        fields.append(data[offset : offset + size].decode("latin-1"))
        offset += size
    join_ref, ref, topic, user_event, metadata = fields
    if not topic:
        raise ProtocolError("binary frame without a topic", ref=ref or None)
    if encoding != ENCODING_JSON:
        raise ProtocolError("only JSON-encoded broadcast payloads are supported", topic=topic, ref=ref or None)
    try:
        payload = jsonutil.loads(data[offset:]) if offset < len(data) else {}
        meta = jsonutil.loads(metadata) if metadata else None
    except (ValueError, RecursionError):
        raise ProtocolError("malformed JSON in binary frame", topic=topic, ref=ref or None) from None
    if _nested_too_deep(payload):  # (metadata has at most 255 bytes: never this deep)
        raise ProtocolError(f"payload nested more than {MAX_PAYLOAD_DEPTH} levels", topic=topic, ref=ref or None)
    body: dict[str, Any] = {"type": "broadcast", "event": user_event, "payload": payload}
    if isinstance(meta, dict):
        # Client metadata sits beside the payload, exactly as realtime-js picks it.
        body = {**meta, **body}
    return Message(topic=topic, event="broadcast", payload=body, ref=ref or None, join_ref=join_ref or None)


def _dumps(value: Any) -> str:
    return jsonutil.dumps(value).decode()


def encode(message: Message, vsn: str) -> str:
    if vsn == VSN_2:
        return _dumps([message.join_ref, message.ref, message.topic, message.event, message.payload])
    return _dumps(
        {
            "topic": message.topic,
            "event": message.event,
            "payload": message.payload,
            "ref": message.ref,
            "join_ref": message.join_ref,
        }
    )


def reply(request: Message, status: str, response: dict | None = None) -> Message:
    return Message(
        topic=request.topic,
        event="phx_reply",
        payload={"status": status, "response": response if response is not None else {}},
        ref=request.ref,
        join_ref=request.join_ref,
    )


def push(topic: str, event: str, payload: Any, *, join_ref: str | None = None) -> Message:
    """A server push that is not a reply (ref null; join_ref only for phx_close/phx_error)."""
    return Message(topic=topic, event=event, payload=payload, ref=None, join_ref=join_ref)


def payload_size(value: Any) -> int:
    return len(jsonutil.dumps(value))
