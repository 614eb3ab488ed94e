#!/usr/bin/env python
"""The demo schools and logins (`manage.py seed_demo`) on the harness's database, for the
documentation snippets that use the demo logins (run through `h.python()`)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")

if __name__ == "__main__":
    import django

    django.setup()
    from django.core.management import call_command

    call_command("seed_demo")
