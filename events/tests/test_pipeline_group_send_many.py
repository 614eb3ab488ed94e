"""The listener's batched channel-layer send: same delivery as one `group_send` per message."""

import asyncio
import secrets

import pytest
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.conf import settings

from events.listener import group_send_many


def _layer() -> RedisChannelLayer:
    layer = get_channel_layer()
    if not isinstance(layer, RedisChannelLayer):
        pytest.fail("these tests need the Redis channel layer the listener runs with")
    return layer


async def _drain(layer, channel: str, count: int) -> list[dict]:
    async with asyncio.timeout(10):
        return [await layer.receive(channel) for _ in range(count)]


async def _empty(layer, channel: str) -> bool:
    try:
        async with asyncio.timeout(0.3):
            await layer.receive(channel)
    except TimeoutError:
        return True
    return False


async def test_every_member_of_each_group_gets_its_messages_in_order():
    layer = _layer()
    tag = secrets.token_hex(4)
    a, b = f"bulk-a-{tag}", f"bulk-b-{tag}"
    both, only_a, only_b, outsider = [await layer.new_channel() for _ in range(4)]
    for channel in (both, only_a):
        await layer.group_add(a, channel)
    for channel in (both, only_b):
        await layer.group_add(b, channel)

    sends = [(a if i % 3 else b, {"type": "test.message", "n": i}) for i in range(300)]
    await group_send_many(layer, sends)

    expected_a = [i for i in range(300) if i % 3]
    expected_b = [i for i in range(300) if not i % 3]
    assert [m["n"] for m in await _drain(layer, both, 300)] == list(range(300))
    assert [m["n"] for m in await _drain(layer, only_a, len(expected_a))] == expected_a
    assert [m["n"] for m in await _drain(layer, only_b, len(expected_b))] == expected_b
    for channel in (both, only_a, only_b, outsider):
        assert await _empty(layer, channel)


async def test_consecutive_batches_keep_their_order_and_empty_groups_are_skipped():
    layer = _layer()
    group = f"bulk-order-{secrets.token_hex(4)}"
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    await group_send_many(layer, [(f"bulk-nobody-{secrets.token_hex(4)}", {"type": "test.message", "n": -1})])
    await group_send_many(layer, [])
    for batch in range(5):
        await group_send_many(layer, [(group, {"type": "test.message", "n": batch * 10 + i}) for i in range(10)])
    assert [m["n"] for m in await _drain(layer, channel, 50)] == list(range(50))
    assert await _empty(layer, channel)


async def test_capacity_is_respected_like_group_send(caplog):
    config = {**settings.CHANNEL_LAYERS["default"]["CONFIG"], "capacity": 10}
    layer = RedisChannelLayer(**config)
    group = f"bulk-cap-{secrets.token_hex(4)}"
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    capacity = layer.get_capacity(channel)
    await group_send_many(layer, [(group, {"type": "test.message", "n": i}) for i in range(capacity + 5)])
    received = await _drain(layer, channel, capacity)
    assert [m["n"] for m in received] == list(range(capacity))
    assert await _empty(layer, channel)
    assert "5 channel-layer messages dropped" in caplog.text
