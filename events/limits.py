"""The gateway's limits (spec: 10 channels per connection, 5 connections per user, 200 per
organization, 64 KB per message, 100 messages per second) and the Redis they are shared through.

Connection counts live in Redis sorted sets so every server process sees the same numbers. Each
member is one connection, `<node>|<user>|<organization>|<connection id>`, scored by the time its lease ends; heartbeats
renew the lease, and a closed socket releases its slot (events/consumers.py, `end`).

Slots belong to the server process (the node) that holds the socket. Each node proves it is alive
with a heartbeat key (`realtime:node:<node>`, REALTIME_NODE_TTL_SECONDS, renewed every third of
it) naming its host and process id. When a user's or organization's count is full, the slots of
dead nodes are reclaimed before the connection is refused: a node is dead when its heartbeat key
is gone (a process that died on another host, within the TTL) or when it ran on this host (same
host name and PID namespace) and its process no longer exists (a restarted or crashed process
here: at once). So the users of a crashed web process are never refused for a lease's length;
the lease stays only as the last resort for a node that is alive but forgot a socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
import time
import uuid
import weakref
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from django.conf import settings

from harry_realtime import redis_conn
from harry_realtime.errors import TooMany
from harry_realtime.rediskeys import key

log = logging.getLogger(__name__)

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()
_heartbeats: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = weakref.WeakKeyDictionary()

# This server process as the owner of connection slots (and of presences: presence/state.py).
NODE_ID = uuid.uuid4().hex


def redis_client() -> aioredis.Redis:
    """One Redis client per event loop (tests run a loop per test; servers run one)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        # socket_timeout None: redis-py 8 otherwise drops idle connections after a few seconds.
        client = redis_conn.async_client(socket_timeout=None, decode_responses=True)
        _clients[loop] = client
    return client


def max_channels() -> int:
    return settings.REALTIME_MAX_CHANNELS_PER_CONNECTION


def max_payload_bytes() -> int:
    return settings.REALTIME_MAX_PAYLOAD_BYTES


def max_frame_bytes() -> int:
    return settings.REALTIME_MAX_FRAME_BYTES


class RateLimiter:
    """Token bucket: `rate` messages per second, bursts up to `rate`."""

    def __init__(self, rate: int):
        self.rate = rate
        self.tokens = float(rate)
        self.updated = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def message_rate_limiter() -> RateLimiter:
    return RateLimiter(settings.REALTIME_MAX_MESSAGES_PER_SECOND)


# -- nodes ------------------------------------------------------------------------------------


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


# Where a node's process id means something: the host and its PID namespace (containers that
# share a host name, e.g. with host networking, have their own).
HOST = f"{socket.gethostname()}/{_pid_namespace()}"


def node_ttl() -> float:
    return settings.REALTIME_NODE_TTL_SECONDS


def _node_key(node: str) -> str:
    return key("node", node)


async def node_beat(node: str = NODE_ID) -> None:
    """This node is alive for another REALTIME_NODE_TTL_SECONDS."""
    value = json.dumps({"host": HOST, "pid": os.getpid()})
    await redis_client().set(_node_key(node), value, px=max(1, int(node_ttl() * 1000)))


async def _heartbeat_loop() -> None:
    while True:
        await asyncio.sleep(max(0.1, node_ttl() / 3))
        try:
            await node_beat()
        except asyncio.CancelledError:
            raise
        except Exception:  # Redis away: the next round tries again
            log.warning("node heartbeat failed", exc_info=True)


async def node_alive() -> None:
    """Make this node's heartbeat current and keep it so (idempotent per event loop)."""
    loop = asyncio.get_running_loop()
    task = _heartbeats.get(loop)
    if task is None or task.done():
        await node_beat()
        _heartbeats[loop] = loop.create_task(_heartbeat_loop(), name="realtime-node-heartbeat")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


async def dead_nodes(nodes: set[str], *, silent_is_dead: bool = True) -> set[str]:
    """Which of these nodes are dead: a process of this host that is gone, or (unless
    `silent_is_dead` is false) one without a current heartbeat."""
    if not nodes:
        return set()
    ordered = sorted(nodes)
    values = await redis_client().mget([_node_key(n) for n in ordered])
    dead = set()
    for node, value in zip(ordered, values, strict=True):
        if value is None:
            if silent_is_dead:
                dead.add(node)
            continue
        beat = json.loads(value)
        if beat.get("host") == HOST and not _process_exists(int(beat.get("pid", 0))):
            dead.add(node)
    return dead


def member_node(member: str) -> str:
    return member.partition("|")[0]


# -- connection slots -------------------------------------------------------------------------

# How often a join that found a count full tries again while it waits (REALTIME_SLOT_WAIT_SECONDS).
SLOT_RETRY_SECONDS = 0.1
# Heartbeats are exempt from the message rate limit; a client sending them back to back renews
# its slot (a Redis round trip) at most this often. Leases last 90 s and more.
SLOT_RENEW_MIN_SECONDS = 5.0

# Drop lapsed leases, then add this connection to both sets only if both have room.
_ACQUIRE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  return 0
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 1 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return 2 end
local ttl = math.ceil(tonumber(ARGV[6]))
for _, k in ipairs(KEYS) do
  redis.call('ZADD', k, ARGV[2], ARGV[3])
  if redis.call('TTL', k) < ttl then redis.call('EXPIRE', k, ttl) end
end
return 0
"""

# Push a slot's lease, and each count's expiry when it would end sooner (EXPIRE ... GT is Redis 7
# only; the embedded Redis of `make run` is 6.2). A slot that is missing is added back: the socket
# is alive, and Redis came back empty or a node was taken for dead while it was not.
_RENEW = """
local ttl = tonumber(ARGV[3])
for _, k in ipairs(KEYS) do
  redis.call('ZADD', k, ARGV[2], ARGV[1])
  if redis.call('TTL', k) < ttl then redis.call('EXPIRE', k, ttl) end
end
return 0
"""


class ConnectionLimitReached(TooMany):
    """Over the user's or organization's connections; `reason` is the join's protocol error reply."""

    def __init__(self, reason: str):
        super().__init__("connection_limit_reached", reason)

    @property
    def reason(self) -> str:
        return self.message


@dataclass
class ConnectionSlot:
    """One socket's place in its user's and organization's connection counts, owned by the node
    (server process) that holds the socket."""

    connection_id: str
    user_id: str
    organization_id: str
    node: str = field(default=NODE_ID)

    @property
    def keys(self) -> list[str]:
        return [key("conn", "user", self.user_id), key("conn", "org", self.organization_id)]

    @property
    def member(self) -> str:
        return "|".join((self.node, str(self.user_id), str(self.organization_id), self.connection_id))

    async def _try(self, lease: float) -> int:
        now = time.time()
        return await redis_client().eval(
            _ACQUIRE,
            2,
            *self.keys,
            now,
            now + lease,
            self.member,
            settings.REALTIME_MAX_CONNECTIONS_PER_USER,
            settings.REALTIME_MAX_CONNECTIONS_PER_ORG,
            lease,
        )

    async def acquire(self, *, lease: float | None = None) -> None:
        lease = lease or settings.REALTIME_CONNECTION_LEASE_SECONDS
        if self.node == NODE_ID:
            await node_alive()
        result = await self._try(lease)
        if result and await reclaim_dead(self.keys[result - 1]):
            result = await self._try(lease)
        # A client that reconnects at once may find its previous sockets still counted: the server
        # notices a peer gone only at its next send or when the socket's current handler (a long
        # replay) yields. Their teardown frees the slots within moments; wait for that, not refuse.
        deadline = time.monotonic() + settings.REALTIME_SLOT_WAIT_SECONDS
        while result and time.monotonic() < deadline:
            await asyncio.sleep(SLOT_RETRY_SECONDS)
            result = await self._try(lease)
        if result == 1:
            raise ConnectionLimitReached(
                f"ConnectionLimitReached: at most {settings.REALTIME_MAX_CONNECTIONS_PER_USER} connections per user"
            )
        if result == 2:
            raise ConnectionLimitReached(
                f"ConnectionLimitReached: at most {settings.REALTIME_MAX_CONNECTIONS_PER_ORG} "
                "connections per organization"
            )

    async def renew(self, *, lease: float | None = None) -> None:
        """`lease`: how long the slot lasts without the next renewal (a socket's profile sets it).
        Only a live socket renews (never after its teardown released the slot)."""
        lease = lease or settings.REALTIME_CONNECTION_LEASE_SECONDS
        await redis_client().eval(_RENEW, 2, *self.keys, self.member, time.time() + lease, math.ceil(lease) + 1)

    async def release(self) -> None:
        async with redis_client().pipeline(transaction=False) as pipe:
            for k in self.keys:
                pipe.zrem(k, self.member)
            await pipe.execute()


async def reclaim_dead(count_key: str) -> int:
    """Remove the slots of dead nodes from a full count, and from the other count each is in;
    how many were removed."""
    client = redis_client()
    members = await client.zrange(count_key, 0, -1)
    dead = await dead_nodes({member_node(m) for m in members})
    doomed = [m for m in members if member_node(m) in dead]
    if not doomed:
        return 0
    async with client.pipeline(transaction=False) as pipe:
        for member in doomed:
            _, user_id, organization_id, _ = member.split("|", 3)
            pipe.zrem(key("conn", "user", user_id), member)
            pipe.zrem(key("conn", "org", organization_id), member)
        await pipe.execute()
    log.info("reclaimed %d connection slots of %d dead server processes", len(doomed), len(dead))
    return len(doomed)
