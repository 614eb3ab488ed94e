#!/usr/bin/env python
"""Store broadcasts to one topic as the school would, for end-to-end tests (`h.python()`).

  publish_events.py ORG_ID ADMIN_USER_ID TOPIC EVENT:PRIORITY [EVENT:PRIORITY ...]

Stores one realtime_events row per EVENT:PRIORITY, as Python code stores a broadcast (in the
admin's tenant context, one transaction), which the listener fans out like any stored event. Prints JSON
`{"seqs": [...]}` in the order given.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")


def main(org_id: str, admin_id: str, topic: str, events: list[str]) -> dict:
    import django

    django.setup()
    from django.db import transaction

    from events.models import RealtimeEvent
    from harry_realtime.tenancy import Tenant, tenant_context

    seqs = []
    with tenant_context(Tenant(org_id, admin_id, "admin")), transaction.atomic():
        for index, spec in enumerate(events):
            name, _, priority = spec.partition(":")
            stored = RealtimeEvent.objects.create(
                organization_id=org_id,
                event_type="system_announcement",
                event_category="system",
                priority=priority,
                event_payload={"index": index, "name": name},
                event_metadata={"topics": [topic], "event": name},
                broadcast_scope="group",
            )
            seqs.append(stored.seq)
    return {"seqs": seqs}


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])))
