import json

import pytest

from events.protocol import (
    MAX_PAYLOAD_DEPTH,
    VSN_1,
    VSN_2,
    Message,
    ProtocolError,
    decode_binary,
    decode_text,
    encode,
    payload_size,
    push,
    reply,
)


def binary_push(join_ref: str, ref: str, topic: str, event: str, payload: bytes, *, meta: str = "", encoding=1):
    """A kind-3 frame laid out exactly as realtime-js's serializer writes it."""
    header = bytes([3, len(join_ref), len(ref), len(topic), len(event), len(meta), encoding])
    return header + (join_ref + ref + topic + event + meta).encode("latin-1") + payload


def test_text_frames_of_both_versions_round_trip():
    message = Message(topic="realtime:t", event="phx_join", payload={"a": [1]}, ref="3", join_ref="3")
    assert json.loads(encode(message, VSN_2)) == ["3", "3", "realtime:t", "phx_join", {"a": [1]}]
    assert json.loads(encode(message, VSN_1)) == {
        "topic": "realtime:t",
        "event": "phx_join",
        "payload": {"a": [1]},
        "ref": "3",
        "join_ref": "3",
    }
    for vsn in (VSN_1, VSN_2):
        assert decode_text(encode(message, vsn), vsn) == message


def test_reply_keeps_ref_and_join_ref():
    request = Message(topic="phoenix", event="heartbeat", payload={}, ref="7", join_ref=None)
    assert reply(request, "ok") == Message("phoenix", "phx_reply", {"status": "ok", "response": {}}, "7", None)


def test_integer_refs_are_read_as_strings():
    assert decode_text('[1, 2, "t", "e", {}]', VSN_2).ref == "2"


@pytest.mark.parametrize(
    ("text", "vsn"),
    [
        ("{bad", VSN_1),
        ("[]", VSN_1),
        ('{"topic": "t"}', VSN_1),
        ('{"topic": "t", "event": "e", "ref": {}}', VSN_1),
        ('{"topic": "t"}', VSN_2),
        ('[null, null, "t"]', VSN_2),
        ('[null, null, 5, "e", {}]', VSN_2),
        ("[" * 50000, VSN_2),
    ],
)
def test_malformed_text_frames_raise_protocol_error(text, vsn):
    with pytest.raises(ProtocolError):
        decode_text(text, vsn)


def test_binary_user_broadcast_push_decodes_to_a_broadcast_message():
    frame = binary_push("1", "4", "realtime:room", "cursor", json.dumps({"x": 1, "s": "ü"}).encode())
    assert decode_binary(frame) == Message(
        topic="realtime:room",
        event="broadcast",
        payload={"type": "broadcast", "event": "cursor", "payload": {"x": 1, "s": "ü"}},
        ref="4",
        join_ref="1",
    )


def test_binary_metadata_sits_beside_the_payload():
    frame = binary_push("1", "4", "realtime:room", "e", b"{}", meta='{"private":true}')
    assert decode_binary(frame).payload == {"private": True, "type": "broadcast", "event": "e", "payload": {}}


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x03\x01",
        b"\x04" + bytes(10),
        bytes([3, 250, 0, 0, 0, 0, 1]) + b"short",
        binary_push("1", "2", "realtime:t", "e", b"\x00\x01", encoding=0),
        binary_push("1", "2", "realtime:t", "e", b"{oops"),
        binary_push("1", "2", "", "e", b"{}"),
    ],
)
def test_garbage_binary_frames_raise_protocol_error(frame):
    with pytest.raises(ProtocolError):
        decode_binary(frame)


def test_non_ascii_travels_as_utf8_and_payload_size_counts_its_bytes():
    frame = encode(push("realtime:t", "broadcast", {"text": "Salom, o‘quvchi! مرحبا"}), VSN_2)
    assert "مرحبا" in frame and "\\u" not in frame
    assert decode_text(frame, VSN_2).payload == {"text": "Salom, o‘quvchi! مرحبا"}
    assert payload_size({"t": "ع"}) == len('{"t":"ع"}'.encode())


def test_integers_beyond_64_bits_are_encoded_exactly():
    frame = encode(push("realtime:t", "broadcast", {"points": 10**30}), VSN_2)
    assert '"points":1000000000000000000000000000000' in frame


def test_payloads_nest_at_most_max_payload_depth_levels():
    """Deeper payloads parse (orjson reads 1,024 levels) but could not be sent on in a server frame."""
    deepest = "[" * MAX_PAYLOAD_DEPTH + "]" * MAX_PAYLOAD_DEPTH
    message = decode_text(f'["1", "2", "realtime:t", "broadcast", {deepest}]', VSN_2)
    assert encode(push("realtime:t", "broadcast", {"payload": message.payload}), VSN_2)  # and goes out again
    deeper = "[" + deepest + "]"
    for vsn, text in [
        (VSN_2, f'["1", "2", "realtime:t", "broadcast", {deeper}]'),
        (VSN_1, f'{{"topic": "realtime:t", "event": "broadcast", "payload": {deeper}, "ref": "2"}}'),
    ]:
        with pytest.raises(ProtocolError) as refused:
            decode_text(text, vsn)
        assert (refused.value.topic, refused.value.ref) == ("realtime:t", "2")
        assert "nested more than 250 levels" in refused.value.reason
    assert decode_binary(binary_push("1", "2", "realtime:t", "e", deepest.encode())).payload["payload"]
    with pytest.raises(ProtocolError, match="nested"):
        decode_binary(binary_push("1", "2", "realtime:t", "e", deeper.encode()))
