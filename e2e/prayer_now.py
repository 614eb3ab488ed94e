#!/usr/bin/env python
"""Put a school inside a prayer window now, for end-to-end tests (run through `h.python()`).

  prayer_now.py ORG_ID

Moves the school's longitude (prayer times follow the sun) to the first one, west of its own,
where the current moment lies inside a prayer's window with at least four minutes of it left;
prayer times are computed, never faked, so the server and listener see the same window.
Prints JSON `{"longitude", "prayer", "windowEndsAt"}`.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")


def main(org_id: str) -> dict:
    import django

    django.setup()
    from django.utils import timezone

    from culture.delivery import organization_prayer_status
    from culture.prayer import IN_PRAYER
    from harry_realtime.tenancy import dangerously_platform_context
    from school.models import Organization

    with dangerously_platform_context():
        org = Organization.objects.get(pk=org_id)
        start = Decimal(org.longitude)
        now = timezone.now()
        for step in range(1440):  # quarter degrees = one minute of sun time each, all the way round
            longitude = (start - Decimal(step) / 4 + 180) % 360 - 180
            org.longitude = longitude
            status = organization_prayer_status(org, now)
            if status.status == IN_PRAYER and status.window_ends_at - now >= timedelta(minutes=4):
                org.save(update_fields=["longitude"])
                return {
                    "longitude": str(longitude),
                    "prayer": status.current_prayer,
                    "windowEndsAt": status.window_ends_at.isoformat(),
                }
    sys.exit("no longitude puts the school inside a prayer window now")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(json.dumps(main(sys.argv[1])))
