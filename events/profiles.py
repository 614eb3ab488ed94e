"""Connection profiles: what a device declares about itself, and what the gateway does with it.

A profile is read from the socket URL (`?performance_mode=&battery_level=&network_type=&app_state=
&connection_quality=`, camelCase accepted too, as realtime-js sends its `params`), from
`POST /api/realtime/connect`, and from broadcasts to the reserved topic `realtime:connection:profile`
on a live socket (docs/realtime.md#connection-profiles). Pure rules, no I/O:

- heartbeat interval (spec "adaptiveHeartbeat"): battery below REALTIME_LOW_BATTERY_PERCENT → 300 s,
  background or battery_saver → 120 s, else 25 s;
- idle timeout: as many intervals as REALTIME_IDLE_TIMEOUT_SECONDS is of the foreground one (2.4);
- connection quality: the worse of what the device declares (an `offline` network counts as
  offline) and what the gateway observed (a late heartbeat);
- priority filtering (spec "priorityFiltering"): excellent → all, good → medium and above, poor →
  high and above, offline → critical only; battery_saver lowers a non-critical event's priority by
  one step and high_performance raises it by one (spec "batteryOptimization"), never to critical.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from django.conf import settings

from .domain import PRIORITY_ORDER
from .models import APP_STATES, CONNECTION_QUALITIES, PERFORMANCE_MODES

PROFILE_TOPIC = "realtime:connection:profile"
NETWORK_TYPES = ("wifi", "cellular", "offline")
QUALITIES = tuple(CONNECTION_QUALITIES)  # best first
# The lowest priority each quality admits live.
QUALITY_THRESHOLD = {"excellent": "low", "good": "medium", "poor": "high", "offline": "critical"}
MODE_ADJUSTMENT = {"battery_saver": -1, "standard": 0, "high_performance": 1}
# Broadcast events that are never held back whatever their stored priority (spec: emergency,
# safety, attendance for the marking teacher: on the group's topic and the teacher's own);
# attendance topics are never held either: their sockets are the marking teachers'.
CRITICAL_EVENTS = frozenset({"emergency_alert", "safety_alert"})
ATTENDANCE_EVENTS = frozenset({"attendance_sync", "attendance_update", "attendance_removed"})
NEVER_HELD_TOPIC_KINDS = frozenset({"attendance"})

# (field, accepted names in URL params and update payloads)
_FIELDS = (
    ("performance_mode", ("performance_mode", "performanceMode")),
    ("battery_level", ("battery_level", "batteryLevel")),
    ("network_type", ("network_type", "networkType")),
    ("app_state", ("app_state", "appState")),
    ("connection_quality", ("connection_quality", "connectionQuality")),
)


class ProfileError(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ConnectionProfile:
    performance_mode: str = "standard"
    battery_level: int | None = None
    network_type: str | None = None
    app_state: str = "foreground"
    connection_quality: str | None = None  # declared by the device; None = not declared

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _battery(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ProfileError("battery_level must be an integer from 0 to 100")
    try:
        level = int(value)
    except (TypeError, ValueError):
        raise ProfileError("battery_level must be an integer from 0 to 100") from None
    if not 0 <= level <= 100 or (isinstance(value, float) and value != level):
        raise ProfileError("battery_level must be an integer from 0 to 100")
    return level


def _choice(field: str, value: Any, allowed: tuple[str, ...] | list[str]) -> str:
    if value not in allowed:
        raise ProfileError(f"{field} must be one of {', '.join(allowed)}")
    return value


def _parse(field: str, value: Any) -> Any:
    if field == "battery_level":
        return _battery(value)
    allowed = {
        "performance_mode": PERFORMANCE_MODES,
        "network_type": NETWORK_TYPES,
        "app_state": APP_STATES,
        "connection_quality": QUALITIES,
    }[field]
    return _choice(field, value, allowed)


def profile_update(profile: ConnectionProfile, values: dict[str, Any]) -> ConnectionProfile:
    """`profile` with the fields named in `values` (either spelling) replaced; unknown keys are
    ignored (realtime-js adds its own), bad values raise ProfileError."""
    changes = {}
    for field, names in _FIELDS:
        for name in names:
            if name in values:
                changes[field] = _parse(field, values[name])
    return replace(profile, **changes)


def profile_from_params(params: dict[str, list[str]]) -> ConnectionProfile:
    """The profile a socket URL declares (`parse_qs` output)."""
    values = {name: vals[0] for name, vals in params.items() if vals}
    return profile_update(ConnectionProfile(), values)


def declares_profile(params: dict[str, list[str]]) -> bool:
    """Whether a socket URL names any profile field (else it adopts its REST connection's)."""
    return any(name in params for _, names in _FIELDS for name in names)


ROW_FIELDS = ("performance_mode", "battery_level", "network_type", "app_state", "connection_quality")


def row_fields(profile: ConnectionProfile) -> dict[str, Any]:
    """The realtime_subscriptions columns of a profile, with the heartbeat interval it gets."""
    return {**{f: getattr(profile, f) for f in ROW_FIELDS}, "heartbeat_interval_ms": heartbeat_interval_ms(profile)}


def from_row(row: Any) -> ConnectionProfile:
    values = {f: getattr(row, f) for f in ROW_FIELDS if getattr(row, f) is not None}
    return replace(ConnectionProfile(), **values)


def heartbeat_interval_ms(profile: ConnectionProfile) -> int:
    if profile.battery_level is not None and profile.battery_level < settings.REALTIME_LOW_BATTERY_PERCENT:
        return settings.REALTIME_HEARTBEAT_LOW_BATTERY_MS
    if profile.app_state == "background" or profile.performance_mode == "battery_saver":
        return settings.REALTIME_HEARTBEAT_BACKGROUND_MS
    return settings.REALTIME_HEARTBEAT_INTERVAL_MS


def idle_timeout_seconds(profile: ConnectionProfile) -> float:
    """How long a socket on this profile may stay silent before the gateway closes it: the same
    multiple of its interval as REALTIME_IDLE_TIMEOUT_SECONDS is of the foreground interval
    (60 s / 25 s = 2.4 intervals: 60 s, 288 s, 720 s)."""
    factor = settings.REALTIME_IDLE_TIMEOUT_SECONDS * 1000 / settings.REALTIME_HEARTBEAT_INTERVAL_MS
    return factor * heartbeat_interval_ms(profile) / 1000


def heartbeat_late(profile: ConnectionProfile, gap_seconds: float) -> bool:
    """A heartbeat this long after the previous one says the link is dropping frames."""
    return gap_seconds > settings.REALTIME_LATE_HEARTBEAT_FACTOR * heartbeat_interval_ms(profile) / 1000


def effective_quality(profile: ConnectionProfile, *, observed: str | None = None) -> str:
    declared = "offline" if profile.network_type == "offline" else (profile.connection_quality or "excellent")
    if observed is None:
        return declared
    return max(declared, observed, key=QUALITIES.index)


def never_held(*, priority: str | None, event: str | None, sub_topic: str) -> bool:
    return (
        priority == "critical"
        or event in CRITICAL_EVENTS
        or event in ATTENDANCE_EVENTS
        or sub_topic.partition(":")[0] in NEVER_HELD_TOPIC_KINDS
    )


def admits(profile: ConnectionProfile, quality: str, priority: str) -> bool:
    """Whether an event of `priority` goes out live on a connection of this quality and mode."""
    order = PRIORITY_ORDER[priority]
    if priority != "critical":
        order = min(PRIORITY_ORDER["high"], max(0, order + MODE_ADJUSTMENT[profile.performance_mode]))
    return order >= PRIORITY_ORDER[QUALITY_THRESHOLD[quality]]
