"""The pipeline's side of the socket consumer: stored events reaching one WebSocket.

Mixed into `RealtimeSocket` (events/consumers.py):
- `realtime_batch`: several of the listener's messages for one topic in one channel-layer message,
  handled one by one in order.
- `realtime_postgres_change`: a captured row change becomes a `postgres_changes` push for the
  join's matching bindings, only when the row is the user's to see, FERPA-filtered for them.
  The listener folds the change's broadcast into the same message (key `broadcast`), which is
  delivered first, as if it had come on its own.
- `pipeline_broadcast_frame`: the listener's broadcasts (they carry an `audience`) get the same
  row rules and FERPA filter. What the filter yields per access level is built once per process
  and message (`_shared`).
- Each stored event at most once, in seq order, per topic (events/dedupe.py): live, replayed
  and caught-up events alike pass `_delivered_before` and are noted by `_note_delivered` when
  they go out (or into a socket batch), so a batch the listener sends again, messages the channel
  layer hands over again and the replay seam never show twice.
- `prepare_replay` / `send_replay`: `config.broadcast.replay = {since: <ms epoch>, limit: <n>}`
  (and, as an extension, `after_id: <seq>`) sends all the topic's stored events since then before
  any live one, oldest first, in pages of `selectors.REPLAY_PAGE` (the first, read before the join
  is answered, of FIRST_REPLAY_PAGE), each with `meta.id` = seq and
  `meta.replayed: true`; beyond `limit` (at most REALTIME_REPLAY_MAX_EVENTS), or when a page
  cannot be read, a `system` message `resync_required` names the first missing seq
  (docs/protocol.md#replay). The consumer handles one message at a time and joins the topic group
  before reading, so a live event is either in the replay (and dropped when it arrives live, as
  delivered already) or arrives after it: no gap, no duplicate at the seam.
- `handle_delivery_ack`: the client acknowledgement. Event `delivery_ack` on a joined topic with
  payload `{"ids": [<meta.id>, ...]}` (at most 500) marks those events `delivered`; the reply is
  `{"status": "ok", "response": {"delivered": <count>}}`. realtime-js sends it with
  `channel.send({type: 'delivery_ack', ids})` (or any Phoenix client with a custom event).
- Reaching the socket of an event's target user marks it `sent` (batched, off the delivery path).
- `realtime_regroup`: Redis lost its data (harry_realtime/channel_layer.py, `on_reset`), so the
  groups no longer list this socket. It joins every topic's group again, stores its tracked
  presences again (announced as joins), then sends what it missed
  from the outbox: the topic's fanned-out events after the highest seq it delivered (or since
  the join), in pages up to the first short one, oldest first, with `meta.replayed: true`; the
  delivered marks drop whatever also arrives live. Sockets register at connect (`watch_layer_resets`).
- `dispatch`: the fan-out messages (`realtime.postgres_change`, `realtime.broadcast`) skip
  Channels' per-message `aclose_old_connections()`, a thread-pool round trip for every message
  to every socket; their handlers touch no database connection (the `sent` marking goes
  through `socket_db`, which closes old connections itself).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from channels.exceptions import StopConsumer
from django.conf import settings

from harry_realtime.socket_db import socket_db
from harry_realtime.tenancy import tenant_context
from presence import state as presence_state

from . import ferpa, lifecycle, selectors
from .dedupe import DeliveredSeqs
from .messages import messages_for
from .protocol import TOPIC_PREFIX, Message, encode, push
from .recipients import (
    broadcast_access,
    broadcast_body,
    broadcast_for_recipient,
    postgres_change_access,
    postgres_change_body,
)
from .status import events_mark_delivered, events_mark_sent

log = logging.getLogger(__name__)

MAX_ACK_IDS = 500
# Event ids are PostgreSQL bigints; a larger number would be compared as numeric (no index).
MAX_SEQ = 2**63 - 1
# The last millisecond a datetime can hold (9999-12-31T23:59:59.999Z).
MAX_SINCE_MS = 253_402_300_799_999
SENT_FLUSH_SECONDS = 0.2
# Channel-layer message types whose handlers never use a database connection on the loop.
DB_FREE_MESSAGES = frozenset({"realtime.postgres_change", "realtime.broadcast", "realtime.batch"})
# Frame kinds with delivered marks of their own: a change and its broadcast share a `meta.id`.
BROADCAST = "broadcast"
CHANGE = "postgres_changes"
# Stored events read per query when a socket catches up after Redis lost its groups.
CATCH_UP_PAGE = 500
# Open sockets of this process, told to re-join their groups when Redis lost its data.
_open_sockets: weakref.WeakSet = weakref.WeakSet()
# Stored events a join reads before it is answered (that the replay can be read is part of the
# join); the rest, in pages of selectors.REPLAY_PAGE, after the answer. A full first page made
# every join of a rejoin storm wait for 500 events read and built, the other sockets' included.
FIRST_REPLAY_PAGE = 32
# Stored events a socket sends in a row before it lets the process's other sockets run. Sending to
# a writable socket never yields, so a replay or catch-up of hundreds of events held the event
# loop, and the joins of other sockets (rejoining after a web restart) waited behind it.
STORED_FRAMES_PER_TURN = 16
# Topics whose delivered marks a socket keeps after leaving them (a re-join on the same socket
# still gets nothing twice); beyond this, the marks of topics no longer joined are let go.
REMEMBERED_TOPICS = 32


_SHARED = "__shared"


def _shared(message: dict, key: tuple, build: Callable[[], Any]) -> Any:
    """Built once per server process for every socket that gets `message` the same way.

    The channel layer hands one deserialized message to all of this process's sockets in its
    group; sockets at the same access level send the same filtered payload (and, for broadcasts,
    the same frame). FERPA filtering and encoding per socket were about a seventh of the web
    process's fan-out time.
    The cache lives and dies with the message; it is never sent on."""
    cache = message.get(_SHARED)
    if cache is None:
        cache = message[_SHARED] = {}
    if key not in cache:
        cache[key] = build()
    return cache[key]


def _replay_config(config: dict) -> dict | None:
    replay = (config.get("broadcast") or {}).get("replay")
    return replay if isinstance(replay, dict) else None


def replay_max() -> int:
    return settings.REALTIME_REPLAY_MAX_EVENTS


def validate_replay(config: dict) -> str | None:
    """Why a join's replay request is refused, or None when it is absent or valid."""
    replay = (config.get("broadcast") or {}).get("replay")
    if replay is None:
        return None
    if not isinstance(replay, dict):
        return "InvalidReplay: replay must be an object {since, after_id, limit}"
    since, limit, after = replay.get("since"), replay.get("limit", replay_max()), replay.get("after_id")
    if since is not None and (not isinstance(since, int) or isinstance(since, bool) or not 0 <= since <= MAX_SINCE_MS):
        return "InvalidReplay: since must be a time in milliseconds since the epoch"
    if after is not None and (not isinstance(after, int) or isinstance(after, bool) or not 0 <= after <= MAX_SEQ):
        return "InvalidReplay: after_id must be an event id"
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= replay_max():
        return f"InvalidReplay: limit must be between 1 and {replay_max()}"
    if since is None and after is None:
        return "InvalidReplay: give since (ms) or after_id"
    return None


async def in_turns(messages: list[dict]) -> AsyncIterator[dict]:
    """The messages, with a turn for the other tasks after every STORED_FRAMES_PER_TURN."""
    for count, message in enumerate(messages, 1):
        yield message
        if count % STORED_FRAMES_PER_TURN == 0:
            await _give_way()


# Joins of this process not yet answered. A client gives up on a join after a timeout (realtime-js:
# 10 s by default, apps often set less) and backs off before it tries again; a replay has no
# timeout. So while joins wait, the replays and catch-ups of other sockets pause at their next turn,
# for at most JOIN_WAY_SECONDS per turn (so that a steady stream of joins cannot stall them).
_joins_unanswered = 0
JOIN_WAY_SECONDS = 0.05
_JOIN_WAY_POLL_SECONDS = 0.005


@contextmanager
def join_unanswered() -> Iterator[None]:
    """The block is a join being authorized and answered: replays give way to it."""
    global _joins_unanswered
    _joins_unanswered += 1
    try:
        yield
    finally:
        _joins_unanswered -= 1


async def _give_way() -> None:
    await asyncio.sleep(0)
    waited = 0.0
    while _joins_unanswered and waited < JOIN_WAY_SECONDS:
        await asyncio.sleep(_JOIN_WAY_POLL_SECONDS)
        waited += _JOIN_WAY_POLL_SECONDS


@dataclass
class ReplayPage:
    """One page of a join's replay: the messages of `events` stored events (of `asked`), the last
    one `last_seq`. Fewer than asked: nothing more is stored."""

    messages: list[dict]
    events: int
    asked: int
    last_seq: int | None


@socket_db
def _stored_page(claims: Any, topic: str, *, after_id: int | None, since: datetime | None, size: int) -> ReplayPage:
    """One page of a topic's fanned-out events as replayed messages (a join's replay, a catch-up)."""
    with tenant_context(claims.tenant):
        events = selectors.topic_events(topic=topic, after_id=after_id, since=since, limit=size)
        messages = [m for event in events for _, m in messages_for(event, topic=topic, replayed=True)]
        return ReplayPage(messages, len(events), size, events[-1].seq if events else None)


@dataclass
class Replay:
    """A join's replay in progress: the first page is read before the join is answered, the rest
    after it, page by page, until nothing is left or `limit` events were sent."""

    since: datetime | None
    after_id: int | None  # the last seq read so far (the next page starts after it)
    limit: int
    sent: int = 0
    page: ReplayPage | None = None


def _regroup_open_sockets() -> None:
    """The channel layer's reset hook: every open socket of this process handles a regroup in
    turn with its other messages."""
    for socket in list(_open_sockets):
        asyncio.get_running_loop().create_task(
            socket.channel_layer.send(socket.channel_name, {"type": "realtime.regroup"})
        )


@socket_db
def _mark(claims: Any, seqs: list[int], *, delivered: bool, user_id: Any = None) -> int:
    with tenant_context(claims.tenant):
        if delivered:
            return events_mark_delivered(user_id=user_id, seqs=seqs)
        return events_mark_sent(seqs)


class PipelineDeliveryMixin:
    """Needs the consumer's `channels_joined`, `_send`, `_reply`, `mirror` and the adaptive mixin's
    `send_stored`."""

    async def dispatch(self, message: dict) -> None:
        if message.get("type") in DB_FREE_MESSAGES:
            handler = getattr(self, message["type"].replace(".", "_"))
            await handler(message)
            return
        await super().dispatch(message)

    def _pipeline_state(self) -> dict:
        if not hasattr(self, "_pipeline"):
            self._pipeline = {"delivered": {}, "sent": set(), "flush": None, "claims": None}
        return self._pipeline

    def _delivered_seqs(self, channel: Any, kind: str) -> DeliveredSeqs:
        delivered = self._pipeline_state()["delivered"]
        marks = delivered.get((channel.topic, kind))
        if marks is None:
            marks = delivered[(channel.topic, kind)] = DeliveredSeqs()
        return marks

    def _delivered_before(self, channel: Any, message: dict, kind: str) -> bool:
        """Whether this socket delivered this stored event (of this kind, on this topic) already."""
        seq = (message.get("meta") or {}).get("id")
        return seq is not None and self._delivered_seqs(channel, kind).seen(seq)

    def _note_delivered(self, channel: Any, message: dict, kind: str) -> None:
        seq = (message.get("meta") or {}).get("id")
        if seq is not None:
            self._delivered_seqs(channel, kind).add(seq)

    def _note_target(self, channel: Any, message: dict) -> None:
        """An event for this user reached their live socket: it counts as sent."""
        if message.get("target_user_id") != str(channel.user.pk) or not (message.get("meta") or {}).get("id"):
            return
        state = self._pipeline_state()
        state["sent"].add(message["meta"]["id"])
        state["claims"] = channel.claims
        if state["flush"] is None or state["flush"].done():
            state["flush"] = asyncio.get_running_loop().create_task(self._flush_sent())

    async def _flush_sent(self) -> None:
        await asyncio.sleep(SENT_FLUSH_SECONDS)
        state = self._pipeline_state()
        seqs, state["sent"] = sorted(state["sent"]), set()
        if seqs:
            try:
                await _mark(state["claims"], seqs, delivered=False)
            except Exception:  # delivery status is bookkeeping; the socket must not suffer for it
                log.exception("could not mark %d events sent", len(seqs))

    def pipeline_broadcast_level(self, channel: Any, message: dict) -> str | None:
        """The access level at which this socket gets a listener's broadcast, or None when it must
        not be sent (not theirs, or delivered already: live, replayed or caught up)."""
        if self._delivered_before(channel, message, BROADCAST):
            return None
        return broadcast_access(message, user_id=channel.user.pk, role=channel.user.role)

    def pipeline_broadcast_body(self, channel: Any, message: dict, level: str) -> dict:
        """The body this socket gets; from here on the event counts as delivered to it."""
        self._note_target(channel, message)
        self._note_delivered(channel, message, BROADCAST)
        return _shared(message, ("broadcast body", level), lambda: broadcast_body(message, level))

    def pipeline_broadcast_frame(self, channel: Any, message: dict, level: str) -> str:
        """The frame of a listener's broadcast for this socket at its access level."""
        body = self.pipeline_broadcast_body(channel, message, level)
        return _shared(
            message,
            ("broadcast", channel.topic, level, self.vsn),
            lambda: encode(push(channel.topic, "broadcast", body), self.vsn),
        )

    async def realtime_batch(self, message: dict) -> None:
        """The listener's messages of one batch for one topic, in order (see listener._batched)."""
        for item in message["messages"]:
            await getattr(self, item["type"].replace(".", "_"))(item)

    async def realtime_postgres_change(self, message: dict) -> None:
        if "broadcast" in message:  # the listener sends a change's broadcast along with it
            await self.realtime_broadcast(message["broadcast"])
        channel = self.channels_joined.get(TOPIC_PREFIX + message["topic"])
        if channel is None or not channel.bindings:
            return
        await self._send_change(channel, message)

    async def _send_change(self, channel: Any, message: dict) -> None:
        """A change (live, replayed or caught up) as this socket's `postgres_changes` push, once."""
        if self._delivered_before(channel, message, CHANGE):
            return
        user = channel.user
        access = postgres_change_access(
            message, user_id=user.pk, role=user.role, organization_id=user.organization_id, bindings=channel.bindings
        )
        if access is None or self.holds_back(channel, message):
            return
        ids, level = access
        # The binding ids are this socket's own; the filtered row is the same for its access level.
        data = _shared(message, ("change data", level), lambda: ferpa.filter_change(message["data"], level))
        self._note_delivered(channel, message, CHANGE)
        await self._send(push(channel.topic, "postgres_changes", postgres_change_body(message, ids, data)))
        lifecycle.delivered(message)
        self._note_target(channel, message)
        self.mirror.event_delivered()

    async def prepare_replay(self, channel: Any) -> Replay | None:
        """The join's replay with its first page read, before the join is answered (a failure
        here fails the join); None when the join asked for none."""
        config = _replay_config(channel.config)
        if config is None:
            return None
        since_ms = config.get("since")
        since = None if since_ms is None else datetime.fromtimestamp(since_ms / 1000, tz=UTC)
        replay = Replay(since, config.get("after_id"), config.get("limit", replay_max()))
        replay.page = await self._read_page(channel, replay, min(FIRST_REPLAY_PAGE, replay.limit))
        return replay

    async def _read_page(self, channel: Any, replay: Replay, size: int) -> ReplayPage:
        # A live event that was in the replay is dropped when it arrives: delivered already.
        return await _stored_page(
            channel.claims, channel.sub_topic, after_id=replay.after_id, since=replay.since, size=size
        )

    async def send_replay(self, channel: Any, replay: Replay | None) -> None:
        """Send the stored events the join missed, oldest first, page after page. When `limit`
        events went out and more are stored, or a page cannot be read, the client is told
        `resync_required` with where the replay stopped: never silently less."""
        while replay is not None and replay.page is not None:
            page, replay.page = replay.page, None
            await self._send_replayed(channel, page.messages)
            replay.sent += page.events
            replay.after_id = page.last_seq if page.last_seq is not None else replay.after_id
            if page.events < page.asked:
                return  # nothing more is stored
            try:
                if replay.sent >= replay.limit:
                    more = await self._read_page(channel, replay, 1)
                    if more.events:
                        await self._resync_required(channel, replay, first_missing_id=more.last_seq)
                    return
                size = min(selectors.REPLAY_PAGE, replay.limit - replay.sent)
                replay.page = await self._read_page(channel, replay, size)
            except StopConsumer:
                raise
            except Exception:
                log.exception("replay of %s stopped after %d events", channel.topic, replay.sent)
                await self._resync_required(channel, replay, first_missing_id=None)
                return

    async def _send_replayed(self, channel: Any, messages: list[dict]) -> None:
        async for message in in_turns(messages):
            if message["type"] == "realtime.postgres_change":
                if channel.bindings:
                    await self._send_change(channel, message)
                continue
            await self.send_stored_broadcast(channel, message)

    async def send_stored_broadcast(self, channel: Any, message: dict, batcher: Any = None) -> None:
        """A broadcast read back from the outbox (replay, catch-up), unless delivered already."""
        if self._delivered_before(channel, message, BROADCAST):
            return
        body = broadcast_for_recipient(message, user_id=channel.user.pk, role=channel.user.role)
        if body is None:
            return
        self._note_target(channel, message)
        self._note_delivered(channel, message, BROADCAST)
        if batcher is None:
            await self._send(push(channel.topic, "broadcast", body))
        else:
            await batcher.add((body, None))

    async def _resync_required(self, channel: Any, replay: Replay, *, first_missing_id: int | None) -> None:
        why = "more were missed than one join replays" if first_missing_id else "the rest could not be read"
        await self._send(
            push(
                channel.topic,
                "system",
                {
                    "extension": "replay",
                    "status": "error",
                    "message": f"resync_required: {replay.sent} events replayed, {why}",
                    "channel": channel.sub_topic,
                    "code": "resync_required",
                    "replayed": replay.sent,
                    "after_id": replay.after_id,
                    "first_missing_id": first_missing_id,
                },
            )
        )

    def watch_layer_resets(self) -> None:
        """Called at connect: regroup this socket when Redis comes back without its data."""
        on_reset = getattr(self.channel_layer, "on_reset", None)
        if on_reset is not None:
            _open_sockets.add(self)
            on_reset(_regroup_open_sockets)

    async def realtime_regroup(self, message: dict) -> None:
        """Redis lost the groups: join them again, then catch up on each topic from the outbox."""
        channels = list(self.channels_joined.values())
        for channel in channels:
            await self.channel_layer.group_add(channel.group, self.channel_name)
        for channel in channels:
            if channel.presence_entry is not None:
                await presence_state.restore(topic=channel.sub_topic, entry=channel.presence_entry)
                await presence_state.publish_diff(channel.sub_topic, joins=[channel.presence_entry], leaves=[])
        for channel in channels:
            after = max(self._delivered_seqs(channel, kind).high for kind in (BROADCAST, CHANGE))
            since = None if after else datetime.fromtimestamp(channel.joined_at, tz=UTC)
            # Up to a short page: whatever is fanned out after that read reaches the socket live
            # (it joined the group first). Reading on until a read finds nothing chased the
            # stream for seconds, with every socket of the process queued on the database thread.
            while after is not None and self.channels_joined.get(channel.topic) is channel:
                page = await _stored_page(
                    channel.claims, channel.sub_topic, after_id=after, since=since, size=CATCH_UP_PAGE
                )
                await self.send_stored(channel, page.messages)
                after = page.last_seq if page.events == page.asked else None
        log.info("socket re-joined %d groups after Redis lost its data", len(channels))

    def forget_replay(self, channel: Any) -> None:
        """A topic was left. Its delivered marks stay (a re-join on this socket still gets nothing
        twice) while the socket remembers few topics; beyond that, those of topics not joined go."""
        delivered = self._pipeline_state()["delivered"]
        if len({topic for topic, _ in delivered}) <= REMEMBERED_TOPICS:
            return
        for key in [key for key in delivered if key[0] not in self.channels_joined]:
            del delivered[key]

    async def handle_delivery_ack(self, channel: Any, message: Message) -> None:
        ids = (message.payload or {}).get("ids") if isinstance(message.payload, dict) else None
        if (
            not isinstance(ids, list)
            or not ids
            or len(ids) > MAX_ACK_IDS
            or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i <= MAX_SEQ for i in ids)
        ):
            await self._reply(
                message,
                "error",
                {"reason": f"InvalidDeliveryAck: ids must be a list of 1 to {MAX_ACK_IDS} event ids"},
            )
            return
        count = await _mark(channel.claims, ids, delivered=True, user_id=channel.user.pk)
        await self._reply(message, "ok", {"delivered": count})
