"""Compile the message catalogs once per session when they are missing or older than the .po
files, so culture's tests do not depend on the order in which the build steps ran."""

import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.utils.translation import trans_real


@pytest.fixture(scope="session", autouse=True)
def compiled_catalogs():
    locale = Path(settings.LOCALE_PATHS[0])
    stale = False
    for po in locale.glob("*/LC_MESSAGES/django.po"):
        mo = po.with_suffix(".mo")
        if not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
            subprocess.run(["msgfmt", "--check", "-o", str(mo), str(po)], check=True)
            stale = True
    if stale:
        # Django caches catalogs per process; drop what an earlier import may have loaded.
        trans_real._translations = {}
        trans_real._default = None
