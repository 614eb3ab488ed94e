#!/usr/bin/env python
"""The steady writer of the fault suite (e2e/faults.js): attendance changes at a fixed rate.

  fault_writer.py RATE TARGET [TARGET ...]      TARGET = ORG_ID:USER_ID:ATTENDANCE_ID[:ATTENDANCE_ID...]

Updates the given attendance rows in turn, one committed transaction per target (school) with one
change of each of its rows, in the teacher's tenant context (row-level security applies and the
change-capture trigger stores one event per change, as for an API write). One writer, one
transaction after the other: commit order is seq order, so a socket that gets an event before a
lower one of its topic saw them out of order. A failed write (PostgreSQL backend terminated,
server gone) is retried on a fresh connection, as an app would; the retry counts are reported.
Runs until SIGTERM; prints `written N retried M` every second and once more when it stops.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")

# Never absent or late: those also store family notices, a different load than this suite measures.
STATUSES = ("present", "excused", "sick", "partial")


def main(rate: float, targets: list[str]) -> None:
    import django

    django.setup()
    from django.db import connection

    from harry_realtime.tenancy import Tenant, tenant_context
    from school.models import Attendance

    by_school = [target.split(":") for target in targets]
    stopping = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    written = retried = 0
    started = time.monotonic()
    last_report = started
    while not stopping:
        try:
            # One transaction per school (tenant): one change of each of its rows.
            for org_id, user_id, *attendance_ids in by_school:
                with tenant_context(Tenant(org_id, user_id, "teacher")):
                    for attendance_id in attendance_ids:
                        Attendance.objects.filter(pk=attendance_id).update(
                            status=STATUSES[written % len(STATUSES)], notes=f"fault-suite {written}"
                        )
                written += len(attendance_ids)
        except Exception as error:  # noqa: BLE001 - any failure: retry on a fresh connection
            retried += 1
            if retried % 50 == 1:
                print(f"write failed ({type(error).__name__}: {str(error).strip()[:120]}); retrying", flush=True)
            connection.close()
            time.sleep(0.05)
            continue
        now = time.monotonic()
        if now - last_report >= 1:
            print(f"written {written} retried {retried}", flush=True)
            last_report = now
        # Hold the rate over the whole run: a stall is caught up at most one second's worth later.
        ahead = started + written / rate - now
        if ahead > 0:
            time.sleep(ahead)
        elif ahead < -1:
            started = now - written / rate + 1
    print(f"written {written} retried {retried}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(float(sys.argv[1]), sys.argv[2:])
