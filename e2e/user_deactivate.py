#!/usr/bin/env python
"""Deactivate one user with a raw SQL UPDATE, as a DBA would, for end-to-end tests (run through
`h.python()`): no Django signal or API call sees it.

  user_deactivate.py USER_ID
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")


def main(user_id: str) -> None:
    import django

    django.setup()
    from django.db import connection

    from harry_realtime.tenancy import dangerously_platform_context

    with dangerously_platform_context(), connection.cursor() as cursor:
        cursor.execute("UPDATE users SET is_active = false WHERE id = %s", [user_id])
        if cursor.rowcount != 1:
            sys.exit(f"no user {user_id}")


if __name__ == "__main__":
    main(sys.argv[1])
