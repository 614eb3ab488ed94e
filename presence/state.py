"""WebSocket presence state shared by every server process through Redis (docs/design.md, decision 7).

Layout (keys under the channel layer prefix):
  realtime:presence:topic:<topic>   hash   phx_ref -> JSON entry {key, meta, node, user_id, ...}
  realtime:presence:node:<node>     set    "<topic>\\n<phx_ref>" of every entry that node tracks
  realtime:presence:nodes           zset   node -> last time it proved to be alive

Each server process is a node (the same id as the owner of its connection slots,
events/limits.py) that renews its liveness every few seconds. Any node that sees another one
silent for longer than REALTIME_PRESENCE_NODE_TTL_SECONDS, or whose process ran on this host and
is gone (its node heartbeat names it), claims its entries, deletes them and publishes the
`presence_diff` leaves, so a crashed process's presences vanish within about TTL plus one renewal
interval, and at the next round when it is restarted on the same host.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
import weakref
from collections import defaultdict
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from events.limits import NODE_ID, dead_nodes, redis_client
from events.messages import presence_diff_message
from events.topics import group_name
from harry_realtime.rediskeys import key

log = logging.getLogger(__name__)

_liveness_tasks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = weakref.WeakKeyDictionary()


def _topic_key(topic: str) -> str:
    return key("presence", "topic", topic)


def _node_key(node: str) -> str:
    return key("presence", "node", node)


def _nodes_key() -> str:
    return key("presence", "nodes")


def new_ref() -> str:
    return uuid.uuid4().hex[:20]


def node_ttl() -> float:
    return settings.REALTIME_PRESENCE_NODE_TTL_SECONDS


def metas(entries: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Entries grouped the way Phoenix presence sends them: {key: {metas: [meta, ...]}}."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for entry in entries:
        grouped.setdefault(entry["key"], {"metas": []})["metas"].append(entry["meta"])
    return grouped


async def track(
    *,
    topic: str,
    presence_key: str,
    meta: dict[str, Any],
    user_id: str,
    organization_id: str,
    connection: str,
    node: str = NODE_ID,
) -> dict[str, Any]:
    """Store one presence of `topic`; returns the entry. Its meta is the client's, with the
    server's `user_id` (whatever key the client tracks under, and whatever `user_id` it put in its
    meta) and the new `phx_ref`."""
    ref = new_ref()
    entry = {
        "key": presence_key,
        "meta": {**meta, "user_id": str(user_id), "phx_ref": ref},
        "ref": ref,
        "node": node,
        "user_id": user_id,
        "organization_id": organization_id,
        "connection": connection,
        "tracked_at": time.time(),
    }
    async with redis_client().pipeline(transaction=True) as pipe:
        pipe.hset(_topic_key(topic), ref, json.dumps(entry))
        pipe.sadd(_node_key(node), f"{topic}\n{ref}")
        pipe.zadd(_nodes_key(), {node: time.time()})
        await pipe.execute()
    return entry


async def restore(*, topic: str, entry: dict[str, Any]) -> None:
    """Store an entry again as it was (same ref and node): Redis came back without its data while
    its socket stayed open (events/delivery.py, realtime_regroup)."""
    async with redis_client().pipeline(transaction=True) as pipe:
        pipe.hset(_topic_key(topic), entry["ref"], json.dumps(entry))
        pipe.sadd(_node_key(entry["node"]), f"{topic}\n{entry['ref']}")
        pipe.zadd(_nodes_key(), {entry["node"]: time.time()})
        await pipe.execute()


async def untrack(*, topic: str, ref: str, node: str = NODE_ID) -> dict[str, Any] | None:
    """Remove one presence; returns the removed entry, or None if it was already gone."""
    async with redis_client().pipeline(transaction=True) as pipe:
        pipe.hget(_topic_key(topic), ref)
        pipe.hdel(_topic_key(topic), ref)
        pipe.srem(_node_key(node), f"{topic}\n{ref}")
        raw, _, _ = await pipe.execute()
    return json.loads(raw) if raw else None


async def entries(topic: str) -> list[dict[str, Any]]:
    values = await redis_client().hgetall(_topic_key(topic))
    return sorted((json.loads(v) for v in values.values()), key=lambda e: e["tracked_at"])


async def state(topic: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The `presence_state` payload of a topic."""
    return metas(await entries(topic))


async def renew(node: str = NODE_ID) -> None:
    await redis_client().zadd(_nodes_key(), {node: time.time()})


async def sweep(*, now: float | None = None) -> dict[str, list[dict[str, Any]]]:
    """Delete the presences of nodes silent for longer than the TTL; returns {topic: [entry]}."""
    client = redis_client()
    now = time.time() if now is None else now
    silent = await client.zrangebyscore(_nodes_key(), "-inf", now - node_ttl())
    others = set(await client.zrange(_nodes_key(), 0, -1)) - set(silent) - {NODE_ID}
    dead = [*silent, *sorted(await dead_nodes(others, silent_is_dead=False))]
    removed: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for node in dead:
        # One sweeper per dead node, even when every live process notices it at once.
        if not await client.set(key("presence", "sweeping", node), NODE_ID, nx=True, ex=max(1, int(node_ttl()))):
            continue
        members = await client.smembers(_node_key(node))
        for member in members:
            topic, _, ref = member.partition("\n")
            raw = await client.hget(_topic_key(topic), ref)
            if raw and await client.hdel(_topic_key(topic), ref):
                removed[topic].append(json.loads(raw))
        async with client.pipeline(transaction=True) as pipe:
            pipe.delete(_node_key(node))
            pipe.zrem(_nodes_key(), node)
            await pipe.execute()
        log.info("presence sweep removed %d presences of silent node %s", len(members), node)
    return dict(removed)


async def publish_diff(topic: str, *, joins: list[dict[str, Any]], leaves: list[dict[str, Any]]) -> None:
    """Tell every socket joined to `topic` (on any process) about presence changes."""
    message = presence_diff_message(topic=topic, joins=metas(joins), leaves=metas(leaves))
    await get_channel_layer().group_send(group_name(topic), message)


async def _liveness_loop() -> None:
    interval = max(0.2, node_ttl() / 3)
    while True:
        try:
            await renew()
            for topic, gone in (await sweep()).items():
                await publish_diff(topic, joins=[], leaves=gone)
        except asyncio.CancelledError:
            raise
        except Exception:  # a Redis hiccup must not end liveness for good
            log.exception("presence liveness round failed")
        await asyncio.sleep(interval)


def ensure_liveness() -> None:
    """Start this process's liveness/sweep loop on the running event loop (idempotent)."""
    loop = asyncio.get_running_loop()
    task = _liveness_tasks.get(loop)
    if task is None or task.done():
        _liveness_tasks[loop] = loop.create_task(_liveness_loop(), name="presence-liveness")
