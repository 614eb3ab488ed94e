"""The spec's alert thresholds, evaluated from PostgreSQL and Redis by a beat job, told to each
school's admins as a `system_alert` (socket on `notifications:org_{org}:role_admin`, and push).

The same thresholds are Prometheus rules in docker/prometheus/alerts.yml for operators. Here a
school hears of a breach once when it starts and once when it ends (a recovery notice): the
state of every (rule, school) pair lives in Redis, so any worker may run the job.

Per school: offline sync backlog, outbox backlog. For every school (one pipeline serves all):
listener down, delivery latency, connection drops, heartbeat success. Windowed figures compare
the processes' counters (harry_realtime/kpi.py) with a snapshot at least five minutes old.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from django.db import connection, transaction

from events.models import RealtimeEvent
from school.models import Role, User

from . import kpi
from .tenancy import dangerously_platform_context

log = logging.getLogger("harry.alerts")

SYNC_BACKLOG_MAX = 1000  # pending operations (spec: offlineSyncBacklog)
OUTBOX_BACKLOG_MAX = 100  # due, unprocessed events (spec KPI: backlogSize < 100)
AVERAGE_LATENCY_MAX_SECONDS = 0.5  # spec: latencyDegradation > 500 ms average
CONNECTION_DROPS_MAX = 0.20  # spec: massiveConnectionFailure > 20 % in 5 minutes
HEARTBEAT_SUCCESS_MIN = 0.99  # spec KPI: heartbeatSuccess > 99 %
WINDOW_SECONDS = 300
SNAPSHOT_KEEP_SECONDS = 1800


@dataclass(frozen=True)
class Breach:
    rule: str
    severity: str  # "critical" or "warning"
    message: str
    value: float
    threshold: float


# -- figures ---------------------------------------------------------------------------------

_PER_SCHOOL_SQL = """
SELECT o.id,
  (SELECT count(*) FROM offline_sync_queue q
     WHERE q.organization_id = o.id AND q.sync_status IN ('pending', 'processing')),
  (SELECT count(*) FROM realtime_events e WHERE e.organization_id = o.id AND e.processed_at IS NULL
     AND e.deleted_at IS NULL AND e.scheduled_for <= clock_timestamp())
FROM organizations o
"""


def _school_figures() -> dict[str, tuple[int, int]]:
    with connection.cursor() as cursor:
        cursor.execute(_PER_SCHOOL_SQL)
        return {str(org): (sync, outbox) for org, sync, outbox in cursor.fetchall()}


def _listener_active() -> bool:
    from events.listener import LEADER_LOCK

    from .metrics import LEADER_SQL

    with connection.cursor() as cursor:
        cursor.execute(LEADER_SQL, list(LEADER_LOCK))
        return cursor.fetchone()[0] > 0


def _counters() -> dict[str, float]:
    """The cluster's running totals that the windowed rules compare over time."""
    latency = kpi.histogram_values("harry_delivery_latency_seconds").values()
    disconnects = kpi.counter_values("harry_websocket_disconnects_total")
    heartbeats = kpi.counter_values("harry_heartbeats_total")
    return {
        "latency_sum": sum(s.sum for s in latency),
        "latency_count": sum(s.count for s in latency),
        "disconnects": sum(disconnects.values()),
        "drops": sum(v for (reason,), v in disconnects.items() if reason != "client"),
        "heartbeats_ok": heartbeats.get(("ok",), 0.0),
        "heartbeats_missed": heartbeats.get(("missed",), 0.0),
    }


def _window(now: float, current: dict[str, float]) -> dict[str, float]:
    """The change of each counter since the newest snapshot at least WINDOW_SECONDS old (or the
    oldest one while the history is shorter); stores the current one for later runs."""
    client = kpi.redis_client()
    key = kpi.redis_key("alert_snapshots")
    client.zremrangebyscore(key, "-inf", now - SNAPSHOT_KEEP_SECONDS)
    older = client.zrevrangebyscore(key, now - WINDOW_SECONDS, "-inf", start=0, num=1) or client.zrange(key, 0, 0)
    client.zadd(key, {json.dumps({"at": now, **current}): now})
    base = json.loads(older[0]) if older else current
    return {name: current[name] - base.get(name, 0.0) for name in current}


def _cluster_breaches(delta: dict[str, float], listener_active: bool, open_connections: int) -> list[Breach]:
    breaches = []
    if not listener_active:
        breaches.append(Breach("listener_down", "critical", "No realtime listener is running.", 0, 1))
    if delta["latency_count"] > 0:
        average = delta["latency_sum"] / delta["latency_count"]
        if average > AVERAGE_LATENCY_MAX_SECONDS:
            text = f"Realtime deliveries take {average * 1000:.0f} ms on average (limit 500 ms)."
            breaches.append(Breach("delivery_latency", "warning", text, average, AVERAGE_LATENCY_MAX_SECONDS))
    if delta["disconnects"] > 0:
        ratio = delta["drops"] / max(open_connections + delta["disconnects"], 1)
        if ratio > CONNECTION_DROPS_MAX:
            text = f"{ratio:.0%} of connections dropped in the last 5 minutes (limit 20%)."
            breaches.append(Breach("connection_drops", "critical", text, ratio, CONNECTION_DROPS_MAX))
    beats = delta["heartbeats_ok"] + delta["heartbeats_missed"]
    if beats > 0 and delta["heartbeats_ok"] / beats < HEARTBEAT_SUCCESS_MIN:
        success = delta["heartbeats_ok"] / beats
        text = f"Only {success:.1%} of heartbeats succeeded in the last 5 minutes (target 99%)."
        breaches.append(Breach("heartbeat_success", "warning", text, success, HEARTBEAT_SUCCESS_MIN))
    return breaches


def _school_breaches(sync_backlog: int, outbox_backlog: int) -> list[Breach]:
    breaches = []
    if sync_backlog > SYNC_BACKLOG_MAX:
        text = f"{sync_backlog} offline sync operations are waiting (limit 1,000)."
        breaches.append(Breach("sync_backlog", "warning", text, sync_backlog, SYNC_BACKLOG_MAX))
    if outbox_backlog > OUTBOX_BACKLOG_MAX:
        text = f"{outbox_backlog} realtime events wait to be sent (limit 100)."
        breaches.append(Breach("outbox_backlog", "warning", text, outbox_backlog, OUTBOX_BACKLOG_MAX))
    return breaches


# -- notices ---------------------------------------------------------------------------------


def system_alert_raise(*, organization_id: str, breach: Breach, state: str) -> RealtimeEvent:
    """Platform context: a `system_alert` to the school's admins, on their socket topic and as a
    push. `state` is "firing" or "resolved"."""
    from notifications.from_events import push_notification_create_for_event

    resolved = state == "resolved"
    message = f"Resolved: {breach.message}" if resolved else breach.message
    event = RealtimeEvent.objects.create(
        organization_id=organization_id,
        event_type="system_announcement",
        event_category="system",
        priority="high" if resolved or breach.severity == "warning" else "critical",
        event_payload={
            "type": "system_alert",
            "rule": breach.rule,
            "state": state,
            "severity": breach.severity,
            "message": message,
            "value": breach.value,
            "threshold": breach.threshold,
        },
        event_metadata={"event": "system_alert", "topics": [f"notifications:org_{organization_id}:role_admin"]},
        broadcast_scope="organization",
        delivery_method=["push_notification", "websocket"],
    )
    admins = User.objects.filter(organization_id=organization_id, role=Role.ADMIN, is_active=True)
    push_notification_create_for_event(event=event, offline_user_ids=list(admins.values_list("pk", flat=True)))
    kpi.inc("harry_system_alerts_total", rule=breach.rule, state=state)
    log.warning(
        "system alert %s %s",
        breach.rule,
        state,
        extra={"event": "system_alert", "rule": breach.rule, "state": state, "organization_id": organization_id},
    )
    return event


def _notify_changes(current: dict[tuple[str, str], Breach], schools: set[str]) -> dict[str, int]:
    """Compare this run's breaches with the stored state; tell schools of starts and ends. The
    state changes in Redis once the notices are committed."""
    client = kpi.redis_client()
    key = kpi.redis_key("alert_state")
    stored = {field.decode(): json.loads(value) for field, value in client.hgetall(key).items()}
    started = {f"{rule}|{org}": breach for (rule, org), breach in current.items() if f"{rule}|{org}" not in stored}
    ended = [field for field in stored if tuple(field.split("|", 1)) not in current]
    for field, breach in started.items():
        system_alert_raise(organization_id=field.split("|", 1)[1], breach=breach, state="firing")
    for field in ended:
        org = field.split("|", 1)[1]
        if org in schools:  # a school deleted meanwhile has nobody to tell
            system_alert_raise(organization_id=org, breach=Breach(**stored[field]), state="resolved")

    def remember() -> None:
        if started:
            client.hset(key, mapping={field: json.dumps(breach.__dict__) for field, breach in started.items()})
        if ended:
            client.hdel(key, *ended)

    transaction.on_commit(remember)
    return {"firing": len(started), "resolved": len(ended)}


@transaction.atomic
def alerts_evaluate(*, now: float | None = None) -> dict[str, int]:
    """The beat job's work: evaluate every threshold; notify starts and ends of breaches."""
    now = now or time.time()
    kpi.flush()
    with dangerously_platform_context():
        schools = _school_figures()
        delta = _window(now, _counters())
        shared = _cluster_breaches(delta, _listener_active(), kpi.open_connections())
        current: dict[tuple[str, str], Breach] = {}
        for org, (sync_backlog, outbox_backlog) in schools.items():
            for breach in [*shared, *_school_breaches(sync_backlog, outbox_backlog)]:
                current[(breach.rule, org)] = breach
        return _notify_changes(current, set(schools))
