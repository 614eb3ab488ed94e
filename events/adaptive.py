"""The socket consumer's side of connection profiles: adaptive heartbeat, held-back events, batches.

Mixed into `RealtimeSocket` (events/consumers.py); the rules are in events/profiles.py and
events/batching.py.

- The profile comes from the socket URL at connect and from broadcasts to the reserved topic
  `realtime:connection:profile` (`handle_profile_message`); every change is answered with a
  `system` message (extension `profile`) carrying the profile, the heartbeat interval, the idle
  timeout and the connection quality, and is mirrored to the connection rows.
- Idle timeout and connection-slot lease follow the profile's heartbeat interval.
- A heartbeat later than REALTIME_LATE_HEARTBEAT_FACTOR intervals marks the connection `poor`
  (observed) until the next heartbeat on time. ASGI servers do not expose a socket's send buffer,
  so the gateway cannot observe a write backlog; missed heartbeats are what it sees.
- Held back: a stored event below what the connection's quality admits is not sent; its seq is
  remembered per topic and the socket gets, at most every REALTIME_HELD_NOTICE_SECONDS, a `system`
  message (extension `held_back`) with the count waiting. When the profile or the observed quality
  improves, what is now admitted is sent from the outbox (`meta.replayed: true`), oldest first,
  followed by a `held_back` notice with the new count. Held events stay `pending`/`sent` in the
  outbox, so join-time replay and `GET /api/realtime/poll` find them too.
- Batching: joins that asked for it get a `Batcher`; critical events flush it at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from django.conf import settings

from harry_realtime.auth import TokenError, verify_token
from harry_realtime.socket_db import socket_db
from harry_realtime.tenancy import tenant_context

from . import batching, lifecycle, profiles, selectors
from .delivery import in_turns
from .messages import messages_for
from .protocol import Message, push

log = logging.getLogger(__name__)

PROFILE_SUB_TOPIC = profiles.PROFILE_TOPIC.partition(":")[2]
# Held seqs loaded from the outbox per query when a connection catches up.
CATCH_UP_CHUNK = 500


@socket_db
def _stored_messages(claims: Any, topic: str, seqs: list[int]) -> list[dict]:
    with tenant_context(claims.tenant):
        events = selectors.events_by_seq(seqs)
        return [m for event in events for _, m in messages_for(event, topic=topic, replayed=True)]


class AdaptiveDeliveryMixin:
    """Needs the consumer's `channels_joined`, `slot`, `mirror`, `apikey`, `deadlines_changed`,
    `_send`, `_reply` and the delivery mixin's `_send_change` / `send_stored_broadcast`."""

    def open_profile(self, params: dict[str, list[str]]) -> None:
        self.profile_error: str | None = None
        try:
            self.profile = profiles.profile_from_params(params)
        except profiles.ProfileError as exc:
            # The socket cannot answer before a join: the joins are refused with the reason.
            self.profile = profiles.ConnectionProfile()
            self.profile_error = f"InvalidProfile: {exc.reason}"
        self.observed_quality: str | None = None
        self.profile_join_ref: str | None = None
        self.profile_ack = False
        self.last_heartbeat_at = time.monotonic()
        self.held: dict[str, dict[int, str]] = {}  # topic -> {seq: priority}
        self.held_notice: asyncio.Task | None = None
        self.batchers: dict[str, batching.Batcher] = {}

    # -- heartbeat and idle timeout -------------------------------------------------------------

    def idle_timeout(self) -> float:
        return profiles.idle_timeout_seconds(self.profile)

    def connection_lease(self) -> float:
        """A slot outlives the socket's idle timeout, or a quiet battery-saving phone would lose it."""
        return max(settings.REALTIME_CONNECTION_LEASE_SECONDS, self.idle_timeout() + 30)

    def quality(self) -> str:
        return profiles.effective_quality(self.profile, observed=self.observed_quality)

    async def observe_heartbeat(self) -> None:
        now = time.monotonic()
        gap, self.last_heartbeat_at = now - self.last_heartbeat_at, now
        observed = "poor" if profiles.heartbeat_late(self.profile, gap) else None
        if observed != self.observed_quality:
            self.observed_quality = observed
            await self.catch_up()

    # -- the reserved profile topic -------------------------------------------------------------

    async def handle_profile_message(self, message: Message) -> None:
        if message.event == "phx_join":
            await self._profile_join(message)
        elif message.event == "phx_leave":
            self.profile_join_ref = None
            await self._reply(message, "ok")
        elif message.event == "access_token":
            return  # realtime-js refreshes every channel's token; nothing rides on this one's
        elif message.event == "broadcast" and self.profile_join_ref:
            await self._profile_broadcast(message)
        else:
            await self._reply(message, "error", {"reason": "unmatched topic"})

    async def _profile_join(self, message: Message) -> None:
        """Joining the profile topic is authenticated like any join, but takes no slot or group."""
        body = message.payload if isinstance(message.payload, dict) else {}
        token = body.get("access_token") or ("" if settings.REALTIME_API_KEY else self.apikey)
        try:
            claims = verify_token(token)
            if self.slot is not None and claims.user_id != self.slot.user_id:
                raise TokenError("invalid_token", "this connection belongs to another user")
        except TokenError as exc:
            await self._reply(message, "error", {"reason": f"InvalidJWTToken: {exc.message}"})
            return
        if self.profile_error:
            await self._reply(message, "error", {"reason": self.profile_error})
            return
        config = body.get("config") or {}
        broadcast = (config.get("broadcast") or {}) if isinstance(config, dict) else None
        if not isinstance(broadcast, dict):
            await self._reply(message, "error", {"reason": "InvalidJoinPayload: config.broadcast must be an object"})
            return
        self.profile_join_ref = message.join_ref or message.ref
        self.profile_ack = bool(broadcast.get("ack"))
        await self._reply(message, "ok", self.profile_state())

    async def _profile_broadcast(self, message: Message) -> None:
        body = message.payload if isinstance(message.payload, dict) else {}
        values = body.get("payload")
        if not isinstance(values, dict):
            await self._profile_refused(message, "InvalidProfile: the broadcast payload must be an object")
            return
        try:
            profile = profiles.profile_update(self.profile, values)
        except profiles.ProfileError as exc:
            await self._profile_refused(message, f"InvalidProfile: {exc.reason}")
            return
        await self.profile_changed(profile)
        if self.profile_ack:
            await self._reply(message, "ok", self.profile_state())

    async def _profile_refused(self, message: Message, reason: str) -> None:
        await self._send(self._profile_system("error", reason))
        if self.profile_ack:
            await self._reply(message, "error", {"reason": reason})

    def profile_state(self) -> dict[str, Any]:
        return {
            "profile": self.profile.as_json(),
            "heartbeat_interval_ms": profiles.heartbeat_interval_ms(self.profile),
            "idle_timeout_seconds": self.idle_timeout(),
            "connection_quality": self.quality(),
        }

    def _profile_system(self, status: str, text: str) -> Message:
        body = {"extension": "profile", "status": status, "message": text, "channel": PROFILE_SUB_TOPIC}
        if status == "ok":
            body.update(self.profile_state())
        return push(profiles.PROFILE_TOPIC, "system", body)

    async def profile_changed(self, profile: profiles.ConnectionProfile) -> None:
        self.profile = profile
        self.deadlines_changed.set()  # the idle timeout may have moved
        if self.slot is not None:
            await self.slot.renew(lease=self.connection_lease())
        await self._send(self._profile_system("ok", "profile updated"))
        await self.mirror.profile_changed(profile=profile)
        await self.catch_up()

    async def adopt_connection_profile(self) -> None:
        """A socket bound to its REST connection without a profile of its own takes the one the
        connection was registered with (POST /api/realtime/connect answered its interval)."""
        adopted = self.mirror.take_adopted()
        if adopted is None or adopted == self.profile:
            return
        self.profile = adopted
        self.deadlines_changed.set()
        if self.slot is not None:
            await self.slot.renew(lease=self.connection_lease())
        await self.catch_up()

    # -- joins ----------------------------------------------------------------------------------

    def join_options_error(self, config: dict, sub_topic: str) -> str | None:
        if self.profile_error:
            return self.profile_error
        try:
            batching.batch_rule(config, sub_topic)
        except batching.BatchConfigError as exc:
            return exc.reason
        return None

    def channel_opened(self, channel: Any) -> None:
        rule = batching.batch_rule(channel.config, channel.sub_topic)
        if rule is not None:
            self.batchers[channel.topic] = batching.Batcher(rule, lambda items: self._send_batch(channel, items))

    def channel_closed(self, channel: Any) -> None:
        batcher = self.batchers.pop(channel.topic, None)
        if batcher is not None:
            batcher.discard()
        self.held.pop(channel.topic, None)

    def close_adaptive(self) -> None:
        for batcher in self.batchers.values():
            batcher.discard()
        self.batchers.clear()
        if self.held_notice is not None:
            self.held_notice.cancel()

    # -- live delivery --------------------------------------------------------------------------

    def holds_back(self, channel: Any, message: dict) -> bool:
        """Whether this stored event waits for a better connection (and remember it if so)."""
        seq = (message.get("meta") or {}).get("id")
        priority = message.get("priority") or "medium"
        if seq is None or (message.get("meta") or {}).get("replayed"):
            return False
        if profiles.never_held(priority=priority, event=message.get("event"), sub_topic=channel.sub_topic):
            return False
        if profiles.admits(self.profile, self.quality(), priority):
            return False
        self.held.setdefault(channel.topic, {})[seq] = priority
        if self.held_notice is None or self.held_notice.done():
            self.held_notice = asyncio.get_running_loop().create_task(self._notice_held_later())
        return True

    async def deliver_pipeline_broadcast(self, channel: Any, message: dict) -> None:
        level = self.pipeline_broadcast_level(channel, message)
        if level is None or self.holds_back(channel, message):
            return
        batcher = self.batchers.get(channel.topic)
        if batcher is None:
            await self.send(text_data=self.pipeline_broadcast_frame(channel, message, level))
            lifecycle.delivered(message)
        else:
            urgent = message.get("priority") == "critical" or message.get("event") in profiles.CRITICAL_EVENTS
            await batcher.add((self.pipeline_broadcast_body(channel, message, level), message), urgent=urgent)
        self.mirror.event_delivered()

    async def _send_batch(self, channel: Any, items: list[tuple[dict, dict | None]]) -> None:
        """A flushed batch of (body, live channel-layer message or None for a caught-up event)."""
        if self.channels_joined.get(channel.topic) is not channel:
            return
        bodies = [body for body, _ in items]
        await self._send(
            push(channel.topic, "broadcast", bodies[0] if len(bodies) == 1 else batching.batch_body(bodies))
        )
        for _, message in items:
            if message is not None:
                lifecycle.delivered(message)

    # -- held-back notices and catching up ------------------------------------------------------

    async def _notice_held_later(self) -> None:
        await asyncio.sleep(settings.REALTIME_HELD_NOTICE_SECONDS)
        try:
            await self.notice_held()
        except Exception:  # the socket went away meanwhile: its teardown follows
            log.info("held-back notice not sent", exc_info=True)

    async def notice_held(self) -> None:
        """One `system` message per topic with events waiting (or just caught up)."""
        for topic, held in list(self.held.items()):
            channel = self.channels_joined.get(topic)
            if channel is None:
                continue
            body = {
                "extension": "held_back",
                "status": "ok",
                "message": f"{len(held)} events held back for a {self.quality()} connection",
                "channel": channel.sub_topic,
                "held": len(held),
                "connection_quality": self.quality(),
            }
            if held:
                body["oldest_id"] = min(held)
            await self._send(push(topic, "system", body))
            if not held:
                del self.held[topic]

    async def catch_up(self) -> None:
        """Send what the connection now admits of what was held, oldest first, per topic (after
        any change of profile or observed quality; nothing to do when nothing is admitted)."""
        caught_up = False
        for topic, held in list(self.held.items()):
            channel = self.channels_joined.get(topic)
            quality = self.quality()
            due = sorted(seq for seq, priority in held.items() if profiles.admits(self.profile, quality, priority))
            if channel is None or not due:
                continue
            for start in range(0, len(due), CATCH_UP_CHUNK):
                chunk = due[start : start + CATCH_UP_CHUNK]
                await self.send_stored(channel, await _stored_messages(channel.claims, channel.sub_topic, chunk))
                for seq in chunk:
                    held.pop(seq, None)
            caught_up = True
        if caught_up:
            await self.notice_held()

    async def send_stored(self, channel: Any, messages: list[dict]) -> None:
        batcher = self.batchers.get(channel.topic)
        async for message in in_turns(messages):
            if message["type"] == "realtime.postgres_change":
                if channel.bindings:
                    await self._send_change(channel, message)
                continue
            await self.send_stored_broadcast(channel, message, batcher)
        if batcher is not None:
            await batcher.flush()
