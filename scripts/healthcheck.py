#!/usr/bin/env python
"""Container health checks (docker/compose.yaml), without starting Django.

  healthcheck.py http URL               200 from URL (the web process's /healthz: database and Redis)
  healthcheck.py listener               this container has a live `realtime_listen` session in
                                        PostgreSQL (leader or standby), on DATABASE_URL
  healthcheck.py fresh FILE SECONDS     FILE was touched in the last SECONDS (beat's heartbeat)

Exit status 0 = healthy, 1 = not, with the reason on stderr.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request

# The listener names its connections so (events/listener.py conninfo).
LISTENER_APPLICATION_NAME = "realtime_listen"


def http(url: str) -> str | None:
    with urllib.request.urlopen(url, timeout=5) as response:
        return None if response.status == 200 else f"HTTP {response.status}"


def listener() -> str | None:
    import psycopg

    # The same client address as the listener's own sessions: both run in this container.
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        " AND client_addr IS NOT DISTINCT FROM inet_client_addr() AND pid <> pg_backend_pid()"
    )
    with psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=5) as conn:
        (sessions,) = conn.execute(query, [LISTENER_APPLICATION_NAME]).fetchone()
    return None if sessions else "no realtime_listen session from this container"


def fresh(path: str, seconds: str) -> str | None:
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return f"{path} missing"
    return None if age <= float(seconds) else f"{path} last touched {age:.0f}s ago"


def main(argv: list[str]) -> int:
    checks = {"http": http, "listener": listener, "fresh": fresh}
    try:
        problem = checks[argv[0]](*argv[1:])
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", with its reason
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
