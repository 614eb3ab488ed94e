#!/usr/bin/env python
"""Bandwidth benchmark (`make bench-bandwidth`): bytes per client for a scripted school day.

One class (30 students) on a fresh seeded database, the real uvicorn server (`--ws` as in the
Procfile, BENCH_WS to change) and listener. Clients
(vsn 2.0.0 Supabase-protocol sockets) each go through their own counting TCP proxy, so bytes are
counted on the wire as sent, after permessage-deflate, both directions:
- the teacher (attendance + groups + notifications topics), foreground on wifi;
- four students (own rankings + tasks + notifications topics), one per profile:
  `foreground` (wifi, excellent), `battery_saver` (cellular, good), `background` (cellular, poor,
  app in the background; it switches to excellent at the end of the script and catches up) and
  `low_battery` (15 %, cellular, good).

The script, replayed in real time with the idle gaps of the day left out: the teacher marks 30
students (one every 0.3 s), a quiz awards each client student points ten times (0.2 s apart, the
last one a celebration), each gets five tasks and completes them, three announcements and one
emergency alert go to the school. Every write is a real database transaction: the change-capture
trigger stores the event, the listener fans it out.

Three runs, new clients each time:
(a) one uncompressed frame per event (no permessage-deflate, no profile: today's behaviour);
(b) compression only (permessage-deflate, as realtime-js in browsers and the apps negotiate it);
(c) compression + batching (`broadcast.batch: true` on rankings, tasks, attendance, groups) +
    profiles (priority filtering, adaptive heartbeat).

Heartbeats: the day (BENCH_DAY_HOURS, 6) is not waited out. Each client sends ten heartbeats at
the end and the bytes of one round trip are measured on its proxy; the day's heartbeat bytes are
that times day / interval, with the interval the profile gets (25 s for every client in (a) and
(b), which is what `/connect` answered before profiles). The table shows events and heartbeats
separately and their sum.

Latency: commit (`created_at` of the event row) to receipt. The added delay of an event in (c) is
its latency minus the median latency of its type in (a); its p99 per type is compared with the
type's batching window + 100 ms. Events a poor connection held back and got on catch-up are
counted separately (they wait for the connection to improve, by design). Lost and duplicated
events are counted per client against what the outbox says each client should get.

Environment: BENCH_DAY_HOURS (6), BENCH_WS (websockets-sansio); DATABASE_URL/REDIS_URL as for the tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DAY_SECONDS = float(os.environ.get("BENCH_DAY_HOURS", "6")) * 3600
WS = os.environ.get("BENCH_WS", "websockets-sansio")
CLASS_SIZE = 30
HEARTBEAT_SAMPLES = 10
WINDOWS_MS = {"attendance": 1000, "rankings": 2000, "tasks": 5000, "notifications": 0}
PROFILES = {
    "foreground": {"network_type": "wifi", "connection_quality": "excellent"},
    "battery_saver": {"performance_mode": "battery_saver", "network_type": "cellular", "connection_quality": "good"},
    "background": {"app_state": "background", "network_type": "cellular", "connection_quality": "poor"},
    "low_battery": {"battery_level": "15", "network_type": "cellular", "connection_quality": "good"},
}
BATCHED_KINDS = ("attendance", "groups", "rankings", "tasks")


@dataclass
class Client:
    label: str
    user: dict
    topics: list[str]
    profile: dict
    sent: int = 0  # bytes client -> server
    received: int = 0  # bytes server -> client
    base: int = 0  # sent + received when the script started
    event_bytes: int = 0  # sent + received during the script, its batches and catch-up
    heartbeat_bytes: float = 0.0  # one heartbeat round trip
    ids: list[tuple[str, int]] = field(default_factory=list)  # (topic, seq) of every event received
    arrivals: dict[int, tuple[float, bool]] = field(default_factory=dict)  # seq -> (time, caught up)
    notices: int = 0


class CountingProxy:
    """A TCP relay to the server that counts the bytes of one client's connection."""

    def __init__(self, client: Client, port: int):
        self.client, self.port = client, port
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _relay(self, reader, writer) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(src, dst, up: bool) -> None:
            try:
                while data := await src.read(65536):
                    if up:
                        self.client.sent += len(data)
                    else:
                        self.client.received += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, upstream_writer, True), pipe(upstream_reader, writer, False))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def seed(env: dict, school: dict) -> dict:
    """The class: 29 more students in group A (30 with the seeded one), attendance rows, and
    three more students with logins, rankings and the group; returns ids for the script."""
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")
    import django

    django.setup()
    from django.utils import timezone

    from harry_realtime.tenancy import dangerously_platform_context
    from school.models import Attendance, Group, StudentGroupEnrollment, StudentRanking, Teacher
    from school.tests.factories import StudentFactory, UserFactory

    with dangerously_platform_context():
        group = Group.objects.get(pk=school["group"])
        org = group.organization
        teacher = Teacher.objects.get(pk=school["teacher"])
        students = [school["student"]]
        users = [school["users"]["student"]]
        for i in range(CLASS_SIZE - 1):
            login = UserFactory(organization=org, role="student", username=f"class{i}@bench.test") if i < 3 else None
            student = StudentFactory(organization=org, user=login)
            StudentGroupEnrollment.objects.create(organization=org, student=student, group=group)
            students.append(str(student.pk))
            if login is not None:
                StudentRanking.objects.create(organization=org, student=student, current_rank=10 + i, total_points=50)
                users.append({"id": str(login.pk), "role": "student", "organization_id": str(org.pk)})
        for student in students:
            Attendance.objects.get_or_create(
                organization=org,
                student_id=student,
                group=group,
                attendance_date=timezone.localdate(),
                defaults={"teacher": teacher, "status": "present", "marked_by": teacher.user},
            )
    from django.db import connections

    connections.close_all()
    return {"students": students, "client_students": students[:4], "client_users": users[:4]}


def _tenant(school: dict, role: str = "teacher"):
    from harry_realtime.tenancy import Tenant, tenant_context

    user = school["users"][role]
    return tenant_context(Tenant(school["org"], user["id"], user["role"]))


def run_script(school: dict, cls: dict) -> tuple[int, int]:
    """The school day's writes, paced; returns the (first, last) seq range it produced."""
    from django.db import connection
    from django.utils import timezone

    from events.models import RealtimeEvent
    from school.models import Attendance, HomeTask, StudentRanking

    def last_seq() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT last_value FROM realtime_events_seq")
            return cursor.fetchone()[0]

    first = last_seq() + 1
    for student in cls["students"]:
        with _tenant(school):
            Attendance.objects.filter(student_id=student, group_id=school["group"]).update(status="absent")
        time.sleep(0.3)
    for round_ in range(10):
        for student in cls["client_students"]:
            points = 100 if round_ == 9 else 10
            with _tenant(school, "admin"):
                ranking = StudentRanking.objects.get(student_id=student)
                ranking.total_points += points
                ranking.save()
            time.sleep(0.05)
    tasks = []
    for _ in range(5):
        for student in cls["client_students"]:
            with _tenant(school):
                tasks.append(
                    HomeTask.objects.create(
                        organization_id=school["org"],
                        student_id=student,
                        group_id=school["group"],
                        teacher_id=school["teacher"],
                        title="Vocabulary practice",
                        description="Learn the ten words of today's lesson and use each in a sentence.",
                        due_date=timezone.now() + timezone.timedelta(days=1),
                    )
                )
            time.sleep(0.1)
    for task in tasks:
        with _tenant(school):
            HomeTask.objects.filter(pk=task.pk).update(grading_status="submitted", student_response="Done")
        time.sleep(0.1)
    topic = f"notifications:org_{school['org']}:role_all"
    notices = [("system_announcement", "medium", f"Announcement {i + 1}") for i in range(3)]
    for name, priority, title in [*notices, ("emergency_alert", "critical", "Fire drill")]:
        with _tenant(school, "admin"):
            RealtimeEvent.objects.create(
                organization_id=school["org"],
                event_type="system_announcement",
                event_category="system",
                priority=priority,
                event_payload={"type": name, "title": title, "body": "Parents' meeting on Friday at 17:00."},
                event_metadata={"topics": [topic], "event": name},
                broadcast_scope="organization",
            )
        time.sleep(1 if priority != "critical" else 0)
    return first, last_seq()


def expected_and_created(school: dict, clients: list[Client], seqs: tuple[int, int]) -> tuple[dict, dict, dict]:
    """Per client the seqs the outbox says it should get; per seq its created_at and type."""
    from events.messages import messages_for
    from events.models import RealtimeEvent
    from events.recipients import broadcast_access
    from harry_realtime.tenancy import dangerously_platform_context

    expected: dict[str, set[int]] = defaultdict(set)
    created, kinds = {}, {}
    with dangerously_platform_context():
        for event in RealtimeEvent.objects.filter(seq__gte=seqs[0], seq__lte=seqs[1]).order_by("seq"):
            created[event.seq] = event.created_at.timestamp()
            for topic, message in messages_for(event):
                if message["type"] != "realtime.broadcast":
                    continue
                kind = "critical" if event.priority == "critical" else topic.partition(":")[0]
                kinds[event.seq] = "attendance" if kind == "groups" else kind
                for client in clients:
                    user = client.user
                    if topic in client.topics and broadcast_access(message, user_id=user["id"], role=user["role"]):
                        expected[client.label].add(event.seq)
    return expected, created, kinds


async def socket_client(client: Client, port: int, mode: str, done: asyncio.Event, ready: list) -> None:
    import orjson
    import websockets

    from bench.gateway import sign

    proxy = CountingProxy(client, port)
    local = await proxy.start()
    params = "".join(f"&{k}={v}" for k, v in client.profile.items()) if mode == "c" else ""
    token = sign(os.environ["JWT_SIGNING_KEY"], client.user)
    url = f"ws://127.0.0.1:{local}/realtime/v1/websocket?apikey={token}&vsn=2.0.0{params}"
    compression = None if mode == "a" else "deflate"
    async with websockets.connect(url, max_size=None, ping_interval=None, compression=compression) as ws:
        ref = 0
        for topic in client.topics:
            ref += 1
            broadcast = {"ack": False, "self": False}
            if mode == "c" and topic.partition(":")[0] in BATCHED_KINDS:
                broadcast["batch"] = True
            join = {"config": {"broadcast": broadcast}, "access_token": token}
            await ws.send(json.dumps([str(ref), str(ref), f"realtime:{topic}", "phx_join", join]))
        replies = 0
        while replies < len(client.topics):
            message = orjson.loads(await ws.recv())
            replies += message[3] == "phx_reply"
        ready.append(client.label)
        reader = asyncio.get_running_loop().create_task(_read(ws, client))
        await done.wait()
        if mode == "c" and client.profile.get("connection_quality") != "excellent":
            # The end of the day: the phone is home on wifi and catches up on what was held.
            improved = {"connection_quality": "excellent", "network_type": "wifi"}
            update = {"type": "broadcast", "event": "update", "payload": improved}
            await ws.send(json.dumps(["p", "p1", "realtime:connection:profile", "phx_join", {"access_token": token}]))
            await ws.send(json.dumps(["p", "p2", "realtime:connection:profile", "broadcast", update]))
        await asyncio.sleep(6)  # the longest batching window, and the catch-up
        before = client.sent + client.received
        client.event_bytes = before - client.base
        for i in range(HEARTBEAT_SAMPLES):
            await ws.send(json.dumps([None, f"hb{i}", "phoenix", "heartbeat", {}]))
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        client.heartbeat_bytes = (client.sent + client.received - before) / HEARTBEAT_SAMPLES
        reader.cancel()
    proxy.close()


async def _read(ws, client: Client) -> None:
    import orjson

    async for raw in ws:
        now = time.time()
        message = orjson.loads(raw)
        if message[3] == "system" and message[4].get("extension") == "held_back":
            client.notices += 1
        if message[3] != "broadcast":
            continue
        body = message[4]
        items = body["payload"]["events"] if body.get("event") == "batch" else [body]
        for item in items:
            meta = item.get("meta") or {}
            if "id" in meta:
                client.ids.append((message[2], meta["id"]))
                client.arrivals.setdefault(meta["id"], (now, bool(meta.get("replayed"))))


def heartbeat_interval(mode: str, profile: dict) -> float:
    if mode != "c":
        return 25.0
    from events import profiles

    return profiles.heartbeat_interval_ms(profiles.profile_from_params({k: [v] for k, v in profile.items()})) / 1000


async def one_run(mode: str, port: int, school: dict, cls: dict) -> tuple[list[Client], tuple[int, int]]:
    org = school["org"]
    common = [f"notifications:org_{org}:role_all"]
    teacher = Client(
        "teacher",
        school["users"]["teacher"],
        [f"attendance:org_{org}:group_{school['group']}", f"groups:org_{org}:teacher_{school['teacher']}", *common],
        PROFILES["foreground"],
    )
    clients = [teacher]
    students = zip(PROFILES.items(), cls["client_students"], cls["client_users"], strict=True)
    for (label, profile), student, user in students:
        topics = [f"rankings:org_{org}:student_{student}", f"tasks:org_{org}:student_{student}", *common]
        clients.append(Client(label, user, topics, profile))
    done, ready = asyncio.Event(), []
    tasks = [asyncio.create_task(socket_client(c, port, mode, done, ready)) for c in clients]
    while len(ready) < len(clients):
        await asyncio.sleep(0.1)
        for task in tasks:
            if task.done():
                task.result()
    await asyncio.sleep(1)  # the joins' presence_state frames
    for client in clients:
        client.base = client.sent + client.received
    seqs = await asyncio.to_thread(run_script, school, cls)
    await asyncio.sleep(1)
    done.set()
    await asyncio.gather(*tasks)
    return clients, seqs


def report(results: dict, school: dict) -> bool:
    hours = DAY_SECONDS / 3600
    print(f"\nBandwidth: one class's scripted day, {hours:.0f} h of heartbeats, uvicorn --ws {WS} + listener")
    print("bytes per client on the wire (both directions, after compression); events = the script's frames")
    header = ("client", "mode", "events B", "hb/day B", "total B", "vs (a)", "vs (b)", "frames", "lost", "dup")
    print(" ".join(f"{h:>13}" for h in header))
    ok = True
    totals: dict[str, dict[str, float]] = defaultdict(dict)
    for mode in "abc":
        clients, expected = results[mode]["clients"], results[mode]["expected"]
        for client in clients:
            beats = DAY_SECONDS / heartbeat_interval(mode, client.profile) * client.heartbeat_bytes
            total = client.event_bytes + beats
            totals[client.label][mode] = total
            lost = len(expected[client.label] - {seq for _, seq in client.ids})
            dup = len(client.ids) - len(set(client.ids))
            ok &= lost == 0 and dup == 0
            vs_a, vs_b = (1 - total / totals[client.label].get(m, total) for m in "ab")
            print(
                f"{client.label:>13} {mode:>13} {client.event_bytes:>13,.0f} {beats:>13,.0f} {total:>13,.0f}"
                f" {vs_a * 100:>12.1f}% {vs_b * 100:>12.1f}% {len(client.arrivals):>13} {lost:>13} {dup:>13}"
            )
    mean = {m: statistics.mean(t[m] for t in totals.values()) for m in "abc"}
    print(
        f"\nMean per client: (a) {mean['a']:,.0f} B, (b) {mean['b']:,.0f} B, (c) {mean['c']:,.0f} B;"
        f" (c) is {(1 - mean['c'] / mean['a']) * 100:.1f}% fewer bytes than (a) (target >= 60%)"
        f" and {(1 - mean['c'] / mean['b']) * 100:.1f}% fewer than (b)"
    )
    return ok


def latency_report(results: dict) -> bool:
    def per_type(mode: str, caught_up: bool) -> dict[str, list[float]]:
        out = defaultdict(list)
        created, kinds = results[mode]["created"], results[mode]["kinds"]
        for client in results[mode]["clients"]:
            for seq, (at, replayed) in client.arrivals.items():
                if seq in created and replayed == caught_up:
                    out[kinds[seq]].append(at - created[seq])
        return out

    base = {kind: statistics.median(v) for kind, v in per_type("a", False).items()}
    live = per_type("c", False)
    caught = per_type("c", True)
    print("\nAdded delay in (c): latency minus the median latency of the type in (a), live deliveries")
    print(f"{'type':>13} {'events':>8} {'p50 ms':>8} {'p99 ms':>8} {'window ms':>10} {'limit ms':>9} {'met':>5}")
    ok = True
    for kind in ("attendance", "rankings", "tasks", "notifications", "critical"):
        added = sorted((v - base.get(kind, 0)) * 1000 for v in live.get(kind, []))
        if not added:
            continue
        p50, p99 = added[len(added) // 2], added[min(len(added) - 1, int(0.99 * len(added)))]
        window = WINDOWS_MS.get(kind, 0)
        limit = 100 if kind == "critical" else window + 100
        if kind == "critical":
            p99 = sorted(v * 1000 for v in live[kind])[-1]  # critical: the absolute latency
        met = p99 <= limit
        ok &= met
        print(f"{kind:>13} {len(added):>8} {p50:>8.0f} {p99:>8.0f} {window:>10} {limit:>9} {'yes' if met else 'NO':>5}")
    held = sum(len(v) for v in caught.values())
    print(f"Held back for the poor connection and delivered on catch-up: {held} events")
    return ok


def start_web(env: dict) -> tuple[subprocess.Popen, int]:
    """uvicorn as the Procfile runs it (`--ws websockets-sansio`, permessage-deflate with a 4 KB
    window), or with BENCH_WS=websockets (a 32 KB window)."""
    from harry_realtime.testing import ServerProcess  # it imports models: after seed() set Django up

    args = ["-m", "uvicorn", "--host", "127.0.0.1", "--port", "0", "--ws", WS, "--lifespan", "off"]
    server = ServerProcess([*args, "harry_realtime.asgi:application"], env)
    return server.process, server.port


def main() -> int:
    from bench.pipeline import analyze, start_listener, wait_until_drained

    original_env = dict(os.environ)
    name = f"bench_bandwidth_{secrets.token_hex(3)}"
    prepared = json.loads(
        subprocess.run(
            [sys.executable, str(ROOT / "e2e" / "prepare.py"), "create", name],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    school = prepared["schools"]["a"]
    env = {
        **os.environ,
        **prepared["env"],
        "BENCH_GATEWAY_SERVER": "1",
        "JWT_SIGNING_KEY": secrets.token_hex(32),
        "CHANNEL_LAYER_PREFIX": f"bench{secrets.token_hex(3)}",
        "REALTIME_API_KEY": "",
        "REALTIME_PRAYER_HOLD": "false",  # the script must not depend on the hour it runs at
        "LOG_LEVEL": "INFO",
    }
    os.environ.update(env)
    dsn = prepared["env"]["DATABASE_URL"].replace("postgres://", "postgresql://", 1)
    server = listener = None
    results = {}
    try:
        cls = seed(env, school)
        analyze(prepared["env"]["DATABASE_OWNER_URL"])
        listener = start_listener(env)
        wait_until_drained(dsn)
        server, port = start_web(env)
        for mode in "abc":
            print(f"[bench] run ({mode})", file=sys.stderr)
            clients, seqs = asyncio.run(one_run(mode, port, school, cls))
            expected, created, kinds = expected_and_created(school, clients, seqs)
            results[mode] = {"clients": clients, "expected": expected, "created": created, "kinds": kinds}
    finally:
        from django.db import connections

        connections.close_all()  # the script's connections, or the database cannot be dropped
        for proc in (server, listener):
            if proc is not None:
                proc.terminate()
                proc.wait(10)
        subprocess.run(
            [sys.executable, str(ROOT / "e2e" / "prepare.py"), "drop", name], cwd=ROOT, env=original_env, check=False
        )
    complete = report(results, school)
    timely = latency_report(results)
    verdict = {True: "yes", False: "NO"}
    print(f"\nZero lost and duplicated: {verdict[complete]}; delays within target: {verdict[timely]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
