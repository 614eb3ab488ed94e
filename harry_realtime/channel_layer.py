"""channels_redis with bulk intake for this process's sockets.

`RedisChannelLayer` takes the messages for a server process's sockets (its "specific!" channel)
one at a time: a clean-up script, BZPOPMIN, a ZADD to the in-flight backup and a ZPOPMIN from
it, four Redis round trips per message, one after another. Under database load those round
trips, not the CPU, bounded a web process's intake: the pipeline benchmark showed thousands of
messages waiting in Redis while the server sat idle. Here one script moves up to
`RECEIVE_BATCH` waiting messages into the backup and returns them; the first goes back to the caller, the rest into the
sockets' buffers right after it, and the backup is cleared by a detached task, as the base class
does for its single message. A receive cancelled before the hand-over leaves the messages in
the backup, which the next receive puts back first (the base class's guarantee).

A lost Redis connection (a restart, a Sentinel failover) does not end the receive: it waits and
asks again, and the connection pool reconnects, through the sentinels when configured, so the
process's sockets stay open across a failover instead of all closing at once.

A Redis that comes back empty (restarted without persistence, a failover to a replica that had
not caught up) has forgotten the groups: the sockets would stay open and receive nothing. The
receive loop keeps an epoch token in Redis and compares it at most every EPOCH_CHECK_SECONDS;
when the token is gone or changed, the hooks registered with `on_reset` run (the gateway's
sockets join their groups again and catch up from the outbox, events/delivery.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from channels_redis.core import RedisChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("harry.channel_layer")

RECEIVE_BATCH = 200
# Waits between attempts while Redis is unreachable: doubling up to the maximum.
RECONNECT_DELAY_SECONDS = (0.1, 2.0)
_LOST = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)
# How often, at most, a receive loop checks whether Redis lost its data (module docstring); an
# idle loop checks once per blocking wait (brpop_timeout, 5 s).
EPOCH_CHECK_SECONDS = 1.0

_RESTORE_BACKUP = """
local backed_up = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = #backed_up, 1, -2 do
    redis.call('ZADD', KEYS[1], backed_up[i], backed_up[i - 1])
end
redis.call('DEL', KEYS[2])
local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[1])
for i = 1, #popped, 2 do
    redis.call('ZADD', KEYS[2], popped[i + 1], popped[i])
end
return popped
"""


class _Inboxes(defaultdict):
    """The per-process buffers of the sockets' channels. channels_redis deletes a channel's buffer
    when its receive ends (`del buffers[channel]`, also on cancellation); a socket's teardown may
    have dropped it already (events/consumers.py, `_forget_inbox`). A KeyError there skipped the
    release of the process's receive lock, and every other socket of the process went deaf; a
    buffer that is gone is simply gone."""

    def __delitem__(self, channel: str) -> None:
        self.pop(channel, None)


class BulkReceiveRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.receive_buffer = _Inboxes(self.receive_buffer.default_factory)
        self._reset_hooks: list[Callable[[], Any]] = []
        self._epoch: Any = None  # the token last read from Redis
        self._epoch_due = 0.0
        self._requeues: set[asyncio.Future] = set()  # puts-back in flight, kept from the collector

    def on_reset(self, hook: Callable[[], Any]) -> None:
        """Call `hook()` (on the receiving event loop) whenever Redis is found to have lost its data."""
        if hook not in self._reset_hooks:
            self._reset_hooks.append(hook)

    async def _check_epoch(self, connection: Any) -> None:
        now = time.monotonic()
        if now < self._epoch_due:
            return
        self._epoch_due = now + EPOCH_CHECK_SECONDS
        key = f"{self.prefix}:epoch"
        epoch = await connection.get(key)
        if epoch is None:
            await connection.set(key, uuid.uuid4().hex, nx=True)
            epoch = await connection.get(key)
        known, self._epoch = self._epoch, epoch
        if known is None or epoch == known:
            return
        log.warning("Redis lost the channel layer's data (a restart or failover); running the reset hooks")
        for hook in list(self._reset_hooks):
            try:
                hook()
            except Exception:
                log.exception("channel layer reset hook failed")

    async def receive_single(self, channel: str) -> tuple[Any, dict]:
        if "!" not in channel:
            return await super().receive_single(channel)
        index = self.consistent_hash(channel)
        channel_key = self.prefix + channel
        backup = self._backup_channel_name(channel_key)
        connection = self.connection(index)
        await self.receive_clean_locks.acquire(channel_key)
        try:
            members = await self._take(connection, channel_key, backup)
            cleaner = asyncio.ensure_future(connection.delete(backup))
        except BaseException:
            self.receive_clean_locks.release(channel_key)
            raise
        self.receive_cleaners.append(cleaner)

        def cleaned(task: asyncio.Future) -> None:
            self.receive_cleaners.remove(task)
            self.receive_clean_locks.release(channel_key)
            if not task.cancelled() and task.exception() is not None:
                # Redis went away first: the next receive takes the backup's messages again, and
                # the sockets drop what they already delivered (events/dedupe.py).
                log.warning("channel layer could not clear its in-flight backup: %s", task.exception())

        cleaner.add_done_callback(cleaned)
        first, *rest = [self._unpack(member, channel) for member in members]
        # The caller buffers `first` before its next await; the rest must follow it, not precede it.
        asyncio.get_running_loop().call_soon(self._buffer, rest)
        return first

    def _buffer(self, messages: list[tuple[Any, dict]]) -> None:
        for target, message in messages:
            for name in target if isinstance(target, list) else [target]:
                self.receive_buffer[name].put_nowait(message)

    async def _take(self, connection: Any, channel_key: str, backup: str) -> list[bytes]:
        """Up to RECEIVE_BATCH members, moved into the backup; waits for one when none is queued."""
        delay, longest = RECONNECT_DELAY_SECONDS
        while True:
            try:
                popped = await connection.eval(_RESTORE_BACKUP, 2, channel_key, backup, RECEIVE_BATCH)
                if popped:
                    return popped[0::2]
                await self._check_epoch(connection)
                result = await self._pop(connection, channel_key)
                if result is not None:
                    _, member, score = result
                    try:
                        await connection.zadd(backup, {member: float(score)})
                    except asyncio.CancelledError:
                        self._requeue(connection, channel_key, member, score)
                        raise
                    return [member]
            except _LOST as error:
                log.warning("channel layer lost Redis (%s); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)
                continue
            delay = RECONNECT_DELAY_SECONDS[0]

    async def _pop(self, connection: Any, channel_key: str) -> Any:
        """BZPOPMIN, safe against the caller's cancellation. The receive is cancelled whenever the
        socket whose task holds the process's receive lock ends; Redis may have popped a message
        (for any socket of the process) whose reply was not read yet, and it would be gone. The
        pop runs on, shielded, and what it took goes back into the channel for the next receive
        (`make test-faults`: a few frames lost on several sockets when many closed at once)."""
        pop = asyncio.ensure_future(connection.bzpopmin(channel_key, timeout=self.brpop_timeout))
        try:
            return await asyncio.shield(pop)
        except asyncio.CancelledError:
            pop.add_done_callback(lambda done: self._requeue_popped(connection, channel_key, done))
            raise

    def _requeue_popped(self, connection: Any, channel_key: str, pop: asyncio.Future) -> None:
        if pop.cancelled() or pop.exception() is not None or pop.result() is None:
            return
        _, member, score = pop.result()
        self._requeue(connection, channel_key, member, score)

    def _requeue(self, connection: Any, channel_key: str, member: bytes, score: float) -> None:
        """Put a taken message back at its place (its score is its send time); a duplicate, should
        it have reached the backup too, is dropped by the socket (events/dedupe.py)."""
        task = asyncio.ensure_future(connection.zadd(channel_key, {member: float(score)}))
        self._requeues.add(task)
        task.add_done_callback(self._requeued)

    def _requeued(self, task: asyncio.Future) -> None:
        self._requeues.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("channel layer could not put back a message it took: %s", task.exception())

    def _unpack(self, member: bytes, channel: str) -> tuple[Any, dict]:
        message = self.deserialize(member)
        return message.pop("__asgi_channel__", channel), message
