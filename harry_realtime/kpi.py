"""Counters and histograms of what happens in the processes (socket deliveries, connections,
heartbeats, request times, channel-layer drops), shared through Redis.

Every process adds its observations to an in-memory buffer; a daemon thread adds the buffer to
Redis hashes once a second (HINCRBYFLOAT, so any number of processes sum up). `/metrics`
(harry_realtime/metrics.py) reads the sums, so every web process answers with the same
cluster-wide figures. A process that dies loses at most its last second of observations.

Recording is a dict update under a lock: cheap enough for the fan-out path (thousands of
deliveries a second per process), which must not wait on Redis.
"""

from __future__ import annotations

import atexit
import bisect
import json
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import redis
from django.conf import settings

from harry_realtime import redis_conn
from harry_realtime.rediskeys import key

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FLUSH_SECONDS = 1.0
# Histograms also kept per minute (for 15 minutes), so that the staff board can show recent ones.
PER_MINUTE = {"harry_delivery_latency_seconds"}
PER_MINUTE_KEEP_SECONDS = 900


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # "counter" or "histogram"
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = LATENCY_BUCKETS


METRICS = {
    m.name: m
    for m in (
        Metric(
            "harry_delivery_latency_seconds",
            "histogram",
            "Database write (or its scheduled time) to the frame sent on a socket, live deliveries only.",
            ("priority",),
        ),
        Metric(
            "harry_websocket_connects_total",
            "counter",
            "Sockets accepted; kind=reconnect when the same user's socket closed in the last 5 minutes.",
            ("kind",),
        ),
        Metric(
            "harry_websocket_disconnects_total",
            "counter",
            "Sockets closed, by reason: client (normal close by the client), idle_timeout (no heartbeat), "
            "dropped (abnormal close, e.g. network loss), server (closed by the server for a limit).",
            ("reason",),
        ),
        Metric(
            "harry_heartbeats_total",
            "counter",
            "Heartbeats answered (ok) and sockets closed for a missing heartbeat (missed).",
            ("outcome",),
        ),
        Metric(
            "harry_channel_layer_dropped_total",
            "counter",
            "Channel-layer messages not queued because the receiving channel was over capacity.",
            ("source",),
        ),
        Metric(
            "harry_listener_recoveries_total",
            "counter",
            "Listener sessions ended by a fault and started again, by cause: database, redis, network, unexpected.",
            ("cause",),
        ),
        Metric(
            "harry_http_request_duration_seconds",
            "histogram",
            "HTTP request handling time by route pattern, method and status class.",
            ("route", "method", "status"),
        ),
        Metric(
            "harry_websocket_message_duration_seconds",
            "histogram",
            "Time to handle one client frame on a socket, by event.",
            ("event",),
        ),
        Metric(
            "harry_system_alerts_total",
            "counter",
            "system_alert notices raised by the alert job, by rule and state (firing, resolved).",
            ("rule", "state"),
        ),
    )
}


class _Buffer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.thread: threading.Thread | None = None

    def add(self, name: str, amounts: dict[str, float]) -> None:
        with self.lock:
            fields = self.values[name]
            for field, amount in amounts.items():
                fields[field] += amount
            if self.thread is None:
                self.thread = threading.Thread(target=_flush_loop, name="kpi-flush", daemon=True)
                self.thread.start()

    def take(self) -> dict[str, dict[str, float]]:
        with self.lock:
            values, self.values = self.values, defaultdict(lambda: defaultdict(float))
        return values


_buffer = _Buffer()
_clients: dict[str, redis.Redis] = {}


def redis_client() -> redis.Redis:
    url = settings.REDIS_URL
    if url not in _clients:
        _clients[url] = redis_conn.sync_client(socket_timeout=5, socket_connect_timeout=2)
    return _clients[url]


def redis_key(name: str) -> str:
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"].get("prefix", "harry")
    return f"{prefix}:kpi:{name}"


def _labels(metric: Metric, labels: dict[str, str]) -> str:
    return json.dumps([str(labels.get(label, "")) for label in metric.labels])


def inc(name: str, amount: float = 1, **labels: str) -> None:
    _buffer.add(name, {_labels(METRICS[name], labels): amount})


def observe(name: str, seconds: float, **labels: str) -> None:
    metric = METRICS[name]
    key = _labels(metric, labels)
    index = bisect.bisect_left(metric.buckets, seconds)  # the first bucket with le >= seconds
    _buffer.add(name, {f"{key}|b{index}": 1, f"{key}|sum": seconds, f"{key}|count": 1})


def flush() -> None:
    """Add this process's buffered observations to Redis now."""
    values = _buffer.take()
    if not values:
        return
    minute = int(time.time() // 60)
    try:
        pipe = redis_client().pipeline(transaction=False)
        for name, fields in values.items():
            keys = [redis_key(name)]
            if name in PER_MINUTE:
                keys.append(f"{redis_key(name)}@{minute}")
                pipe.expire(keys[-1], PER_MINUTE_KEEP_SECONDS)
            for key in keys:
                for field, amount in fields.items():
                    pipe.hincrbyfloat(key, field, amount)
        pipe.execute()
    except redis.RedisError:
        # Observations are lost while Redis is down; the next flush starts afresh.
        log.warning("could not add %d metric series to Redis", sum(len(f) for f in values.values()))


_stopping = threading.Event()


def _flush_loop() -> None:
    while not _stopping.wait(FLUSH_SECONDS):
        try:
            flush()
        except Exception:  # the thread must outlive any one failure
            log.exception("metric flush failed")


@atexit.register
def _stop_flushing() -> None:
    """At exit: the last flush, then the clients closed. A daemon thread stopped at exit in the
    middle of a flush would keep its client's pool lock, and the client's finaliser would then wait
    for that lock for ever (the process never ends)."""
    _stopping.set()
    thread = _buffer.thread
    if thread is not None:
        thread.join(timeout=FLUSH_SECONDS + 6)
    flush()
    for client in _clients.values():
        client.close()


def read(name: str) -> dict[str, float]:
    """The cluster-wide sums of one metric's fields, as stored in Redis."""
    raw = redis_client().hgetall(redis_key(name))
    return {field.decode(): float(value) for field, value in raw.items()}


def counter_values(name: str) -> dict[tuple[str, ...], float]:
    return {tuple(json.loads(field)): value for field, value in read(name).items()}


@dataclass
class HistogramSeries:
    buckets: list[float]  # cumulative counts per bucket, then +Inf
    sum: float
    count: float


def histogram_values(name: str) -> dict[tuple[str, ...], HistogramSeries]:
    return _series(METRICS[name], read(name))


def recent_histogram(name: str, *, minutes: int) -> HistogramSeries | None:
    """All label sets of a PER_MINUTE histogram together, over the last `minutes` minutes."""
    now = int(time.time() // 60)
    pipe = redis_client().pipeline(transaction=False)
    for minute in range(now - minutes + 1, now + 1):
        pipe.hgetall(f"{redis_key(name)}@{minute}")
    fields: dict[str, float] = defaultdict(float)
    for raw in pipe.execute():
        for field, value in raw.items():
            _, _, part = field.decode().rpartition("|")
            fields[f"[]|{part}"] += float(value)
    return _series(METRICS[name], fields).get(())


def _series(metric: Metric, fields: dict[str, float]) -> dict[tuple[str, ...], HistogramSeries]:
    series: dict[tuple[str, ...], HistogramSeries] = {}
    for field, value in fields.items():
        key, _, part = field.rpartition("|")
        labels = tuple(json.loads(key))
        entry = series.setdefault(labels, HistogramSeries([0.0] * (len(metric.buckets) + 1), 0.0, 0.0))
        if part == "sum":
            entry.sum = value
        elif part == "count":
            entry.count = value
        else:
            entry.buckets[int(part[1:])] += value
    for entry in series.values():
        running = 0.0
        for i, count in enumerate(entry.buckets):
            running += count
            entry.buckets[i] = running
    return series


def quantile(series: HistogramSeries, q: float, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> float | None:
    """The upper bound of the bucket holding the q-quantile (as Prometheus' histogram_quantile
    would interpolate, but without pretending to a precision the buckets do not have)."""
    if not series.count:
        return None
    rank = q * series.count
    for bound, cumulative in zip((*bounds, float("inf")), series.buckets, strict=True):
        if cumulative >= rank:
            return bound
    return float("inf")


def open_connections() -> int:
    """Sockets holding a connection slot now, over every school (events/limits.py keeps one
    sorted set per organization, scored by lease end)."""
    client = redis_client()
    now = time.time()
    return sum(client.zcount(k, now, "+inf") for k in client.scan_iter(match=key("conn", "org", "*"), count=500))
