"""Garbage-collector settings for the long-running processes (web server, listener).

CPython's full (generation 2) collection walks every tracked object. A web process holds a few
hundred thousand long-lived ones (Django, the URL and model registries, the sockets' state);
under fan-out load a full collection was triggered every ~2 s and stopped the event loop for
110-160 ms, which was the pipeline benchmark's p99. Objects alive after start-up are moved out
of the collector's reach (`gc.freeze`, as Instagram's Django fleet does), and young collections
run less often, so the loop is no longer stopped for objects that never die.
"""

from __future__ import annotations

import gc

from django.conf import settings


def settle_startup_heap() -> None:
    """Collect once, freeze what survived, and apply GC_THRESHOLDS (settings)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*settings.GC_THRESHOLDS)
