"""The gateway's limits (spec: 10 channels per connection, 5 connections per user, 200 per
organization, 64 KB per message, 100 messages per second) and the Redis they are shared through.

Connection counts live in Redis sorted sets so every server process sees the same numbers. Each
member is one connection scored by the time its lease ends; heartbeats renew the lease, so the
slots of a server process that died without cleaning up lapse by themselves.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass

import redis.asyncio as aioredis
from django.conf import settings

from harry_realtime import redis_conn
from harry_realtime.errors import TooMany
from harry_realtime.rediskeys import key

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


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
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[6])))
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[6])))
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
    """One socket's place in its user's and organization's connection counts."""

    connection_id: str
    user_id: str
    organization_id: str

    @property
    def keys(self) -> list[str]:
        return [key("conn", "user", self.user_id), key("conn", "org", self.organization_id)]

    async def acquire(self, *, lease: float | None = None) -> None:
        lease = lease or settings.REALTIME_CONNECTION_LEASE_SECONDS
        now = time.time()
        result = await redis_client().eval(
            _ACQUIRE,
            2,
            *self.keys,
            now,
            now + lease,
            self.connection_id,
            settings.REALTIME_MAX_CONNECTIONS_PER_USER,
            settings.REALTIME_MAX_CONNECTIONS_PER_ORG,
            lease,
        )
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
        """`lease`: how long the slot lasts without the next renewal (a socket's profile sets it)."""
        expires = time.time() + (lease or settings.REALTIME_CONNECTION_LEASE_SECONDS)
        async with redis_client().pipeline(transaction=False) as pipe:
            for k in self.keys:
                pipe.zadd(k, {self.connection_id: expires}, xx=True)
            await pipe.execute()

    async def release(self) -> None:
        async with redis_client().pipeline(transaction=False) as pipe:
            for k in self.keys:
                pipe.zrem(k, self.connection_id)
            await pipe.execute()
