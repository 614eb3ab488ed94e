"""The listener: fans stored events out to topic groups (docs/design.md, decision 1).

- One active instance: it holds a session-level advisory lock on its own connection; a second
  instance waits as a standby and takes over when that connection goes away.
- Wakes on `NOTIFY realtime_events` (psycopg 3 async) and also every `poll_interval` seconds
  and when a scheduled event falls due, so a lost notification delays an event but never loses it.
- The work queue is "committed and not yet processed" (`processed_at IS NULL`), not a
  `seq > last` cursor: on start and after any reconnect it resumes with everything not yet
  fanned out, and an event whose transaction commits after a higher seq was processed is picked
  up on the next pass instead of being skipped.
- At-least-once: an event is marked processed after its messages were handed to the channel
  layer; a crash in between re-sends it, and each socket drops a `meta.id` it already delivered
  (events/dedupe.py). Before the hand-over an event is marked fanned out (`fanout_at`): from
  then on join-time replay and catch-up read it, since a socket joining its topic now may miss it
  live; an event not yet marked reaches every joined socket live and is never replayed ahead of
  the listener (which would deliver it again live to the client's next socket).
- Faults are waited out, not fatal: any failure of PostgreSQL (a killed backend, a restart) or of
  Redis (a restart, a pause, a refused connection) ends the session; the listener drops the
  connections that may be stale (the ORM's, in the thread the ORM runs in, and the channel
  layer's pool for this event loop), waits a bounded exponential backoff with jitter, connects
  again, re-takes the advisory lock (or stands by if another listener took it meanwhile) and
  resumes from the unprocessed events. A process supervisor's restart is the last resort.

It works across all schools, so its queries run in `dangerously_platform_context()`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass

import psycopg
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.db import DatabaseError, InterfaceError, close_old_connections, connections, transaction
from django.utils import timezone
from redis.exceptions import RedisError

from events import selectors
from events.family import family_notices_create
from events.messages import messages_for
from events.prayer_hold import events_hold_for_prayer
from events.status import events_mark_failed, events_mark_fanned_out, events_mark_processed
from events.topics import group_name
from harry_realtime import kpi
from harry_realtime.tenancy import dangerously_platform_context

log = logging.getLogger("harry.listener")

NOTIFY_CHANNEL = "realtime_events"
# Two-key advisory lock (objsubid 2), so it never collides with the one-key in-flight event locks.
LEADER_LOCK = (0x52544C, 1)
# Waits after a failure: the first, doubling per failure in a row up to the cap; each wait is
# drawn between half and all of that (jitter), so listeners that lost the same server do not
# come back in step. A session that fanned out events starts the count again.
RECOVERY_BACKOFF_SECONDS = (0.2, 10.0)
# A channel-layer send that Redis has not answered by then counts as a lost connection: a server
# that vanished without closing its sockets would otherwise hold the listener forever (the layer's
# sockets have no read timeout, decision 9). A paused Redis that answers within it is waited for.
SEND_TIMEOUT_SECONDS = 30.0


def conninfo(alias: str = "default") -> str:
    settings = connections[alias].settings_dict
    return psycopg.conninfo.make_conninfo(
        dbname=settings["NAME"],
        user=settings["USER"],
        password=settings["PASSWORD"],
        host=settings["HOST"] or None,
        port=str(settings["PORT"]) if settings["PORT"] else None,
        application_name="realtime_listen",
    )


@dataclass
class ListenerStats:
    events: int = 0
    messages: int = 0
    batches: int = 0
    reconnects: int = 0
    last_batch_ms: float = 0.0
    last_failure: str = ""


def _load_batch(limit: int) -> tuple[list[int], list[tuple[str, dict]], bool]:
    """(seqs to mark processed, their messages, whether the queue had fewer than `limit` due).
    The seqs are marked fanned out when this returns (committed): the send follows."""
    close_old_connections()
    messages: list[tuple[str, dict]] = []
    failed: list[int] = []
    with dangerously_platform_context():
        events = selectors.unprocessed_events(limit=limit)
        exhausted = len(events) < limit
        held = events_hold_for_prayer(events, at=timezone.now())
        events = [event for event in events if event.seq not in held]
        # Before the messages are built: the payloads report the family notices stored here.
        _family_notices(events)
        for event in events:
            try:
                produced = messages_for(event)
            except Exception:  # one malformed event must not stop the pipeline for everyone
                log.exception("event seq=%s could not be turned into messages; marked failed", event.seq)
                failed.append(event.seq)
                continue
            # For the sockets' delivery-latency histogram: from the write, or from when a
            # scheduled (or prayer-held) event fell due.
            due_ts = max(event.created_at, event.scheduled_for).timestamp()
            for _, message in produced:
                message["due_ts"] = due_ts
                message.setdefault("priority", event.priority)
            messages += produced
        if failed:
            events_mark_failed(failed)
        seqs = [e.seq for e in events if e.seq not in failed]
        if seqs:
            events_mark_fanned_out(seqs)
    return seqs, messages, exhausted


def _family_notices(events: list) -> None:
    """A failure here must not stop the pipeline: the batch goes out without notices (and its
    payloads then say none were sent)."""
    try:
        with transaction.atomic():
            family_notices_create(events)
    except Exception:
        log.exception(
            "family notices for seq %s..%s failed",
            events[0].seq if events else None,
            events[-1].seq if events else None,
        )


def _mark_processed(seqs: list[int]) -> None:
    with dangerously_platform_context():
        events_mark_processed(seqs)


def _drop_database_connections() -> None:
    """Close this thread's database connections and check the pool's idle ones: after a killed
    backend or a database restart they are dead, and each would fail one more unit of work.
    Runs in the thread the ORM runs in (sync_to_async's), where those connections live."""
    for conn in connections.all(initialized_only=True):
        try:
            conn.close()
        except Exception:  # a dead connection may fail to close; it is dropped all the same
            log.debug("closing database connection %s failed", conn.alias, exc_info=True)
        pool = conn.pool if conn.settings_dict.get("OPTIONS", {}).get("pool") else None
        if pool is not None and not pool.closed:
            try:
                pool.check()
            except Exception:
                log.debug("checking database pool %s failed", conn.alias, exc_info=True)


async def _drop_redis_connections(layer: object) -> None:
    """Close the channel layer's connections of this event loop (channels_redis keeps a pool per
    loop); the next send opens new ones."""
    pools = getattr(layer, "_layers", {}).get(asyncio.get_running_loop())
    if pools is None:
        return
    try:
        await pools.flush()
    except Exception:
        log.debug("closing the channel layer's connections failed", exc_info=True)


def failure_cause(error: BaseException) -> str:
    """`database`, `redis`, `network` or `unexpected` (for the log and the recovery counter)."""
    if isinstance(error, (psycopg.Error, DatabaseError, InterfaceError)):
        return "database"
    if isinstance(error, RedisError):
        return "redis"
    if isinstance(error, (OSError, TimeoutError)):
        return "network"
    return "unexpected"


def recovery_delay(failures: int) -> float:
    """Seconds to wait after `failures` failures in a row (1, 2, ...): bounded, with jitter."""
    first, cap = RECOVERY_BACKOFF_SECONDS
    ceiling = min(cap, first * 2 ** max(0, failures - 1))
    return random.uniform(ceiling / 2, ceiling)


def _seconds_until_scheduled() -> float | None:
    with dangerously_platform_context():
        due = selectors.next_scheduled_at()
    return None if due is None else max(0.0, (due - timezone.now()).total_seconds())


class Listener:
    def __init__(
        self,
        *,
        batch_size: int = 500,
        poll_interval: float = 2.0,
        standby_interval: float = 1.0,
        send_timeout: float = SEND_TIMEOUT_SECONDS,
        alias: str = "default",
    ) -> None:
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.standby_interval = standby_interval
        self.send_timeout = send_timeout
        self.alias = alias
        self._progress = False
        self.stats = ListenerStats()
        self.is_leader = asyncio.Event()
        self.layer = get_channel_layer()

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: connect, become leader, fan out; after any failure drop the
        connections that may be stale, back off and start again (module docstring)."""
        failures = 0
        while not stop.is_set():
            self._progress = False
            try:
                await self._session(stop)
                failures = 0
            except Exception as error:  # any fault is waited out; the events wait in the outbox
                self.is_leader.clear()
                failures = 1 if self._progress else failures + 1
                cause = failure_cause(error)
                self.stats.reconnects += 1
                self.stats.last_failure = cause
                kpi.inc("harry_listener_recoveries_total", cause=cause)
                delay = recovery_delay(failures)
                log.log(
                    logging.ERROR if cause == "unexpected" else logging.WARNING,
                    "listener lost %s (%s: %s); reconnecting in %.2fs",
                    cause,
                    type(error).__name__,
                    error,
                    delay,
                    exc_info=cause == "unexpected",
                )
                await self._drop_connections(cause)
                await _sleep_or_stop(stop, delay)

    async def _drop_connections(self, cause: str) -> None:
        if cause != "redis":
            try:
                await sync_to_async(_drop_database_connections)()
            except Exception:
                log.debug("dropping database connections failed", exc_info=True)
        if cause != "database":
            await _drop_redis_connections(self.layer)

    async def _session(self, stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(conninfo(self.alias), autocommit=True) as conn:
            if not await self._acquire_leadership(conn, stop):
                return
            await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.is_leader.set()
            log.info("listener active (leader); resuming from unprocessed events")
            wake = asyncio.Event()
            wake.set()
            watcher = asyncio.create_task(self._watch_notifies(conn, wake))
            next_schedule_check = next_wake = 0.0
            try:
                while not stop.is_set():
                    if watcher.done():
                        watcher.result()
                        raise psycopg.OperationalError("notification stream ended")
                    await self.drain()
                    if time.monotonic() >= next_schedule_check:
                        # Future-scheduled events wake no one; look for the next one now and then.
                        next_schedule_check = time.monotonic() + self.poll_interval
                        due = await sync_to_async(_seconds_until_scheduled)()
                        next_wake = time.monotonic() + min(self.poll_interval, due if due is not None else 1e9)
                    await _wait_any(wake, stop, max(0.0, next_wake - time.monotonic()) + 0.001)
                    wake.clear()
            finally:
                watcher.cancel()
                self.is_leader.clear()

    async def _acquire_leadership(self, conn: psycopg.AsyncConnection, stop: asyncio.Event) -> bool:
        announced = False
        while not stop.is_set():
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LEADER_LOCK)
            if (await cursor.fetchone())[0]:
                return True
            if not announced:
                log.info("another listener is active; waiting as standby")
                announced = True
            await _sleep_or_stop(stop, self.standby_interval)
        return False

    async def _watch_notifies(self, conn: psycopg.AsyncConnection, wake: asyncio.Event) -> None:
        try:
            async for _ in conn.notifies():
                wake.set()
        finally:
            wake.set()  # a dead connection must end the wait at once, to reconnect

    async def drain(self) -> int:
        """Fan out every due, unprocessed event; returns how many."""
        total = 0
        while True:
            started = time.perf_counter()
            seqs, messages, exhausted = await sync_to_async(_load_batch)(self.batch_size)
            if not seqs and exhausted:
                return total
            async with asyncio.timeout(self.send_timeout):
                await self._send(messages)
            await sync_to_async(_mark_processed)(seqs)
            self._progress = True
            total += len(seqs)
            self.stats.events += len(seqs)
            self.stats.messages += len(messages)
            self.stats.batches += 1
            self.stats.last_batch_ms = (time.perf_counter() - started) * 1000
            if exhausted:
                return total

    async def _send(self, messages: list[tuple[str, dict]]) -> None:
        """One message per topic, its items in seq order; no order is promised across topics."""
        per_topic: dict[str, list[dict]] = defaultdict(list)
        for topic, message in messages:
            items = per_topic[topic]
            previous = items[-1] if items else None
            if (
                message["type"] == "realtime.postgres_change"
                and previous is not None
                and previous["type"] == "realtime.broadcast"
                and previous["meta"]["id"] == message["meta"]["id"]
            ):
                # One channel-layer message carries both frames of a change: half the sends.
                items[-1] = {**message, "broadcast": previous}
            else:
                items.append(message)

        sends = [(group_name(topic), _batched(topic, items)) for topic, items in per_topic.items()]
        if isinstance(self.layer, RedisChannelLayer):
            await group_send_many(self.layer, sends)
            return

        await asyncio.gather(*(self.layer.group_send(group, message) for group, message in sends))


def _batched(topic: str, items: list[dict]) -> dict:
    """A topic's messages of one batch as one channel-layer message (`realtime.batch`, handled by
    the consumer item by item, in order). A server process's intake is bounded by the count of
    channel-layer messages (Redis round trips), not their size (harry_realtime/channel_layer.py)."""
    if len(items) == 1:
        return items[0]
    return {"type": "realtime.batch", "topic": topic, "messages": items}


# One script call delivers a whole batch to every channel of its groups. Each entry's score
# (its time) is strictly above the previous one's: consumers pop the lowest score first
# (BZPOPMIN), so a channel receives the messages in the order given, as consecutive
# `group_send` calls would deliver them.
_GROUP_SEND_MANY_LUA = """
local expiry = tonumber(ARGV[#ARGV])
local over = 0
local cleaned = {}
for i = 1, #KEYS do
    local key = KEYS[i]
    local score = ARGV[3 * i]
    if not cleaned[key] then
        redis.call('ZREMRANGEBYSCORE', key, 0, tonumber(score) - expiry)
        cleaned[key] = true
    end
    if redis.call('ZCOUNT', key, '-inf', '+inf') < tonumber(ARGV[3 * i - 1]) then
        redis.call('ZADD', key, score, ARGV[3 * i - 2])
        redis.call('EXPIRE', key, expiry)
    else
        over = over + 1
    end
end
return over
"""
_last_score = 0.0


def _next_score() -> float:
    """The current time, but always above the last one handed out (1 µs steps)."""
    global _last_score
    _last_score = max(time.time(), _last_score + 1e-6)
    return _last_score


_SCRIPT_ENTRIES = 2000  # per script call, to bound one call's size and Redis's time in it


async def group_send_many(layer: RedisChannelLayer, sends: list[tuple[str, dict]]) -> None:
    """`layer.group_send(group, message)` for each pair, in order, in two Redis round trips per
    server instead of four per message: read every group's members in one pipeline, then add
    every (channel, message) in one script. Same keys, capacity, expiry and wire format as
    channels-redis's own group_send (4.x), so consumers and other senders are unaffected."""
    if not sends:
        return
    now = time.time()
    groups = list(dict.fromkeys(group for group, _ in sends))
    by_index: dict[int, list[str]] = defaultdict(list)
    for group in groups:
        by_index[layer.consistent_hash(group)].append(group)
    members: dict[str, list[str]] = {}
    for index, names in by_index.items():
        pipe = layer.connection(index).pipeline(transaction=False)
        for group in names:
            key = layer._group_key(group)
            pipe.zremrangebyscore(key, min=0, max=int(now) - layer.group_expiry)
            pipe.zrange(key, 0, -1)
        replies = await pipe.execute()
        for i, group in enumerate(names):
            members[group] = [m.decode("utf8") for m in replies[2 * i + 1]]
    entries: dict[int, list[tuple[bytes, bytes, int]]] = defaultdict(list)
    for group, message in sends:
        channel_names = members[group]
        if not channel_names:
            continue
        keys_by_index, message_of_key, capacity_of_key = layer._map_channel_keys_to_connection(channel_names, message)
        for index, keys in keys_by_index.items():
            entries[index].extend((key, message_of_key[key], capacity_of_key[key]) for key in keys)
    for index, items in entries.items():
        connection = layer.connection(index)
        for start in range(0, len(items), _SCRIPT_ENTRIES):
            chunk = items[start : start + _SCRIPT_ENTRIES]
            args: list = []
            for _, body, capacity in chunk:
                args += [body, capacity, repr(_next_score())]
            over = await connection.eval(
                _GROUP_SEND_MANY_LUA, len(chunk), *(key for key, _, _ in chunk), *args, int(layer.expiry)
            )
            if over:
                kpi.inc("harry_channel_layer_dropped_total", over, source="listener")
                log.warning("%s channel-layer messages dropped: channels over capacity", over)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def _wait_any(wake: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.create_task(wake.wait()), asyncio.create_task(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
