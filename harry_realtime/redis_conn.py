"""Redis connections from the settings: one server (`REDIS_URL`), or a primary found through
Redis Sentinel (`REDIS_SENTINELS`) so that a failover needs no restart.

With Sentinel, `REDIS_URL` still gives the database number and the password; its host is not
used. A connection that fails is dropped by redis-py and the next command asks the sentinels for
the current primary again, so every client made here follows a failover by itself.

Every client made here, and the channel layer's connections, retry a command that meets a dead
connection (`retry_options`): pooled connections outlive a Redis restart, and without a retry
the first command on each of them fails (a join, a heartbeat's slot renewal, a presence read)
although Redis is back. Only connection errors are retried, on a fresh connection after a short
wait: a timeout is not (a paused Redis would otherwise hold a request several timeouts long).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry
from redis.sentinel import Sentinel

# How long a question to one sentinel may take before the next sentinel is asked.
SENTINEL_SOCKET_TIMEOUT = 1.0
# A command that met a dead connection is sent again up to this many times, after waits
# drawn at random below a bound doubling from the first to the cap: at most 1 s in all.
COMMAND_RETRIES = 3
COMMAND_RETRY_BACKOFF_SECONDS = (0.1, 0.4)


def retry_options(*, asynchronous: bool) -> dict[str, Any]:
    """redis-py options that resend a command once its connection is found dead (module docstring)."""
    first, cap = COMMAND_RETRY_BACKOFF_SECONDS
    backoff = ExponentialWithJitterBackoff(cap=cap, base=first)
    retry_class = AsyncRetry if asynchronous else Retry
    return {"retry": retry_class(backoff, COMMAND_RETRIES, supported_errors=(RedisConnectionError,))}


def parse_sentinels(value: str) -> list[tuple[str, int]]:
    """`host:port,host:port` → [(host, port), ...]; empty → []."""
    sentinels = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        host, _, port = item.rpartition(":")
        sentinels.append((host, int(port)))
    return sentinels


def _target(url: str) -> dict[str, Any]:
    """Database number and credentials of a redis:// URL (what a Sentinel-found primary needs)."""
    parts = urlsplit(url)
    target: dict[str, Any] = {"db": int(parts.path.lstrip("/") or 0)}
    if parts.password:
        target["password"] = unquote(parts.password)
    if parts.username:
        target["username"] = unquote(parts.username)
    return target


def channel_layer_host(url: str, sentinels: list[tuple[str, int]], master: str, **options: Any) -> dict:
    """One `hosts` entry for channels_redis: the URL, or the Sentinel-managed primary."""
    options = {**retry_options(asynchronous=True), **options}
    if not sentinels:
        return {"address": url, **options}
    return {
        "master_name": master,
        "sentinels": sentinels,
        "sentinel_kwargs": {"socket_timeout": SENTINEL_SOCKET_TIMEOUT},
        **_target(url),
        **options,
    }


def celery_broker(url: str, sentinels: list[tuple[str, int]]) -> str:
    """Celery's broker URL: the Redis URL, or kombu's `sentinel://` list (master name in the options)."""
    if not sentinels:
        return url
    target = _target(url)
    auth = f":{target['password']}@" if "password" in target else ""
    return ";".join(f"sentinel://{auth}{host}:{port}/{target['db']}" for host, port in sentinels)


def sync_client(**options: Any) -> redis.Redis:
    """A blocking client of the current primary."""
    from django.conf import settings

    options = {**retry_options(asynchronous=False), **options}
    sentinels = parse_sentinels(settings.REDIS_SENTINELS)
    if not sentinels:
        return redis.Redis.from_url(settings.REDIS_URL, **options)
    sentinel = Sentinel(sentinels, sentinel_kwargs={"socket_timeout": SENTINEL_SOCKET_TIMEOUT})
    return sentinel.master_for(settings.REDIS_SENTINEL_MASTER, **_target(settings.REDIS_URL), **options)


def async_client(**options: Any) -> aioredis.Redis:
    """An asyncio client of the current primary."""
    from django.conf import settings

    options = {**retry_options(asynchronous=True), **options}
    sentinels = parse_sentinels(settings.REDIS_SENTINELS)
    if not sentinels:
        return aioredis.Redis.from_url(settings.REDIS_URL, **options)
    sentinel = AsyncSentinel(sentinels, sentinel_kwargs={"socket_timeout": SENTINEL_SOCKET_TIMEOUT})
    return sentinel.master_for(settings.REDIS_SENTINEL_MASTER, **_target(settings.REDIS_URL), **options)
