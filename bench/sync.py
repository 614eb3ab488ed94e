"""Offline sync benchmark: 20 devices upload 500 attendance and task operations each.

    python bench/sync.py [--devices 20] [--ops 500] [--batch 50] [--workers 2]

Creates a throwaway database (BENCH_DB_NAME, default bench_harry_sync) as the owner role,
migrates it, seeds two schools with one teacher, group and 25 students per device, starts a
real ASGI server (uvicorn, --workers) on a free port against it, and has every device post its
operations in batches over HTTP at the same time. Prints operations applied per second and
p50/p99 request time, next to a baseline measured in the same run: the same number of rows
written with plain ORM inserts, one transaction each, in one process (no HTTP, no queue, no
validation), with the ratio, and the machine's load average around the upload (other work on
the machine competes for the same cores). Target: at least 1,000 operations per second.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")
os.environ["TEST_DB_NAME"] = os.environ.get("BENCH_DB_NAME", "bench_harry_sync")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connections  # noqa: E402
from django.utils import timezone  # noqa: E402

from harry_realtime.auth import issue_access_token  # noqa: E402
from harry_realtime.tenancy import Tenant, dangerously_platform_context, tenant_context  # noqa: E402

STUDENTS_PER_DEVICE = 25


def close_connections() -> None:
    """Close every connection and the psycopg pools: a pooled connection left open blocks DROP DATABASE."""
    connections.close_all()
    for alias in connections:
        close_pool = getattr(connections[alias], "close_pool", None)
        if close_pool is not None and connections[alias].settings_dict.get("OPTIONS", {}).get("pool"):
            close_pool()


def create_database() -> str:
    owner = connections["owner"]
    name = owner.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    connections["default"].close()
    connections["default"].settings_dict["NAME"] = name
    return name


def analyze() -> None:
    """Planner statistics, as autovacuum keeps them in production. Without them the just-seeded
    tables look empty, and the trigger's lookups scan a school's rows instead of using the key."""
    with connections["owner"].cursor() as cursor:
        cursor.execute("ANALYZE")


def seed(devices: int):
    from school.models import StudentGroupEnrollment, TeacherGroupAssignment
    from school.tests.factories import GroupFactory, OrganizationFactory, StudentFactory, TeacherFactory, UserFactory

    fleet = []
    with dangerously_platform_context():
        orgs = [OrganizationFactory(name=f"Bench {i}", slug=f"bench-{i}") for i in range(2)]
        for d in range(devices):
            org = orgs[d % 2]
            user = UserFactory(organization=org, role="teacher", username=f"teacher{d}@bench.test")
            teacher = TeacherFactory(organization=org, user=user)
            group = GroupFactory(organization=org)
            TeacherGroupAssignment.objects.create(organization=org, teacher=teacher, group=group)
            students = [StudentFactory(organization=org) for _ in range(STUDENTS_PER_DEVICE)]
            for s in students:
                StudentGroupEnrollment.objects.create(organization=org, student=s, group=group)
            fleet.append({"user": user, "teacher": teacher, "group": group, "students": students, "org": org})
    return fleet


def operations_for(device: dict, count: int, index: int) -> list[dict]:
    """Half attendance marks (students x lesson days), half new home tasks."""
    now = timezone.now()
    ops = []
    for i in range(count):
        student = device["students"][i % STUDENTS_PER_DEVICE]
        stamp = (now - timedelta(minutes=30) + timedelta(milliseconds=i)).isoformat()
        if i % 2 == 0:
            day = date(2031, 1, 1) + timedelta(days=i // (2 * STUDENTS_PER_DEVICE))
            data = {
                "student_id": str(student.pk),
                "group_id": str(device["group"].pk),
                "status": "present" if i % 3 else "late",
                "attendance_date": day.isoformat(),
            }
            table = "attendance"
        else:
            data = {"student_id": str(student.pk), "group_id": str(device["group"].pk), "title": f"Task {i}"}
            table = "home_tasks"
        ops.append(
            {
                "id": f"dev{index}-op{i}",
                "operation": "INSERT",
                "tableName": table,
                "recordId": str(uuid.uuid4()),
                "data": data,
                "timestamp": stamp,
                "priority": 5,
            }
        )
    return ops


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db_name: str, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    default = settings.DATABASES["default"]
    url = f"postgres://{default['USER']}:{default['PASSWORD']}@{default['HOST']}:{default['PORT']}/{db_name}"
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING", "DB_CONN_MAX_AGE": "0"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "harry_realtime.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code < 500:
                return server, base
        except httpx.HTTPError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("server did not start")


def run_devices(base: str, fleet: list[dict], ops_per_device: int, batch: int):
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(len(fleet))

    def device(index: int, d: dict) -> None:
        ops = operations_for(d, ops_per_device, index)
        headers = {"Authorization": f"Bearer {issue_access_token(d['user'])}"}
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            barrier.wait()
            for start in range(0, len(ops), batch):
                began = time.perf_counter()
                response = client.post(
                    "/api/realtime/sync/queue",
                    json={"deviceId": f"bench-{index}", "operations": ops[start : start + batch]},
                )
                elapsed = time.perf_counter() - began
                response.raise_for_status()
                with lock:
                    latencies.append(elapsed)
                    for status, n in response.json()["summary"].items():
                        outcomes[status] = outcomes.get(status, 0) + n

    threads = [threading.Thread(target=device, args=(i, d)) for i, d in enumerate(fleet)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - began, latencies, outcomes


def baseline(fleet: list[dict], total: int) -> float:
    """Plain ORM inserts, one tenant transaction per row (how the sync path once committed each operation)."""
    from school.models import Attendance

    device = fleet[0]
    tenant = Tenant(organization_id=device["org"].pk, user_id=device["user"].pk, role="teacher")
    began = time.perf_counter()
    for i in range(total):
        with tenant_context(tenant):
            Attendance.objects.create(
                organization_id=device["org"].pk,
                student=device["students"][i % STUDENTS_PER_DEVICE],
                group=device["group"],
                teacher=device["teacher"],
                marked_by=device["user"],
                status="present",
                attendance_date=date(2040, 1, 1) + timedelta(days=i // STUDENTS_PER_DEVICE),
            )
    return total / (time.perf_counter() - began)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--ops", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50, help="operations per request (spec maxBatchSize: 50)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--baseline-rows", type=int, default=2000)
    args = parser.parse_args()

    original_name = settings.DATABASES["owner"]["NAME"]
    db_name = create_database()
    try:
        fleet = seed(args.devices)
        analyze()
        close_connections()
        server, base = start_server(db_name, args.workers)
        try:
            load_before = os.getloadavg()[0]
            elapsed, latencies, outcomes = run_devices(base, fleet, args.ops, args.batch)
            load_after = os.getloadavg()[0]
        finally:
            server.terminate()
            server.wait(10)
        base_rate = baseline(fleet, args.baseline_rows)
    finally:
        close_connections()
        connections["owner"].creation.destroy_test_db(original_name, verbosity=0)

    total = args.devices * args.ops
    applied = outcomes.get("completed", 0) + outcomes.get("conflict", 0)
    rate = applied / elapsed
    print(f"devices={args.devices} ops/device={args.ops} batch={args.batch} workers={args.workers}")
    print(f"outcomes: {outcomes} (of {total})")
    print(f"sync upload: {applied} operations applied in {elapsed:.2f} s = {rate:,.0f} ops/s")
    print(
        f"request time ({len(latencies)} requests): p50 {percentile(latencies, 50) * 1000:.0f} ms,"
        f" p99 {percentile(latencies, 99) * 1000:.0f} ms"
    )
    print(f"baseline: plain ORM insert, one tenant transaction per row, 1 process: {base_rate:,.0f} rows/s")
    print(f"sync upload / baseline: {rate / base_rate:.2f}x")
    print(
        f"machine: {os.cpu_count()} CPUs, 1-min load average {load_before:.1f} before the upload,"
        f" {load_after:.1f} after (anything above the server's own work is contention)"
    )
    print(f"target >= 1,000 ops/s: {'met' if rate >= 1000 else 'NOT met'}")


if __name__ == "__main__":
    main()
