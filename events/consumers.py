"""RealtimeSocket: the Supabase Realtime protocol on `/realtime/v1/websocket` (docs/protocol.md).

One consumer per WebSocket. Every joined topic is a `JoinedChannel` in `self.channels_joined`
(keyed by the full `realtime:` topic) holding what the join established: join_ref, config,
postgres_changes bindings, the user and token claims, the tracked presence. Server-side fan-out
reaches sockets through the channel layer group of a topic (`events.topics.group_name`):

  {"type": "realtime.broadcast", "topic", "event", "payload", "meta", "sender"}  -> broadcast
  {"type": "realtime.presence_diff", "topic", "joins", "leaves"}                 -> presence_diff

Lifecycle points: connect, handle_heartbeat, handle_join (authorize, then complete_join),
handle_leave / leave_channel, handle_track / handle_untrack, handle_access_token,
realtime_tick (idle close and token expiry), disconnect.

Every way a socket ends runs one teardown, `end()`, exactly once: the client's close
(`websocket.disconnect`), a send that fails because the peer is gone (uvicorn raises
`ClientDisconnected`, or `RuntimeError` after the server's own close; `send` turns any failure
into `SocketGone`, which unwinds the handler and stops the consumer), a close during a join or a
replay, the idle timeout, the server's close, a revoked user, and the consumer's task being
cancelled or failing (`__call__`'s `finally`). It releases the connection slot, leaves every
channel-layer group (also of a join still in progress), untracks the tracked presences, cancels
the watchdog and the adaptive-delivery timers and marks the connection rows disconnected.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from harry_realtime.auth import TokenClaims, TokenError, load_user, verify_token
from harry_realtime.socket_db import socket_db
from harry_realtime.tenancy import tenant_context
from presence import state as presence_state
from presence.mirror import PresenceMirror

from . import lifecycle, limits, profiles, revocation
from .adaptive import AdaptiveDeliveryMixin
from .bindings import Binding, BindingError, parse_bindings
from .broadcast_policy import BroadcastRefused, broadcast_check
from .delivery import PipelineDeliveryMixin, Replay, join_unanswered, validate_replay
from .messages import client_broadcast_message
from .protocol import (
    SUPPORTED_VSNS,
    TOPIC_PREFIX,
    VSN_1,
    Message,
    ProtocolError,
    decode_binary,
    decode_text,
    encode,
    payload_size,
    push,
    reply,
)
from .topics import Topic, TopicDenied, authorize_topic, group_name

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_ABNORMAL = 1006  # what a teardown without a close frame is recorded as
# How long after a socket's end messages already sent to its channel may still come in.
INBOX_STRAGGLERS_SECONDS = 2.0


@dataclass
class JoinedChannel:
    """What one successful join established; the unit other parts of the gateway work on."""

    topic: str  # with the `realtime:` prefix, as on the wire
    sub_topic: str  # without it: the topic of events.topics and of the channel layer messages
    join_ref: str | None
    group: str
    config: dict[str, Any]
    bindings: list[Binding]
    user: Any
    claims: TokenClaims
    subject: Topic
    presence_key: str
    presence_entry: dict[str, Any] | None = None
    joined_at: float = field(default_factory=time.time)

    @property
    def broadcast_self(self) -> bool:
        return bool((self.config.get("broadcast") or {}).get("self"))

    @property
    def broadcast_ack(self) -> bool:
        return bool((self.config.get("broadcast") or {}).get("ack"))


class JoinRefused(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class SocketGone(StopConsumer):
    """A send found the peer gone: unwinds the running handler and stops the consumer, whose
    `__call__` then runs the teardown (a StopConsumer ends Channels' dispatch loop cleanly)."""


JOIN_FAILED = "JoinFailed: the server could not complete the join; retry"


@socket_db
def _authorize(claims: TokenClaims, sub_topic: str):
    user = load_user(claims)
    with tenant_context(claims.tenant):
        return user, authorize_topic(user, sub_topic)


class RealtimeSocket(AdaptiveDeliveryMixin, PipelineDeliveryMixin, AsyncWebsocketConsumer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.vsn = VSN_1
        self.apikey = ""
        self.channels_joined: dict[str, JoinedChannel] = {}
        self.slot: limits.ConnectionSlot | None = None
        self.renewal: asyncio.Task | None = None  # the slot's lease renewal in flight
        self.renewed_at = -math.inf  # when a heartbeat last renewed it (monotonic)
        self.rate = limits.message_rate_limiter()
        self.last_frame = time.monotonic()
        self.watchdog: asyncio.Task | None = None
        self.deadlines_changed = asyncio.Event()
        # The join being completed: its group is joined before the channel is registered.
        self.joining: JoinedChannel | None = None
        self.gone = False  # nothing more is sent: the peer went away or the teardown began
        self.teardown: asyncio.Future | None = None  # the one teardown, once begun
        # Keeps realtime_subscriptions / realtime_presence true for this socket (debounced).
        self.mirror = PresenceMirror()
        self.open_profile({})

    # -- connection ---------------------------------------------------------------------------

    async def connect(self) -> None:
        params = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.vsn = params.get("vsn", [VSN_1])[0]
        self.apikey = params.get("apikey", [""])[0]
        if self.vsn not in SUPPORTED_VSNS:
            await self.close()
            return
        if settings.REALTIME_API_KEY and not hmac.compare_digest(
            self.apikey.encode(), settings.REALTIME_API_KEY.encode()
        ):
            await self.close()
            return
        await self.accept()
        lifecycle.opened(self)
        self.open_profile(params)
        self.mirror.opened(websocket_id=self.channel_name, params=params, profile=self.profile)
        presence_state.ensure_liveness()
        self.watch_layer_resets()
        self.watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception:
            log.exception("realtime socket failed")
        finally:
            # Whatever ended the consumer (a failed send, a crash, a cancelled task), the socket's
            # traces go.
            await self.end(CLOSE_ABNORMAL)

    async def disconnect(self, code: int) -> None:
        await self.end(code)

    async def end(self, code: int) -> None:
        """The one teardown of a socket, however it ended; runs once, to the end: a cancelled
        caller (the server gave up waiting, e.g. while Redis stalls) does not cut it short."""
        if self.teardown is None:
            self.gone = True
            self.teardown = asyncio.ensure_future(self._teardown_steps(code))
        await asyncio.shield(self.teardown)

    async def _teardown_steps(self, code: int) -> None:
        """Each step on its own, so that one failing (Redis or the database away) does not keep
        the others from running."""
        steps = [
            ("watchdog", self._stop_watchdog),
            ("revocation", self._forget_revocation),
            ("lifecycle", lambda: lifecycle.closed(self, code)),
            ("adaptive", self._close_adaptive),
        ]
        for channel in [*self.channels_joined.values(), *([self.joining] if self.joining else [])]:
            steps.append((f"leave {channel.topic}", lambda channel=channel: self.drop_channel(channel)))
        steps += [("slot", self._release_slot), ("mirror", self.mirror.closed), ("inbox", self._forget_inbox)]
        for name, step in steps:
            try:
                await step()
            except Exception:
                log.exception("socket teardown step %s failed connection_id=%s", name, self.channel_name)
        self.joining = None

    async def _stop_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()

    async def _forget_revocation(self) -> None:
        revocation.forget(self.channel_name)

    async def _close_adaptive(self) -> None:
        self.close_adaptive()

    async def _forget_inbox(self) -> None:
        """Messages already on their way to this channel when it left its groups would wait in
        the layer's per-process buffer for a reader that never comes: emptied now, dropped when
        the stragglers are in. Not dropped now: the layer's receive for this channel may still be
        waiting on that queue, and channels_redis deletes the entry itself when that receive ends;
        gone by then, its KeyError leaves the layer's shared receive lock held and every socket
        of the process deaf (`make test-faults`, clients cut at once)."""
        buffers = getattr(self.channel_layer, "receive_buffer", None)
        if buffers is not None:
            name = self.channel_name
            queue = buffers.get(name)
            while queue is not None and not queue.empty():
                queue.get_nowait()
            asyncio.get_running_loop().call_later(INBOX_STRAGGLERS_SECONDS, buffers.pop, name, None)

    async def _release_slot(self) -> None:
        if self.renewal is not None:
            # A renewal landing after the release would count the closed socket again.
            await asyncio.wait([self.renewal])
        if self.slot is not None:
            await self.slot.release()
            self.slot = None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.last_frame = time.monotonic()
        frame = text_data if text_data is not None else bytes_data or b""
        if len(frame) > limits.max_frame_bytes():
            log.warning("closing socket: %d byte frame exceeds the limit", len(frame))
            lifecycle.closed_by_server(self, "frame_too_big")
            await self.close(code=CLOSE_TOO_BIG)
            return
        malformed: ProtocolError | None = None
        try:
            message = decode_text(text_data, self.vsn) if text_data is not None else decode_binary(frame)
        except ProtocolError as exc:
            # Counted against the message rate like any frame, so junk cannot flood past it.
            malformed, message = exc, Message(topic=exc.topic or "phoenix", event="unknown", payload=None, ref=exc.ref)
        if not (message.topic == "phoenix" and message.event == "heartbeat") and not self.rate.allow():
            limit = settings.REALTIME_MAX_MESSAGES_PER_SECOND
            await self._reply(
                message,
                "error",
                {"error": "rate_limited", "reason": f"RateLimited: at most {limit} messages per second"},
            )
            return
        if malformed is not None:
            await self._reply(message, "error", {"reason": f"MalformedMessage: {malformed.reason}"})
            return
        started = time.perf_counter()
        try:
            await self.dispatch_message(message)
        except StopConsumer:  # the peer is gone: the teardown follows
            raise
        except Exception:  # one bad message must not take the socket (or the process) down
            log.exception("realtime message failed topic=%r event=%r", message.topic, message.event)
            await self._reply(message, "error", {"reason": "InternalError: the server could not handle this message"})
        lifecycle.message_handled(message.event, time.perf_counter() - started)

    async def dispatch_message(self, message: Message) -> None:
        if message.topic == profiles.PROFILE_TOPIC:
            await self.handle_profile_message(message)
            return
        if message.topic == "phoenix":
            if message.event == "heartbeat":
                await self.handle_heartbeat(message)
            else:
                await self._reply(message, "error", {"reason": "unmatched topic"})
            return
        if message.event == "phx_join":
            await self.handle_join(message)
            return
        channel = self.channels_joined.get(message.topic)
        if channel is None:
            await self._reply(message, "error", {"reason": "unmatched topic"})
            return
        handler = {
            "phx_leave": self.handle_leave,
            "broadcast": self.handle_broadcast,
            "presence": self.handle_presence,
            "access_token": self.handle_access_token,
            "delivery_ack": self.handle_delivery_ack,
        }.get(message.event)
        if handler is None:
            await self._reply(message, "error", {"reason": f"UnknownEvent: {message.event!r}"})
            return
        await handler(channel, message)

    async def handle_heartbeat(self, message: Message) -> None:
        await self._reply(message, "ok")
        lifecycle.heartbeat()
        self._renew_slot_in_background()
        await self.mirror.heartbeat()
        await self.observe_heartbeat()

    def _renew_slot_in_background(self) -> None:
        """Off the heartbeat's path: while Redis stalls (paused, failing over) the socket still
        answers its next heartbeats, or realtime-js would drop it and reconnect, again and again.
        One renewal at a time, at most one per SLOT_RENEW_MIN_SECONDS."""
        if self.slot is None or self.teardown is not None or (self.renewal is not None and not self.renewal.done()):
            return
        if time.monotonic() - self.renewed_at < limits.SLOT_RENEW_MIN_SECONDS:
            return
        self.renewed_at = time.monotonic()
        self.renewal = asyncio.get_running_loop().create_task(self._renew_slot(self.slot))

    async def _renew_slot(self, slot: limits.ConnectionSlot) -> None:
        try:
            await slot.renew(lease=self.connection_lease())
        except Exception:  # the next heartbeat tries again; the lease outlasts several misses
            log.warning("connection slot renewal failed connection_id=%s", self.channel_name, exc_info=True)

    # -- join / leave -------------------------------------------------------------------------

    async def handle_join(self, message: Message) -> None:
        with join_unanswered():
            try:
                channel = await self.authorize_join(message)
            except JoinRefused as refused:
                lifecycle.join_refused(self, message.topic, refused.reason)
                await self._reply(message, "error", {"reason": refused.reason})
                return
            answered = await self.complete_join(message, channel)
        if answered is not None:
            await self.welcome(channel, *answered)

    async def authorize_join(self, message: Message) -> JoinedChannel:
        topic = message.topic
        sub_topic = topic[len(TOPIC_PREFIX) :] if topic.startswith(TOPIC_PREFIX) else ""
        if not sub_topic:
            raise JoinRefused("TopicNameRequired: topics look like realtime:<channel name>")
        payload = message.payload if isinstance(message.payload, dict) else {}
        config = payload.get("config") or {}
        if not isinstance(config, dict):
            raise JoinRefused("InvalidJoinPayload: config must be an object")
        for part in ("broadcast", "presence"):
            if config.get(part) is not None and not isinstance(config[part], dict):
                raise JoinRefused(f"InvalidJoinPayload: config.{part} must be an object")
        presence = config.get("presence") or {}
        if isinstance(presence.get("key"), bool | dict | list):  # strings, and numbers as their text
            raise JoinRefused("InvalidJoinPayload: config.presence.key must be a string")
        if topic not in self.channels_joined and len(self.channels_joined) >= limits.max_channels():
            raise JoinRefused(f"ChannelLimitReached: at most {limits.max_channels()} channels per connection")
        token = payload.get("access_token") or ("" if settings.REALTIME_API_KEY else self.apikey)
        try:
            claims = verify_token(token)
        except TokenError as exc:
            raise JoinRefused(f"InvalidJWTToken: {exc.message}") from None
        if self.slot is not None and claims.user_id != self.slot.user_id:
            raise JoinRefused("InvalidJWTToken: this connection belongs to another user")
        try:
            bindings = parse_bindings(config.get("postgres_changes"))
        except BindingError as exc:
            raise JoinRefused(f"InvalidPostgresChanges: {exc.reason}") from None
        if (replay_error := validate_replay(config)) is not None:
            raise JoinRefused(replay_error)
        if (options_error := self.join_options_error(config, sub_topic)) is not None:
            raise JoinRefused(options_error)
        try:
            user, subject = await _authorize(claims, sub_topic)
        except TokenError as exc:
            raise JoinRefused(f"InvalidJWTToken: {exc.message}") from None
        except TopicDenied as denied:
            raise JoinRefused(denied.reason) from None
        if self.slot is None:
            # Held before it is taken, so that a teardown during the acquisition releases it too.
            self.slot = limits.ConnectionSlot(self.channel_name, claims.user_id, claims.organization_id)
            try:
                await self.slot.acquire(lease=self.connection_lease())
            except limits.ConnectionLimitReached as exc:
                self.slot = None
                raise JoinRefused(exc.reason) from None
            except Exception:
                self.slot = None
                raise
            revocation.watch(
                self.channel_name, user_id=claims.user_id, organization_id=claims.organization_id, role=claims.role
            )
            await lifecycle.authenticated(self)
        return JoinedChannel(
            topic=topic,
            sub_topic=sub_topic,
            join_ref=message.join_ref or message.ref,
            group=group_name(sub_topic),
            config=config,
            bindings=bindings,
            user=user,
            claims=claims,
            subject=subject,
            presence_key=str(presence.get("key") or ""),
        )

    async def complete_join(self, message: Message, channel: JoinedChannel) -> tuple[dict, Replay | None] | None:
        """Answer `ok` only once everything the join needs has succeeded: the channel-layer group
        is joined (before anything is read, so a live event is in the replay or arrives after
        it), the presence state is read and the replay's first page is loaded. Only then is the
        channel registered and the reply sent; a failure before that is a join error the client
        retries, and leaves nothing behind. Returns the presence state and the replay for
        `welcome`, or None when the join failed."""
        previous = self.channels_joined.get(channel.topic)
        if previous is not None:
            # A re-join replaces the old join; its phx_close carries the old join_ref, which the
            # client drops as outdated.
            await self.leave_channel(previous, notify=True)
        self.joining = channel
        try:
            await self.channel_layer.group_add(channel.group, self.channel_name)
            presence = await presence_state.state(channel.sub_topic)
            replay = await self.prepare_replay(channel)
        except Exception:
            log.exception("join of %s failed connection_id=%s", channel.topic, self.channel_name)
            self.joining = None
            try:
                await self.channel_layer.group_discard(channel.group, self.channel_name)
            except Exception:
                log.exception("could not leave the group of a failed join")
            lifecycle.join_refused(self, message.topic, JOIN_FAILED)
            await self._reply(message, "error", {"reason": JOIN_FAILED})
            return None
        self.channels_joined[channel.topic] = channel
        self.joining = None
        self.channel_opened(channel)
        self.deadlines_changed.set()
        await self._reply(message, "ok", {"postgres_changes": [b.echo() for b in channel.bindings]})
        lifecycle.joined(self, message.topic)
        return presence, replay

    async def welcome(self, channel: JoinedChannel, presence: dict, replay: Replay | None) -> None:
        """What follows an answered join: the presence state, the replay and the socket's rows."""
        await self._send(push(channel.topic, "presence_state", presence))
        if channel.bindings:
            await self._system(channel, "postgres_changes", "ok", "Subscribed to PostgreSQL")
        await self.mirror.joined(user=channel.user, topic=channel.sub_topic)
        try:
            await self.adopt_connection_profile()
        except StopConsumer:
            raise
        except Exception:  # the join stands; the profile is taken at the next change
            log.exception("adopting the connection profile failed connection_id=%s", self.channel_name)
        await self.send_replay(channel, replay)

    async def handle_leave(self, channel: JoinedChannel, message: Message) -> None:
        await self._reply(message, "ok")
        await self.leave_channel(channel, notify=True)

    async def leave_channel(self, channel: JoinedChannel, *, notify: bool) -> None:
        await self.drop_channel(channel)
        if notify:
            await self._send(push(channel.topic, "phx_close", {}, join_ref=channel.join_ref))
        await self.mirror.left(topic=channel.sub_topic)

    async def drop_channel(self, channel: JoinedChannel) -> None:
        """What a join established on this process and in Redis goes: the registration, the
        channel-layer group, the tracked presence (its leave is published)."""
        if self.channels_joined.get(channel.topic) is channel:
            del self.channels_joined[channel.topic]
            self.forget_replay(channel)
            self.channel_closed(channel)
        await self.channel_layer.group_discard(channel.group, self.channel_name)
        if channel.presence_entry is not None:
            await self._untrack(channel)

    # -- broadcast ----------------------------------------------------------------------------

    async def handle_broadcast(self, channel: JoinedChannel, message: Message) -> None:
        body = message.payload
        if not isinstance(body, dict) or not isinstance(body.get("event"), str) or not body["event"]:
            await self._reply(message, "error", {"error": "invalid_broadcast", "reason": "broadcast needs an event"})
            return
        payload = body.get("payload")
        if payload_size(payload) > limits.max_payload_bytes():
            await self._reply(
                message,
                "error",
                {
                    "error": "payload_size_exceeded",
                    "reason": f"PayloadTooLarge: at most {limits.max_payload_bytes()} bytes per message",
                },
            )
            return
        try:
            broadcast_check(role=channel.user.role, topic=channel.subject, event=body["event"])
        except BroadcastRefused as refused:
            await self._reply(message, "error", {"error": refused.code, "reason": refused.reason})
            return
        relayed = client_broadcast_message(
            topic=channel.sub_topic,
            event=body["event"],
            payload=payload,
            user_id=channel.user.pk,
            role=channel.user.role,
            sender=self.channel_name,
        )
        await self.channel_layer.group_send(channel.group, relayed)
        if channel.broadcast_ack:
            await self._reply(message, "ok")

    async def realtime_broadcast(self, event: dict[str, Any]) -> None:
        channel = self.channels_joined.get(TOPIC_PREFIX + event["topic"])
        if channel is None:
            return
        if event.get("sender") == self.channel_name and not channel.broadcast_self:
            return
        if "audience" in event:  # from the outbox listener: row rules, FERPA, replay seam, profile
            await self.deliver_pipeline_broadcast(channel, event)
            return
        body = {"type": "broadcast", "event": event["event"], "payload": event.get("payload")}
        if event.get("meta"):
            body["meta"] = event["meta"]
        await self._send(push(channel.topic, "broadcast", body))
        self.mirror.event_delivered()

    # -- presence -----------------------------------------------------------------------------

    async def handle_presence(self, channel: JoinedChannel, message: Message) -> None:
        body = message.payload if isinstance(message.payload, dict) else {}
        if body.get("event") == "track":
            await self.handle_track(channel, message, body.get("payload"))
        elif body.get("event") == "untrack":
            await self.handle_untrack(channel, message)
        else:
            await self._reply(message, "error", {"reason": "UnknownPresenceEvent: use track or untrack"})

    async def handle_track(self, channel: JoinedChannel, message: Message, meta: Any) -> None:
        meta = {} if meta is None else meta
        if not isinstance(meta, dict):
            await self._reply(message, "error", {"reason": "InvalidPresence: the tracked payload must be an object"})
            return
        if payload_size(meta) > limits.max_payload_bytes():
            await self._reply(message, "error", {"error": "payload_size_exceeded", "reason": "PayloadTooLarge"})
            return
        if not channel.presence_key:
            channel.presence_key = presence_state.new_ref()
        entry = await presence_state.track(
            topic=channel.sub_topic,
            presence_key=channel.presence_key,
            meta=meta,
            user_id=channel.claims.user_id,
            organization_id=channel.claims.organization_id,
            connection=self.channel_name,
        )
        previous, channel.presence_entry = channel.presence_entry, entry
        if previous is not None:
            await presence_state.untrack(topic=channel.sub_topic, ref=previous["ref"])
        await self._reply(message, "ok")
        await presence_state.publish_diff(channel.sub_topic, joins=[entry], leaves=[previous] if previous else [])
        await self.mirror.tracked(topic=channel.sub_topic, meta=meta)

    async def handle_untrack(self, channel: JoinedChannel, message: Message) -> None:
        await self._reply(message, "ok")
        if channel.presence_entry is not None:
            await self._untrack(channel)

    async def _untrack(self, channel: JoinedChannel) -> None:
        entry, channel.presence_entry = channel.presence_entry, None
        removed = await presence_state.untrack(topic=channel.sub_topic, ref=entry["ref"])
        if removed is not None:
            await presence_state.publish_diff(channel.sub_topic, joins=[], leaves=[removed])
        await self.mirror.untracked(topic=channel.sub_topic)

    async def realtime_presence_diff(self, event: dict[str, Any]) -> None:
        channel = self.channels_joined.get(TOPIC_PREFIX + event["topic"])
        if channel is not None:
            await self._send(push(channel.topic, "presence_diff", {"joins": event["joins"], "leaves": event["leaves"]}))

    # -- tokens, idle sockets -----------------------------------------------------------------

    async def handle_access_token(self, channel: JoinedChannel, message: Message) -> None:
        body = message.payload if isinstance(message.payload, dict) else {}
        try:
            claims = verify_token(body.get("access_token"))
            if claims.user_id != channel.claims.user_id:
                raise TokenError("invalid_token", "Invalid token: it names another user than this channel's")
        except TokenError as exc:
            await self._system(channel, "system", "error", exc.message)
            await self.leave_channel(channel, notify=True)
            return
        channel.claims = claims
        self.deadlines_changed.set()

    async def realtime_tick(self, event: dict[str, Any]) -> None:
        """Deadlines reached (sent by this socket's own watchdog, so it runs between messages)."""
        if self.gone:  # closed already; the disconnect that runs the teardown is on its way
            return
        if time.monotonic() - self.last_frame >= self.idle_timeout():
            log.info("closing socket silent for %.0f s", time.monotonic() - self.last_frame)
            lifecycle.idle_timeout(self)
            await self.close(code=CLOSE_NORMAL)
            return
        now = time.time()
        for channel in list(self.channels_joined.values()):
            if channel.claims.expires_at <= now:
                ago = int(now - channel.claims.expires_at)
                await self._system(channel, "system", "error", f"Token has expired {ago} seconds ago")
                await self.leave_channel(channel, notify=True)

    async def realtime_revoked(self, event: dict[str, Any]) -> None:
        """The socket's user may no longer sign in (events/revocation.py): end every channel, close."""
        log.info("closing socket: user %s may no longer sign in", self.slot.user_id if self.slot else None)
        for channel in list(self.channels_joined.values()):
            await self._system(channel, "system", "error", "Unauthorized: this account may no longer sign in")
            await self.leave_channel(channel, notify=True)
        await self.close(code=CLOSE_POLICY_VIOLATION)

    def _next_deadline(self) -> float:
        """Seconds until the idle timeout or the earliest token expiry of a joined channel."""
        wait = self.last_frame + self.idle_timeout() - time.monotonic()
        now = time.time()
        for channel in self.channels_joined.values():
            wait = min(wait, channel.claims.expires_at - now)
        return max(0.0, wait)

    async def _watch(self) -> None:
        while not self.gone:
            self.deadlines_changed.clear()
            wait = self._next_deadline()
            if wait > 0:
                try:
                    await asyncio.wait_for(self.deadlines_changed.wait(), timeout=wait)
                    continue
                except TimeoutError:
                    pass
                if self._next_deadline() > 0:
                    continue  # a frame or a new token moved the deadline meanwhile
            try:
                await self.channel_layer.send(self.channel_name, {"type": "realtime.tick"})
            except Exception:  # Redis away: the next round tries again
                log.warning("watchdog tick not sent connection_id=%s", self.channel_name, exc_info=True)
            # Give the consumer time to act on the tick before computing the next deadline.
            await asyncio.sleep(0.5)

    # -- sending ------------------------------------------------------------------------------

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False) -> None:
        """Every frame goes out here. Once the peer is gone nothing more is attempted: the first
        failure (uvicorn's ClientDisconnected, websockets' ConnectionClosed, a send after the
        server's close) marks the socket gone and raises SocketGone, so the handler stops and the
        teardown runs (once) instead of the error escaping the consumer."""
        if self.gone:
            raise SocketGone()
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except Exception as exc:
            self.gone = True
            log.info("socket gone while sending connection_id=%s: %s", self.channel_name, type(exc).__name__)
            raise SocketGone() from exc

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        if self.gone:
            return
        try:
            await super().close(code=code, reason=reason)
        except (OSError, RuntimeError) as exc:  # the peer is gone (ClientDisconnected), or closed already
            log.info("socket gone while closing connection_id=%s: %s", self.channel_name, type(exc).__name__)
        self.gone = True

    async def _send(self, message: Message) -> None:
        await self.send(text_data=encode(message, self.vsn))

    async def _reply(self, request: Message, status: str, response: dict | None = None) -> None:
        await self._send(reply(request, status, response))

    async def _system(self, channel: JoinedChannel, extension: str, status: str, text: str) -> None:
        await self._send(
            push(
                channel.topic,
                "system",
                {"extension": extension, "status": status, "message": text, "channel": channel.sub_topic},
            )
        )
