"""Failed sign-ins counted per account and per client address in Redis, shared by every process.

Each counter is a fixed window (LOGIN_FAILURE_WINDOW_SECONDS) that starts with its first failure.
Past LOGIN_MAX_FAILURES_PER_ACCOUNT for a username, or LOGIN_MAX_FAILURES_PER_ADDRESS from one
address, sign-ins are refused (the right password too) until that window ends. Accounts are keyed
by a hash of the normalised username, so Redis holds no login names.
"""

from __future__ import annotations

import hashlib

import redis
from django.conf import settings

from harry_realtime import redis_conn

_client: redis.Redis | None = None


class ThrottleUnavailable(Exception):
    """Redis did not answer: sign-ins are refused rather than left unthrottled."""


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis_conn.sync_client(decode_responses=True, socket_timeout=5)
    return _client


def _key(*parts: str) -> str:
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"].get("prefix", "harry")
    return ":".join((prefix, "login_failures", *parts))


def _account_key(username: str) -> str:
    return _key("account", hashlib.sha256(username.strip().lower().encode()).hexdigest())


def _address_key(address: str) -> str:
    return _key("address", address or "unknown")


def _limits(username: str, address: str) -> list[tuple[str, int]]:
    return [
        (_account_key(username), settings.LOGIN_MAX_FAILURES_PER_ACCOUNT),
        (_address_key(address), settings.LOGIN_MAX_FAILURES_PER_ADDRESS),
    ]


def login_wait_seconds(*, username: str, address: str) -> int:
    """0 when a sign-in may be tried; else the seconds until the blocking window ends."""
    limits = _limits(username, address)
    try:
        pipe = _redis().pipeline(transaction=False)
        for key, _limit in limits:
            pipe.get(key)
            pipe.ttl(key)
        answers = pipe.execute()
    except redis.RedisError as exc:
        raise ThrottleUnavailable(str(exc)) from exc
    wait = 0
    for (_key_name, limit), count, ttl in zip(limits, answers[0::2], answers[1::2], strict=True):
        if count is not None and int(count) >= limit:
            wait = max(wait, ttl if ttl > 0 else settings.LOGIN_FAILURE_WINDOW_SECONDS)
    return wait


def login_failed(*, username: str, address: str) -> None:
    """Count one failed sign-in against the account and the address."""
    try:
        pipe = _redis().pipeline(transaction=True)
        for key, _limit in _limits(username, address):
            pipe.set(key, 0, ex=settings.LOGIN_FAILURE_WINDOW_SECONDS, nx=True)
            pipe.incr(key)
        pipe.execute()
    except redis.RedisError as exc:
        raise ThrottleUnavailable(str(exc)) from exc


def login_succeeded(*, username: str) -> None:
    """A successful sign-in clears the account's count (not the address's: one known password must
    not reset an address that is guessing others)."""
    try:
        _redis().delete(_account_key(username))
    except redis.RedisError as exc:
        raise ThrottleUnavailable(str(exc)) from exc
