#!/usr/bin/env python
"""Wait until the listener has fanned out every due event (for end-to-end tests, `h.python()`).

  outbox_drained.py [TIMEOUT_SECONDS]

Exits 0 when no realtime_events row is due and unprocessed, 1 on timeout. Events held for a
later time (scheduled_for in the future, e.g. a prayer window) are not waited for.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")


def main(timeout: float) -> int:
    import django

    django.setup()
    from django.utils import timezone

    from events.models import RealtimeEvent
    from harry_realtime.tenancy import dangerously_platform_context

    deadline = time.monotonic() + timeout
    while True:
        with dangerously_platform_context():
            due = RealtimeEvent.objects.filter(processed_at__isnull=True, scheduled_for__lte=timezone.now()).count()
        if due == 0:
            return 0
        if time.monotonic() > deadline:
            print(f"{due} due events still unprocessed", file=sys.stderr)
            return 1
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 30.0))
