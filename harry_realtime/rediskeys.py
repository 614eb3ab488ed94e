"""Names of this deployment's own Redis keys (connection counts, presence, marking claims, KPIs)."""

from __future__ import annotations

from django.conf import settings


def key(*parts: str) -> str:
    """A Redis key under the channel layer's prefix, so parallel test runs do not share counts."""
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"].get("prefix", "harry")
    return ":".join((prefix, "realtime", *parts))
