"""The channel layer's bulk intake: order per channel, nothing lost to cancellation or a crash."""

import asyncio
import time

import pytest
from channels.layers import get_channel_layer

from harry_realtime import redis_conn
from harry_realtime.channel_layer import RECEIVE_BATCH, BulkReceiveRedisChannelLayer


async def test_it_is_the_configured_layer():
    assert isinstance(get_channel_layer(), BulkReceiveRedisChannelLayer)


async def test_many_messages_to_several_channels_arrive_once_in_order():
    layer = get_channel_layer()
    channels = [await layer.new_channel() for _ in range(3)]
    for channel in channels:
        await layer.group_add("bulk-order", channel)
    total = RECEIVE_BATCH * 2 + 7  # more than one bulk take
    for n in range(total):
        await layer.group_send("bulk-order", {"type": "test.message", "n": n})
        await layer.send(channels[n % 3], {"type": "test.direct", "n": n})
    for index, channel in enumerate(channels):
        mine = [n for n in range(total) if n % 3 == index]
        received = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(total + len(mine))]
        group = [m["n"] for m in received if m["type"] == "test.message"]
        direct = [m["n"] for m in received if m["type"] == "test.direct"]
        assert group == list(range(total))
        assert direct == mine
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 0.2)


async def test_a_cancelled_receive_loses_nothing():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await layer.send(channel, {"type": "test.message", "n": 1})
    assert (await asyncio.wait_for(layer.receive(channel), 5))["n"] == 1


async def test_messages_left_in_flight_by_a_crash_are_received_first():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    key = layer.prefix + layer.non_local_name(channel)
    connection = layer.connection(layer.consistent_hash(key.removeprefix(layer.prefix)))
    stranded = layer.serialize({"type": "test.message", "n": 0, "__asgi_channel__": channel})
    await connection.zadd(layer._backup_channel_name(key), {stranded: 1.0})
    await layer.send(channel, {"type": "test.message", "n": 1})
    received = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(2)]
    assert [m["n"] for m in received] == [0, 1]


async def test_a_receive_cancelled_after_its_inbox_was_dropped_leaves_the_other_channels_receiving():
    """A socket's teardown drops its inbox from the shared buffer (events/consumers.py,
    _forget_inbox) while its receive still waits; cancelling that receive must neither raise
    KeyError nor leave the process's receive lock taken (every other socket would go deaf)."""
    layer = get_channel_layer()
    first, second = await layer.new_channel(), await layer.new_channel()
    reading = asyncio.ensure_future(layer.receive(first))  # takes the receive lock, waits in Redis
    await asyncio.sleep(0.1)
    waiting = asyncio.ensure_future(layer.receive(second))  # waits for the lock or its inbox
    await asyncio.sleep(0.1)
    layer.receive_buffer.pop(second, None)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    for n in range(3):
        await layer.send(first, {"type": "test.message", "n": n})
    assert (await asyncio.wait_for(reading, 5))["n"] == 0
    assert [(await asyncio.wait_for(layer.receive(first), 5))["n"] for _ in range(2)] == [1, 2]


async def test_a_receive_cancelled_just_after_redis_popped_a_message_for_another_socket_loses_nothing():
    """The socket holding the process's receive lock ends (its receive is cancelled) just as Redis
    pops a message for another socket of the process: the reply is not read yet when the cancel
    lands, and the message must still reach the other socket."""
    layer = get_channel_layer()
    ending, other = await layer.new_channel(), await layer.new_channel()
    holding = asyncio.ensure_future(layer.receive(ending))  # takes the lock, blocks in BZPOPMIN
    await asyncio.sleep(0.2)
    key = layer.prefix + layer.non_local_name(other)
    message = layer.serialize({"type": "test.message", "n": 1, "__asgi_channel__": other})
    # Sent from a blocking client, so the event loop cannot run the receive in between: Redis has
    # handed the message to the blocked pop before it answers this ZADD.
    redis_conn.sync_client().zadd(key, {message: time.time()})
    holding.cancel()  # before the receive read the pop's reply
    with pytest.raises(asyncio.CancelledError):
        await holding
    assert (await asyncio.wait_for(layer.receive(other), 10))["n"] == 1
