"""Redis-shared presence state: track/untrack/state and the sweep of a dead process's presences."""

import asyncio
import time
import uuid

import pytest
from channels.layers import get_channel_layer

from events.messages import PRESENCE_DIFF
from events.topics import group_name
from presence import state


@pytest.fixture
def topic():
    return f"attendance:org_{uuid.uuid4()}:group_{uuid.uuid4()}"


async def test_track_untrack_and_state(topic):
    common = {"topic": topic, "user_id": "u", "organization_id": "o", "connection": "c"}
    first = await state.track(presence_key="t1", meta={"activity": "marking"}, **common)
    second = await state.track(presence_key="t1", meta={"activity": "phone"}, **common)
    third = await state.track(presence_key="t2", meta={}, **common)
    assert first["meta"] == {"activity": "marking", "user_id": "u", "phx_ref": first["ref"]}
    current = await state.state(topic)
    assert current == {"t1": {"metas": [first["meta"], second["meta"]]}, "t2": {"metas": [third["meta"]]}}

    removed = await state.untrack(topic=topic, ref=first["ref"])
    assert removed["meta"] == first["meta"]
    assert await state.untrack(topic=topic, ref=first["ref"]) is None
    assert await state.state(topic) == {"t1": {"metas": [second["meta"]]}, "t2": {"metas": [third["meta"]]}}
    for entry in (second, third):
        await state.untrack(topic=topic, ref=entry["ref"])
    assert await state.state(topic) == {}


async def test_sweep_removes_only_silent_nodes_and_once(topic, settings):
    settings.REALTIME_PRESENCE_NODE_TTL_SECONDS = 5
    dead, alive = uuid.uuid4().hex, uuid.uuid4().hex
    common = {"topic": topic, "user_id": "u", "organization_id": "o", "connection": "c"}
    gone = await state.track(presence_key="gone", meta={}, node=dead, **common)
    kept = await state.track(presence_key="kept", meta={}, node=alive, **common)
    await state.renew(alive)

    assert topic not in await state.sweep()  # the dead node is not silent long enough yet
    later = time.time() + 6
    await state.renew(alive)
    # Simulate time passing for the dead node only: the live one renews "later" too.
    await state.redis_client().zadd(state._nodes_key(), {alive: later})
    swept = await state.sweep(now=later)
    assert [e["ref"] for e in swept[topic]] == [gone["ref"]]
    assert await state.state(topic) == {"kept": {"metas": [kept["meta"]]}}
    assert topic not in await state.sweep(now=later)
    await state.untrack(topic=topic, ref=kept["ref"], node=alive)


async def test_liveness_loop_publishes_leaves_of_a_dead_node(topic, settings):
    settings.REALTIME_PRESENCE_NODE_TTL_SECONDS = 0.6
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group_name(topic), channel)
    dead = uuid.uuid4().hex
    entry = await state.track(
        presence_key="crashed", meta={"x": 1}, topic=topic, user_id="u", organization_id="o", connection="c", node=dead
    )
    state.ensure_liveness()
    message = await asyncio.wait_for(layer.receive(channel), timeout=5)
    assert message == {
        "type": PRESENCE_DIFF,
        "topic": topic,
        "joins": {},
        "leaves": {"crashed": {"metas": [entry["meta"]]}},
    }
    assert await state.state(topic) == {}
    await layer.group_discard(group_name(topic), channel)
