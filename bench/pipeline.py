#!/usr/bin/env python
"""Pipeline benchmark (`make bench-pipeline`): database write -> WebSocket receive latency.

A fresh seeded database gets GROUPS extra groups, each with one attendance row. The real ASGI
server (uvicorn as in production; BENCH_SERVER=daphne for the other) and the real listener
(`manage.py realtime_listen`) run as separate processes.
CLIENTS Supabase-protocol sockets (vsn 2.0.0) join `attendance:org_..:group_..` topics, spread
evenly over the groups, each with a `postgres_changes` binding
`{event: UPDATE, table: attendance, filter: group_id=eq.<group>}`. A writer updates the attendance
rows round-robin, one transaction per change in the admin's tenant context (as the API does),
paced at each RATE changes/second for SECONDS. The row's `notes` carries the write time, so the
latency is commit -> trigger -> NOTIFY -> listener -> channel layer -> consumer -> socket.
Lost = changes a subscriber of that group never received; duplicates are counted too.
The writes are spread over BENCH_WRITERS connections (a school has many writers at once): one
connection commits at most ~1/fsync-time per second (about 80/s on this machine's disk), which
would cap the offered rate below 500/s and measure the disk, not the pipeline.

Baseline, measured in the same run against the same server and sockets: the same change messages
(the listener's exact channel-layer message for each group's row) handed straight to the channel
layer with the listener's own send path, paced at the same rate, without the database, the
trigger, NOTIFY or the listener's load/mark queries. The ratio pipeline/baseline shows what the
outbox path adds on top of plain fan-out.

Environment: BENCH_CLIENTS (200), BENCH_GROUPS (50), BENCH_RATES ("100,500"), BENCH_SECONDS (10),
BENCH_WRITERS (8), BENCH_SERVER (uvicorn); DATABASE_URL/REDIS_URL as for the tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "200"))
GROUPS = int(os.environ.get("BENCH_GROUPS", "50"))
RATES = [int(r) for r in os.environ.get("BENCH_RATES", "100,500").split(",")]
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
SERVER = os.environ.get("BENCH_SERVER", "uvicorn")
# permessage-deflate costs the server CPU per frame per socket; browsers negotiate it, not every
# mobile WebSocket stack does. BENCH_WS_COMPRESSION=none measures clients without it.
# Web processes (uvicorn --workers); production runs one per core.
WEB_WORKERS = int(os.environ.get("BENCH_WEB_WORKERS", "1"))
COMPRESSION = None if os.environ.get("BENCH_WS_COMPRESSION", "deflate") == "none" else "deflate"
WRITERS = int(os.environ.get("BENCH_WRITERS", "8"))
DRAIN_SECONDS = 5.0
WARMUP_SECONDS = 3.0


@dataclass
class Run:
    rate: int
    kind: str = "pipeline"
    writes: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # group -> changes
    latencies: list[float] = field(default_factory=list)
    seen: dict[int, set] = field(default_factory=lambda: defaultdict(set))  # client -> write ids
    duplicates: int = 0
    expected: int = 0
    write_seconds: float = 0.0


def seed(env: dict, org_id: str, admin_id: str) -> list[tuple[str, str]]:
    """GROUPS groups with one student and one attendance row each: [(group_id, attendance_id)]."""
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")
    import django

    django.setup()
    from harry_realtime.tenancy import dangerously_platform_context
    from school.models import Attendance, Organization, Teacher, User
    from school.tests.factories import GroupFactory, StudentFactory

    rows = []
    with dangerously_platform_context():
        org = Organization.objects.get(pk=org_id)
        admin = User.objects.get(pk=admin_id)
        teacher = Teacher.objects.filter(organization=org).first()
        for i in range(GROUPS):
            group = GroupFactory(organization=org, name=f"Bench {i}")
            student = StudentFactory(organization=org)
            attendance = Attendance.objects.create(
                organization=org, student=student, group=group, teacher=teacher, status="present", marked_by=admin
            )
            rows.append((str(group.pk), str(attendance.pk)))
    from django.db import connections

    connections.close_all()
    if hasattr(connections["default"], "close_pool"):
        connections["default"].close_pool()
    return rows


def analyze(owner_url: str) -> None:
    """Planner statistics, as autovacuum keeps them in production. Without them the just-seeded
    tables look empty, and the trigger's lookups scan a school's rows instead of using the key."""
    import psycopg

    with psycopg.connect(owner_url.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute("ANALYZE")


def start_listener(env: dict) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "realtime_listen", "--poll-interval", "1"],
        cwd=ROOT,
        env={**env, "LOG_LEVEL": "INFO"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:
        if "listener active" in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc
    raise RuntimeError("the listener did not start")


def wait_until_drained(dsn: str, timeout: float = 60) -> None:
    import psycopg

    deadline = time.time() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET ROLE harry_platform")
        while time.time() < deadline:
            # Due events only: the seed's non-critical events may be held for a prayer window.
            due = "SELECT count(*) FROM realtime_events WHERE processed_at IS NULL AND scheduled_for <= now()"
            if conn.execute(due).fetchone()[0] == 0:
                return
            time.sleep(0.2)
    raise RuntimeError("the listener did not drain its backlog")


def writer(dsn: str, org_id: str, admin_id: str, rows: list[tuple[str, str]], rate: int, label: str) -> tuple:
    """Runs in its own process, so the clients' event loop does not slow the pacing. WRITERS
    threads with a connection each take every WRITERS-th change of one shared schedule."""
    import psycopg

    total = int(rate * SECONDS)
    counts = [defaultdict(int) for _ in range(WRITERS)]
    conns = [psycopg.connect(dsn) for _ in range(WRITERS)]
    start = time.perf_counter() + 0.05

    def work(k: int) -> None:
        conn = conns[k]
        for i in range(k, total, WRITERS):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            group, attendance = rows[i % len(rows)]
            with conn.transaction():
                conn.execute(
                    "SELECT set_config('app.org_id', %s, true), set_config('app.user_id', %s, true),"
                    " set_config('app.role', 'admin', true)",
                    [org_id, admin_id],
                )
                conn.execute(
                    "UPDATE attendance SET notes = %s WHERE id = %s", [f"{label}:{i}:{time.time():.6f}", attendance]
                )
            counts[k][group] += 1

    threads = [threading.Thread(target=work, args=(k,)) for k in range(WRITERS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for conn in conns:
            conn.close()
    writes: dict[str, int] = defaultdict(int)
    for count in counts:
        for group, n in count.items():
            writes[group] += n
    return dict(writes), time.perf_counter() - start


def injector(env: dict, rows: list[tuple[str, str]], rate: int, label: str) -> tuple:
    """The baseline: each group's last stored change, as the listener would send it, handed to the
    channel layer through the listener's own send path at `rate`, with the write time in `notes`.
    Runs in its own process, like the writer."""
    import copy

    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")
    import django

    django.setup()
    from events.listener import Listener
    from events.messages import messages_for
    from events.models import RealtimeEvent
    from harry_realtime.tenancy import dangerously_platform_context

    templates = []
    with dangerously_platform_context():
        for group, attendance in rows:
            event = (
                RealtimeEvent.objects.filter(source_table="attendance", source_record_id=attendance)
                .order_by("-seq")
                .first()
            )
            templates.append((group, messages_for(event)))

    async def run() -> tuple:
        listener = Listener()
        writes: dict[str, int] = defaultdict(int)
        total = int(rate * SECONDS)
        start = time.perf_counter()
        i = 0
        while i < total:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            # Everything due by now goes in one send, as the listener sends one loaded batch.
            batch: list = []
            while i < total and start + i / rate <= time.perf_counter():
                group, messages = templates[i % len(templates)]
                messages = copy.deepcopy(messages)
                for _, message in messages:
                    if message["type"] == "realtime.postgres_change":
                        message["data"]["record"]["notes"] = f"{label}:{i}:{time.time():.6f}"
                batch += messages
                writes[group] += 1
                i += 1
            await listener._send(batch)
        return dict(writes), time.perf_counter() - start

    return asyncio.run(run())


async def client(index: int, url: str, topic: str, group: str, token: str, ready: list, runs: dict) -> None:
    import orjson
    import websockets

    binding = {"event": "UPDATE", "schema": "public", "table": "attendance", "filter": f"group_id=eq.{group}"}
    join = {"config": {"postgres_changes": [binding]}, "access_token": token}
    async with websockets.connect(url, max_size=None, ping_interval=None, compression=COMPRESSION) as ws:
        await ws.send(json.dumps(["1", "1", topic, "phx_join", join]))
        while True:
            reply = json.loads(await ws.recv())
            if reply[3] == "phx_reply":
                assert reply[4]["status"] == "ok", reply
                break
        ready[0] += 1
        beat = asyncio.get_running_loop().create_task(_heartbeat(ws))
        try:
            async for raw in ws:
                now = time.time()
                if '"postgres_changes"' not in raw[:200]:
                    continue  # the broadcast twin of each change: not what is measured
                message = orjson.loads(raw)
                if message[3] != "postgres_changes":
                    continue
                label, write_id, sent = message[4]["data"]["record"]["notes"].split(":")
                run = runs.get(label)
                if run is None:
                    continue
                if int(write_id) in run.seen[index]:
                    run.duplicates += 1
                    continue
                run.seen[index].add(int(write_id))
                run.latencies.append(now - float(sent))
        finally:
            beat.cancel()


async def _heartbeat(ws) -> None:
    ref = 100
    while True:
        await asyncio.sleep(20)
        ref += 1
        await ws.send(json.dumps([None, str(ref), "phoenix", "heartbeat", {}]))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def measure(port: int, env: dict, dsn: str, org_id: str, admin_id: str, token: str, rows) -> list[Run]:
    url = f"ws://127.0.0.1:{port}/realtime/v1/websocket?apikey=bench&vsn=2.0.0"
    clients_of_group: dict[str, list[int]] = defaultdict(list)
    runs: dict[str, Run] = {}
    ready = [0]
    tasks = []
    for i in range(CLIENTS):
        group = rows[i % len(rows)][0]
        clients_of_group[group].append(i)
        topic = f"realtime:attendance:org_{org_id}:group_{group}"
        tasks.append(asyncio.create_task(client(i, url, topic, group, token, ready, runs)))
    while ready[0] < CLIENTS:
        await asyncio.sleep(0.1)
        if any(t.done() for t in tasks):
            [t.result() for t in tasks if t.done()]
    await asyncio.sleep(WARMUP_SECONDS)  # the joins' own bookkeeping settles first
    # The load generator's own full collections (its 200 sockets' state) would show up as
    # delivery latency: it settles its heap as the servers under test do at start-up.
    from harry_realtime.heap import settle_startup_heap

    settle_startup_heap()
    results = []
    loop = asyncio.get_running_loop()
    for rate in RATES:
        for kind in ("pipeline", "baseline"):
            label = f"{kind[0]}{rate}"
            run = Run(rate=rate, kind=kind)
            runs[label] = run
            print(f"[bench] {kind}: {rate} changes/s for {SECONDS:.0f}s to {CLIENTS} subscribers", file=sys.stderr)
            with ProcessPoolExecutor(1) as pool:
                if kind == "pipeline":
                    job = loop.run_in_executor(pool, writer, dsn, org_id, admin_id, rows, rate, label)
                else:
                    job = loop.run_in_executor(pool, injector, env, rows, rate, label)
                writes, run.write_seconds = await job
            run.writes.update(writes)
            run.expected = sum(run.writes[g] * len(c) for g, c in clients_of_group.items())
            # Until everything arrived (the next run must not start behind a backlog), at most
            # DRAIN_SECONDS after the last arrival: what is still missing then counts as lost.
            last, received = time.monotonic(), -1
            while time.monotonic() - last < DRAIN_SECONDS:
                now_received = sum(len(s) for s in run.seen.values())
                if now_received >= run.expected:
                    break
                if now_received != received:
                    last, received = time.monotonic(), now_received
                await asyncio.sleep(0.1)
            results.append(run)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return results


def main() -> int:
    from bench.gateway import sign, start_server

    original_env = dict(os.environ)
    name = f"bench_pipeline_{secrets.token_hex(3)}"
    prepared = json.loads(
        subprocess.run(
            [sys.executable, str(ROOT / "e2e" / "prepare.py"), "create", name],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    key = secrets.token_hex(32)
    school = prepared["schools"]["a"]
    admin = school["users"]["admin"]
    env = {
        **os.environ,
        **prepared["env"],
        "BENCH_GATEWAY_SERVER": "1",
        "JWT_SIGNING_KEY": key,
        "CHANNEL_LAYER_PREFIX": f"bench{secrets.token_hex(3)}",
        "REALTIME_API_KEY": "",
        "REALTIME_MAX_CONNECTIONS_PER_USER": str(CLIENTS + 10),
        "REALTIME_MAX_CONNECTIONS_PER_ORG": str(CLIENTS + 10),
        "REALTIME_MAX_CHANNELS_PER_CONNECTION": "10",
        "LOG_LEVEL": "INFO",  # the servers announce their port at INFO
    }
    dsn = prepared["env"]["DATABASE_URL"].replace("postgres://", "postgresql://", 1)
    server = listener = None
    try:
        rows = seed(env, school["org"], admin["id"])
        analyze(prepared["env"]["DATABASE_OWNER_URL"])
        listener = start_listener(env)
        wait_until_drained(dsn)
        server, port = start_server(SERVER, env, workers=WEB_WORKERS)
        results = asyncio.run(measure(port, env, dsn, school["org"], admin["id"], sign(key, admin), rows))
    finally:
        for proc in (server, listener):
            if proc is not None:
                proc.terminate()
                proc.wait(10)
        subprocess.run(
            [sys.executable, str(ROOT / "e2e" / "prepare.py"), "drop", name], cwd=ROOT, env=original_env, check=False
        )
    print(
        f"\nPipeline: {CLIENTS} subscribers over {GROUPS} attendance topics, {SERVER} ({WEB_WORKERS} process(es),"
        f" client compression {COMPRESSION or 'off'}) + realtime_listen,"
        f" {WRITERS} writer connections"
    )
    print("Baseline: the same change messages sent straight to the channel layer (no DB, trigger, NOTIFY, listener)")
    columns = ("run", "changes/s", "writes", "expected", "received", "lost", "dup", "p50 ms", "p99 ms", "max ms")
    print(" ".join(f"{c:>9}" for c in columns))
    failed = False
    by_key = {}
    for run in results:
        received = sum(len(s) for s in run.seen.values())
        lost = run.expected - received
        achieved = sum(run.writes.values()) / run.write_seconds if run.write_seconds else 0
        counts = (run.kind, run.rate, sum(run.writes.values()), run.expected, received, lost, run.duplicates)
        times = (pct(run.latencies, 0.5), pct(run.latencies, 0.99), pct(run.latencies, 1.0))
        by_key[(run.kind, run.rate)] = times
        print(
            " ".join(f"{c:>9}" for c in counts),
            " ".join(f"{t:>9.1f}" for t in times),
            f"  (sender achieved {achieved:.0f}/s)",
        )
        failed |= lost != 0
    print()
    for rate in RATES:
        pipe, base = by_key[("pipeline", rate)], by_key[("baseline", rate)]
        print(
            f"Ratio pipeline/baseline at {rate}/s: p50 {pipe[0] / base[0]:.2f}x"
            f" ({pipe[0]:.1f} / {base[0]:.1f} ms), p99 {pipe[1] / base[1]:.2f}x ({pipe[1]:.1f} / {base[1]:.1f} ms)"
        )
    print("\nTarget: p99 < 200 ms at 500 changes/s, zero lost.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
