#!/usr/bin/env python
"""Ground truth and database faults for the fault suite (e2e/faults.js), one JSON line each way.

Reads commands as JSON lines on stdin, answers each with one JSON line on stdout:

  ["max-seq"]                           the highest stored event seq (0 when none)
  ["events", TOPIC, AFTER, UNTIL]       the seqs of the topic's stored events in (AFTER, UNTIL]
  ["attendance", ORG, GROUP, STUDENT]   the id of today's attendance row of the student in the group
  ["unprocessed"]                       how many due events the listener has not fanned out yet
  ["terminate-backends"]                pg_terminate_backend() for every other backend of this
                                        database (web, listeners, writer), through the admin
                                        connection (DATABASE_ADMIN_URL); answers how many

Stays up for the whole run (one Django start-up instead of one per question); a query whose
connection was terminated is retried once on a fresh connection.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")


def max_seq() -> int:
    from django.db.models import Max

    from events.models import RealtimeEvent
    from harry_realtime.tenancy import dangerously_platform_context

    with dangerously_platform_context():
        return RealtimeEvent.objects.aggregate(top=Max("seq"))["top"] or 0


def events(topic: str, after: int, until: int) -> list[int]:
    from events.models import RealtimeEvent
    from harry_realtime.tenancy import dangerously_platform_context

    with dangerously_platform_context():
        rows = RealtimeEvent.objects.filter(
            event_metadata__topics__contains=[topic], seq__gt=int(after), seq__lte=int(until)
        )
        return list(rows.order_by("seq").values_list("seq", flat=True))


def attendance(org: str, group: str, student: str) -> str:
    from harry_realtime.tenancy import dangerously_platform_context
    from school.models import Attendance

    with dangerously_platform_context():
        return str(Attendance.objects.get(organization_id=org, group_id=group, student_id=student).pk)


def unprocessed() -> int:
    from django.utils import timezone

    from events.models import RealtimeEvent
    from harry_realtime.tenancy import dangerously_platform_context

    with dangerously_platform_context():
        return RealtimeEvent.objects.filter(processed_at__isnull=True, scheduled_for__lte=timezone.now()).count()


def terminate_backends() -> int:
    import psycopg
    from django.db import connection

    own = connection.cursor().connection.info.backend_pid if connection.connection else None
    admin = os.environ["DATABASE_ADMIN_URL"]
    with psycopg.connect(admin, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid() AND pid IS DISTINCT FROM %s",
            (connection.settings_dict["NAME"], own),
        ).fetchone()
    return row[0]


def main() -> None:
    import django

    django.setup()
    from django.db import connection

    handlers = {
        "max-seq": max_seq,
        "events": events,
        "attendance": attendance,
        "unprocessed": unprocessed,
        "terminate-backends": terminate_backends,
    }
    for line in sys.stdin:
        command, *args = json.loads(line)
        try:
            try:
                answer = {"ok": handlers[command](*args)}
            except Exception:  # noqa: BLE001 - our own connection may have been terminated: once more
                connection.close()
                answer = {"ok": handlers[command](*args)}
        except Exception as error:  # noqa: BLE001 - reported to the suite, which fails the run
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
