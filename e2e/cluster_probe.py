#!/usr/bin/env python
"""Ground truth for the scale-out test (e2e/cluster.js), read from PostgreSQL and the broker.

  cluster_probe.py max-seq                 the highest stored event seq (0 when none)
  cluster_probe.py events TOPIC AFTER      JSON list of the seqs of the topic's stored events after AFTER
  cluster_probe.py celery-ping             JSON list of the Celery workers that answered a ping
  cluster_probe.py celery-task             queues `events.expire_events` (harmless), prints its task id

Runs with the cluster's environment (its database, its Redis through the sentinels).
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


def events(topic: str, after: str) -> list[int]:
    from events.models import RealtimeEvent
    from harry_realtime.tenancy import dangerously_platform_context

    with dangerously_platform_context():
        rows = RealtimeEvent.objects.filter(event_metadata__topics__contains=[topic], seq__gt=int(after))
        return list(rows.order_by("seq").values_list("seq", flat=True))


def celery_ping() -> list[str]:
    from harry_realtime.celery import app

    return sorted(name for reply in app.control.ping(timeout=5) for name in reply)


def celery_task() -> str:
    from harry_realtime.celery import app

    return app.send_task("events.expire_events").id


if __name__ == "__main__":
    import django

    django.setup()
    command, *args = sys.argv[1:]
    handlers = {"max-seq": max_seq, "events": events, "celery-ping": celery_ping, "celery-task": celery_task}
    print(json.dumps(handlers[command](*args)))
