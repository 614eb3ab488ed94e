"""Opt-in batching of a channel's broadcasts (spec "Intelligent Event Batching").

A join opts in with `config.broadcast.batch`: `true` takes the rule of the topic's kind
(REALTIME_BATCH_RULES: rankings 10 events / 2 s, attendance and groups 50 / 1 s, tasks 20 / 5 s),
an object `{max_events, window_ms}` sets its own (1..100 events, 50..10000 ms). realtime-js sends
only `broadcast`, `presence`, `postgres_changes` and `private` of a channel's config, so the
option lives under `broadcast`, next to `ack`, `self` and `replay`. Joins that do not ask keep one
frame per event.

A batch is one broadcast, event `batch`, payload `{"events": [{event, payload, meta}, ...]}` and
`meta: {"ids": [...]}`: every item keeps its own `meta.id`, so delivery_ack, replay and dedupe
work per event. A batch goes out when it holds `max_events`, when the first item has waited
`window_ms`, or at once when a critical event joins it. A batch of one is sent as that event's
own frame. Only stored events (the outbox's broadcasts) are batched: client broadcasts, presence
and postgres_changes frames go out as they come. Prayer holds happen before fan-out (the
listener re-schedules held events), so a batch never carries an event the prayer policy holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)

BATCH_EVENT = "batch"
MAX_EVENTS = (1, 100)
WINDOW_MS = (50, 10_000)


class BatchConfigError(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class BatchRule:
    max_events: int
    window_ms: int


def configured_rules() -> dict[str, BatchRule]:
    """REALTIME_BATCH_RULES, e.g. "rankings=10/2000,attendance=50/1000": topic kind = events/ms."""
    rules = {}
    for item in filter(None, (part.strip() for part in settings.REALTIME_BATCH_RULES.split(","))):
        kind, _, rule = item.partition("=")
        count, _, window = rule.partition("/")
        rules[kind.strip()] = BatchRule(int(count), int(window))
    return rules


def _bounded(config: dict, name: str, bounds: tuple[int, int], default: int) -> int:
    value = config.get(name, default)
    low, high = bounds
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BatchConfigError(f"InvalidBatch: {name} must be an integer from {low} to {high}")
    return value


def batch_rule(config: dict, sub_topic: str) -> BatchRule | None:
    """The batching a join asked for, or None when it did not; BatchConfigError when malformed."""
    requested = (config.get("broadcast") or {}).get("batch")
    if requested is None or requested is False:
        return None
    default = configured_rules().get(sub_topic.partition(":")[0])
    if requested is True:
        if default is None:
            raise BatchConfigError(f"InvalidBatch: no batching rule for {sub_topic.partition(':')[0]} topics")
        return default
    if not isinstance(requested, dict):
        raise BatchConfigError("InvalidBatch: batch must be true or {max_events, window_ms}")
    fallback = default or BatchRule(MAX_EVENTS[1] // 5, 1000)
    return BatchRule(
        max_events=_bounded(requested, "max_events", MAX_EVENTS, fallback.max_events),
        window_ms=_bounded(requested, "window_ms", WINDOW_MS, fallback.window_ms),
    )


def batch_body(items: list[dict]) -> dict:
    """The broadcast payload of a batch of `{type, event, payload, meta}` bodies."""
    return {
        "type": "broadcast",
        "event": BATCH_EVENT,
        "payload": {"events": [{"event": i["event"], "payload": i["payload"], "meta": i["meta"]} for i in items]},
        "meta": {"ids": [i["meta"]["id"] for i in items]},
    }


class Batcher:
    """One joined channel's pending broadcasts. `send(items)` delivers a flushed batch (the items
    as added, in order); it is awaited in order, and an item is never in two batches."""

    def __init__(self, rule: BatchRule, send: Callable[[list[Any]], Awaitable[None]]):
        self.rule = rule
        self._send = send
        self._items: list[Any] = []
        self._timer: asyncio.Task | None = None

    @property
    def pending(self) -> int:
        return len(self._items)

    async def add(self, item: Any, *, urgent: bool = False) -> None:
        if not self._items:
            self._timer = asyncio.get_running_loop().create_task(self._flush_after(self.rule.window_ms / 1000))
        self._items.append(item)
        if urgent or len(self._items) >= self.rule.max_events:
            await self.flush()

    async def _flush_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._timer = None  # the flush below must not cancel the task running it
        try:
            await self.flush()
        except Exception:  # the socket went away meanwhile; the events stay in the outbox
            log.warning("batch flush failed", exc_info=True)

    async def flush(self) -> None:
        items, self._items = self._items, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if items:
            await self._send(items)

    def discard(self) -> None:
        """The channel is gone: drop what waits (the events stay in the outbox for replay)."""
        self._items = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
