"""Redis connections from the settings: one server (`REDIS_URL`), or a primary found through
Redis Sentinel (`REDIS_SENTINELS`) so that a failover needs no restart.

With Sentinel, `REDIS_URL` still gives the database number and the password; its host is not
used. A connection that fails is dropped by redis-py and the next command asks the sentinels for
the current primary again, so every client made here follows a failover by itself.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

# How long a question to one sentinel may take before the next sentinel is asked.
SENTINEL_SOCKET_TIMEOUT = 1.0


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

    sentinels = parse_sentinels(settings.REDIS_SENTINELS)
    if not sentinels:
        return redis.Redis.from_url(settings.REDIS_URL, **options)
    sentinel = Sentinel(sentinels, sentinel_kwargs={"socket_timeout": SENTINEL_SOCKET_TIMEOUT})
    return sentinel.master_for(settings.REDIS_SENTINEL_MASTER, **_target(settings.REDIS_URL), **options)


def async_client(**options: Any) -> aioredis.Redis:
    """An asyncio client of the current primary."""
    from django.conf import settings

    sentinels = parse_sentinels(settings.REDIS_SENTINELS)
    if not sentinels:
        return aioredis.Redis.from_url(settings.REDIS_URL, **options)
    sentinel = AsyncSentinel(sentinels, sentinel_kwargs={"socket_timeout": SENTINEL_SOCKET_TIMEOUT})
    return sentinel.master_for(settings.REDIS_SENTINEL_MASTER, **_target(settings.REDIS_URL), **options)
