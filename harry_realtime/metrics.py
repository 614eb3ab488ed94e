"""`GET /metrics`: Prometheus text format, for operators: the spec's KPIs (docs/operations.md).

Every figure is read from PostgreSQL and Redis at scrape time, so it is the same whichever web
process answers and however many there are: table figures from the rows, and the processes'
counters and histograms (deliveries, connections, heartbeats, request times, channel-layer
drops) from the sums they add to Redis (harry_realtime/kpi.py). The reads span all schools,
hence the platform context; the numbers are aggregates and carry no rows.

Access: with METRICS_TOKEN set, `Authorization: Bearer <token>` is required; without it only
loopback clients are answered, so a default deployment does not publish its figures.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from harry_realtime import kpi
from harry_realtime.health import redis_ok
from harry_realtime.tenancy import dangerously_platform_context

LOOPBACK = {"127.0.0.1", "::1"}

# (metric, help, SQL returning (label value, count) rows)
STATUS_COUNTS = [
    (
        "harry_realtime_events",
        "realtime_events of the last 24 hours by delivery_status.",
        "SELECT delivery_status, count(*) FROM realtime_events"
        " WHERE created_at > now() - interval '24 hours' GROUP BY 1",
    ),
    (
        "harry_sync_operations",
        "offline_sync_queue operations by sync_status.",
        "SELECT sync_status, count(*) FROM offline_sync_queue GROUP BY 1",
    ),
    (
        "harry_push_notifications",
        "push_notifications by delivery_status.",
        "SELECT delivery_status, count(*) FROM push_notifications GROUP BY 1",
    ),
    (
        "harry_realtime_connections",
        "realtime_subscriptions by connection_status.",
        "SELECT connection_status, count(*) FROM realtime_subscriptions GROUP BY 1",
    ),
    (
        "harry_presence",
        "realtime_presence rows by status.",
        "SELECT status, count(*) FROM realtime_presence GROUP BY 1",
    ),
]

OUTBOX_SQL = (
    "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(scheduled_for)), 0)"
    " FROM realtime_events WHERE processed_at IS NULL AND scheduled_for <= clock_timestamp() AND deleted_at IS NULL"
)
# The listener holds a two-key advisory lock while it leads (events/listener.py LEADER_LOCK).
# Advisory locks are server-wide; the lock's `database` column says whose it is.
LEADER_SQL = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
# (metric, help, SQL returning (label values..., count) rows, label names): the last 24 hours.
WINDOWED_COUNTS = [
    (
        "harry_push_deliveries_24h",
        "push_deliveries updated in the last 24 hours by provider and status (delivery rate per provider).",
        "SELECT coalesce(nullif(provider, ''), 'none'), status, count(*) FROM push_deliveries"
        " WHERE updated_at > now() - interval '24 hours' GROUP BY 1, 2",
        ["provider", "status"],
    ),
    (
        "harry_sync_operations_24h",
        "offline_sync_queue operations uploaded in the last 24 hours by sync_status, and how many had a conflict.",
        "SELECT sync_status, conflict_detected::text, count(*) FROM offline_sync_queue"
        " WHERE created_at > now() - interval '24 hours' GROUP BY 1, 2",
        ["status", "conflict"],
    ),
]


class DatabaseCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        from events.listener import LEADER_LOCK

        families = []
        with dangerously_platform_context(), connection.cursor() as cursor:
            for name, help_text, sql in STATUS_COUNTS:
                family = GaugeMetricFamily(name, help_text, labels=["status"])
                cursor.execute(sql)
                for status, count in cursor.fetchall():
                    family.add_metric([status or "unknown"], count)
                families.append(family)
            for name, help_text, sql, labels in WINDOWED_COUNTS:
                family = GaugeMetricFamily(name, help_text, labels=labels)
                cursor.execute(sql)
                for *values, count in cursor.fetchall():
                    family.add_metric([str(v) for v in values], count)
                families.append(family)
            cursor.execute(OUTBOX_SQL)
            backlog, oldest_seconds = cursor.fetchone()
            cursor.execute(LEADER_SQL, list(LEADER_LOCK))
            (leaders,) = cursor.fetchone()
        yield from families
        yield GaugeMetricFamily(
            "harry_outbox_backlog", "Due realtime_events not yet fanned out by the listener.", value=backlog
        )
        yield GaugeMetricFamily(
            "harry_outbox_oldest_seconds",
            "Age of the oldest due, unprocessed realtime_event (listener lag).",
            value=float(oldest_seconds),
        )
        yield GaugeMetricFamily(
            "harry_listener_active", "1 when a listener holds this database's leader lock.", value=leaders
        )


class RedisCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        up, _ = redis_ok()
        yield GaugeMetricFamily("harry_redis_up", "1 when Redis answers a PING.", value=int(up))
        if not up:
            return
        yield GaugeMetricFamily(
            "harry_websocket_connections",
            "Authenticated sockets now (each holds a connection slot from its first join; crashed servers' lapse).",
            value=kpi.open_connections(),
        )
        for metric in kpi.METRICS.values():
            if metric.kind == "counter":
                family = CounterMetricFamily(metric.name.removesuffix("_total"), metric.help, labels=metric.labels)
                for labels, value in sorted(kpi.counter_values(metric.name).items()):
                    family.add_metric(list(labels), value)
            else:
                family = HistogramMetricFamily(metric.name, metric.help, labels=metric.labels)
                bounds = [*(str(b) for b in metric.buckets), "+Inf"]
                for labels, series in sorted(kpi.histogram_values(metric.name).items()):
                    family.add_metric(list(labels), list(zip(bounds, series.buckets, strict=True)), series.sum)
            yield family


def pipeline_figures() -> dict:
    """Listener and outbox backlog as the caller's context sees them: the staff board asks inside
    a school's context (row-level security counts that school's events), operators across all."""
    from events.listener import LEADER_LOCK

    with connection.cursor() as cursor:
        cursor.execute(LEADER_SQL, list(LEADER_LOCK))
        (leaders,) = cursor.fetchone()
        cursor.execute(OUTBOX_SQL)
        backlog, oldest_seconds = cursor.fetchone()
    return {"listenerActive": leaders > 0, "backlog": backlog, "oldestSeconds": round(float(oldest_seconds), 1)}


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    registry.register(RedisCollector())
    return registry


def _allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if not token:
        return request.META.get("REMOTE_ADDR") in LOOPBACK
    offered = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(offered.encode(), token.encode())


def metrics(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return JsonResponse(
            {"error": {"code": "metrics_forbidden", "message": "Metrics need the METRICS_TOKEN bearer token."}},
            status=403,
        )
    kpi.flush()  # this process's last second, so a scrape right after an event sees it
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
