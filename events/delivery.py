"""The pipeline's side of the socket consumer: stored events reaching one WebSocket.

Mixed into `RealtimeSocket` (events/consumers.py):
- `realtime_batch`: several of the listener's messages for one topic in one channel-layer message,
  handled one by one in order.
- `realtime_postgres_change`: a captured row change becomes a `postgres_changes` push for the
  join's matching bindings, only when the row is the user's to see, FERPA-filtered for them.
  The listener folds the change's broadcast into the same message (key `broadcast`), which is
  delivered first, as if it had come on its own.
- `pipeline_broadcast_frame`: the listener's broadcasts (they carry an `audience`) get the same
  row rules and FERPA filter; events already sent by join-time replay are dropped. What the
  filter yields per access level is built once per process and message (`_shared`).
- `prepare_replay` / `send_replay`: `config.broadcast.replay = {since: <ms epoch>, limit: <n <= 1000>}` (and, as an
  extension, `after_id: <seq>`) sends the topic's stored events before any live one, each with
  `meta.id` = seq and `meta.replayed: true`. The consumer handles one message at a time and joins
  the topic group before reading, so a live event is either in the replay (and dropped when it
  arrives live) or arrives after it: no gap, no duplicate at the seam.
- `handle_delivery_ack`: the client acknowledgement. Event `delivery_ack` on a joined topic with
  payload `{"ids": [<meta.id>, ...]}` (at most 500) marks those events `delivered`; the reply is
  `{"status": "ok", "response": {"delivered": <count>}}`. realtime-js sends it with
  `channel.send({type: 'delivery_ack', ids})` (or any Phoenix client with a custom event).
- Reaching the socket of an event's target user marks it `sent` (batched, off the delivery path).
- `dispatch`: the fan-out messages (`realtime.postgres_change`, `realtime.broadcast`) skip
  Channels' per-message `aclose_old_connections()`, a thread-pool round trip for every message
  to every socket; their handlers touch no database connection (the `sent` marking goes
  through `database_sync_to_async`, which closes old connections itself).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async

from harry_realtime.tenancy import tenant_context

from . import ferpa, lifecycle, selectors
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
SENT_FLUSH_SECONDS = 0.2
# Channel-layer message types whose handlers never use a database connection on the loop.
DB_FREE_MESSAGES = frozenset({"realtime.postgres_change", "realtime.broadcast", "realtime.batch"})


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


def validate_replay(config: dict) -> str | None:
    """Why a join's replay request is refused, or None when it is absent or valid."""
    replay = _replay_config(config)
    if replay is None:
        return None
    since, limit, after = replay.get("since"), replay.get("limit", 100), replay.get("after_id")
    if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
        return "InvalidReplay: since must be a time in milliseconds since the epoch"
    if after is not None and (not isinstance(after, int) or isinstance(after, bool) or after < 0):
        return "InvalidReplay: after_id must be an event id"
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= selectors.REPLAY_MAX:
        return f"InvalidReplay: limit must be between 1 and {selectors.REPLAY_MAX}"
    if since is None and after is None:
        return "InvalidReplay: give since (ms) or after_id"
    return None


@database_sync_to_async
def _replayed_messages(claims: Any, user: Any, topic: str, replay: dict) -> list[dict]:
    with tenant_context(claims.tenant):
        events = selectors.replay_events(
            user,
            topic=topic,
            since_ms=replay.get("since"),
            after_id=replay.get("after_id"),
            limit=replay.get("limit", 100),
        )
        return [m for event in events for _, m in messages_for(event, topic=topic, replayed=True)]


@database_sync_to_async
def _mark(claims: Any, seqs: list[int], *, delivered: bool, user_id: Any = None) -> int:
    with tenant_context(claims.tenant):
        if delivered:
            return events_mark_delivered(user_id=user_id, seqs=seqs)
        return events_mark_sent(seqs)


class PipelineDeliveryMixin:
    """Needs the consumer's `channels_joined`, `_send`, `_reply` and `mirror`."""

    async def dispatch(self, message: dict) -> None:
        if message.get("type") in DB_FREE_MESSAGES:
            handler = getattr(self, message["type"].replace(".", "_"))
            await handler(message)
            return
        await super().dispatch(message)

    def _pipeline_state(self) -> dict:
        if not hasattr(self, "_pipeline"):
            self._pipeline = {"replayed": {}, "sent": set(), "flush": None, "claims": None}
        return self._pipeline

    def _already_replayed(self, channel: Any, meta: dict | None) -> bool:
        seq = (meta or {}).get("id")
        replayed = self._pipeline_state()["replayed"].get(channel.topic)
        return bool(replayed and seq in replayed and not meta.get("replayed"))

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
        not be sent (not theirs, or already sent by join-time replay)."""
        if self._already_replayed(channel, message.get("meta")):
            return None
        return broadcast_access(message, user_id=channel.user.pk, role=channel.user.role)

    def pipeline_broadcast_body(self, channel: Any, message: dict, level: str) -> dict:
        self._note_target(channel, message)
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
        if channel is None or not channel.bindings or self._already_replayed(channel, message.get("meta")):
            return
        await self._send_change(channel, message)

    async def _send_change(self, channel: Any, message: dict) -> None:
        user = channel.user
        access = postgres_change_access(
            message, user_id=user.pk, role=user.role, organization_id=user.organization_id, bindings=channel.bindings
        )
        if access is None or self.holds_back(channel, message):
            return
        ids, level = access
        # The binding ids are this socket's own; the filtered row is the same for its access level.
        data = _shared(message, ("change data", level), lambda: ferpa.filter_change(message["data"], level))
        await self._send(push(channel.topic, "postgres_changes", postgres_change_body(message, ids, data)))
        lifecycle.delivered(message)
        self._note_target(channel, message)
        self.mirror.event_delivered()

    async def prepare_replay(self, channel: Any) -> list[dict] | None:
        """The join's replay, read before the join is answered (a failure here fails the join);
        None when the join asked for none."""
        replay = _replay_config(channel.config)
        if replay is None:
            return None
        messages = await _replayed_messages(channel.claims, channel.user, channel.sub_topic, replay)
        self._pipeline_state()["replayed"][channel.topic] = {m["meta"]["id"] for m in messages}
        return messages

    async def send_replay(self, channel: Any, messages: list[dict] | None) -> None:
        for message in messages or []:
            if message["type"] == "realtime.postgres_change":
                if channel.bindings:
                    await self._send_change(channel, message)
                continue
            body = broadcast_for_recipient(message, user_id=channel.user.pk, role=channel.user.role)
            if body is not None:
                await self._send(push(channel.topic, "broadcast", body))
                self._note_target(channel, message)

    def forget_replay(self, channel: Any) -> None:
        self._pipeline_state()["replayed"].pop(channel.topic, None)

    async def handle_delivery_ack(self, channel: Any, message: Message) -> None:
        ids = (message.payload or {}).get("ids") if isinstance(message.payload, dict) else None
        if (
            not isinstance(ids, list)
            or not ids
            or len(ids) > MAX_ACK_IDS
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        ):
            await self._reply(
                message,
                "error",
                {"reason": f"InvalidDeliveryAck: ids must be a list of 1 to {MAX_ACK_IDS} event ids"},
            )
            return
        count = await _mark(channel.claims, ids, delivered=True, user_id=channel.user.pk)
        await self._reply(message, "ok", {"delivered": count})
