"""A socket's life as operators see it: one structured log line per lifecycle event (opened,
authenticated, joined or refused, closed) and the connection KPIs (harry_realtime/kpi.py).

Log lines carry the connection id (the channel name), the user and organization once known, and
never the query string or a token. Called by `RealtimeSocket` (events/consumers.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from harry_realtime import kpi
from harry_realtime.rediskeys import key

from . import limits

log = logging.getLogger("harry.socket")

NORMAL_CLOSE_CODES = {1000, 1001}
# A client that reconnects within this time after its socket closed counts as a reconnect.
RECONNECT_WINDOW_SECONDS = 300
MESSAGE_EVENTS = {"heartbeat", "phx_join", "phx_leave", "broadcast", "presence", "access_token", "delivery_ack"}


def _ids(socket: Any) -> dict[str, Any]:
    slot = getattr(socket, "slot", None)
    return {
        "connection_id": socket.channel_name,
        "user_id": slot.user_id if slot else None,
        "organization_id": slot.organization_id if slot else None,
    }


def opened(socket: Any) -> None:
    socket.opened_at = time.monotonic()
    log.info("socket opened", extra={"event": "socket_opened", "vsn": socket.vsn, **_ids(socket)})


async def authenticated(socket: Any) -> None:
    """The socket's first join took a connection slot: from here on it counts as a connection."""
    recent = key("recent_close", str(socket.slot.user_id))
    reconnect = bool(await limits.redis_client().delete(recent))
    kpi.inc("harry_websocket_connects_total", kind="reconnect" if reconnect else "new")
    log.info("socket authenticated", extra={"event": "socket_authenticated", "reconnect": reconnect, **_ids(socket)})


def joined(socket: Any, topic: str) -> None:
    log.info("channel joined", extra={"event": "channel_joined", "topic": topic, **_ids(socket)})


def join_refused(socket: Any, topic: str, reason: str) -> None:
    log.info(
        "join refused", extra={"event": "join_refused", "topic": topic, "reason": reason.split(":")[0], **_ids(socket)}
    )


def heartbeat() -> None:
    kpi.inc("harry_heartbeats_total", outcome="ok")


def idle_timeout(socket: Any) -> None:
    socket.close_reason = "idle_timeout"
    kpi.inc("harry_heartbeats_total", outcome="missed")


def closed_by_server(socket: Any, reason: str) -> None:
    socket.close_reason = reason


async def closed(socket: Any, code: int) -> None:
    reason = getattr(socket, "close_reason", None) or ("client" if code in NORMAL_CLOSE_CODES else "dropped")
    ids = _ids(socket)
    if socket.slot is not None:
        kpi.inc("harry_websocket_disconnects_total", reason=reason)
        await limits.redis_client().set(key("recent_close", str(socket.slot.user_id)), "1", ex=RECONNECT_WINDOW_SECONDS)
    seconds = time.monotonic() - getattr(socket, "opened_at", time.monotonic())
    log.info(
        "socket closed",
        extra={"event": "socket_closed", "code": code, "reason": reason, "duration_s": round(seconds, 3), **ids},
    )


def message_handled(event: str, seconds: float) -> None:
    kpi.observe(
        "harry_websocket_message_duration_seconds", seconds, event=event if event in MESSAGE_EVENTS else "other"
    )


def delivered(message: dict) -> None:
    """A live pipeline event reached this socket: its latency from write (or due time) to send."""
    due = message.get("due_ts")
    if due is not None:
        kpi.observe("harry_delivery_latency_seconds", time.time() - due, priority=message.get("priority") or "medium")
