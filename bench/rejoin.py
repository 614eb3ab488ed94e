#!/usr/bin/env python
"""Rejoin-storm benchmark (`make bench-rejoin`): every socket of a web process joins at once, each
with a replay of what it missed, as after a web restart.

A fresh seeded database, the listener, and EVENTS stored broadcasts on one attendance topic, all
fanned out. Then, per case, a fresh uvicorn: SOCKETS Supabase-protocol clients connect, then all
send their join at the same moment. Per round it measures, from that moment, when each join was
answered and when each socket had its whole replay. ROUNDS rounds per case; the median round (by
its last join) is reported. The cases, all in the same run:
- each of BENCH_THREADS socket database threads (`REALTIME_DB_THREADS`; 1 is the one thread that
  every socket of a process shared before), each join asking for the replay of all EVENTS;
- the last thread setting with joins that ask for no replay: the floor of what joins cost.
Ratios: the last join with replays over the floor (1.0: replays hold no join up), and the last
thread setting over the first. A join refused or not answered within JOIN_TIMEOUT is counted in
`failed`, never fatal.

Environment: BENCH_SOCKETS (24), BENCH_EVENTS (300), BENCH_ROUNDS (3), BENCH_THREADS ("1,4");
DATABASE_URL/REDIS_URL as for the tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")

import django  # noqa: E402

django.setup()  # harry_realtime.testing imports models

from bench.gateway import sign  # noqa: E402
from harry_realtime.testing import ServerProcess  # noqa: E402

SOCKETS = int(os.environ.get("BENCH_SOCKETS", "24"))
EVENTS = int(os.environ.get("BENCH_EVENTS", "300"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
THREADS = [int(t) for t in os.environ.get("BENCH_THREADS", "1,4").split(",")]
JOIN_TIMEOUT = 30.0
CASES = [(threads, True) for threads in THREADS] + [(THREADS[-1], False)]


@dataclass
class Round:
    joined: list[float]  # seconds from the common start until each join's ok
    replayed: list[float]  # ... until each socket had every replayed event
    failed: int  # joins refused or not answered in time, replays incomplete


def python(*args: str, env: dict) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{args[0]} exited with {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


async def one_socket(url: str, topic: str, token: str, after_id: int | None, go: asyncio.Event, t0: list[float]):
    import websockets

    async with websockets.connect(url, max_size=None, open_timeout=JOIN_TIMEOUT) as ws:
        join = {
            "topic": topic,
            "event": "phx_join",
            "ref": "1",
            "join_ref": "1",
            "payload": {
                "access_token": token,
                "config": {"broadcast": replay_config(after_id), "private": True},
            },
        }
        await go.wait()
        await ws.send(json.dumps(join))
        joined = replayed = None
        seen = 0
        deadline = t0[0] + JOIN_TIMEOUT
        while joined is None or (after_id is not None and replayed is None):
            frame = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
            if frame.get("event") == "phx_reply" and frame.get("ref") == "1":
                if frame["payload"].get("status") != "ok":
                    return None, None
                joined = time.monotonic() - t0[0]
            elif frame.get("event") == "broadcast" and (frame["payload"].get("meta") or {}).get("replayed"):
                seen += 1
                if seen == EVENTS:
                    replayed = time.monotonic() - t0[0]
        return joined, replayed if after_id is not None else joined


def replay_config(after_id: int | None) -> dict:
    return {} if after_id is None else {"replay": {"after_id": after_id, "limit": EVENTS}}


async def storm(url: str, topic: str, tokens: list[str], after_id: int | None) -> Round:
    go = asyncio.Event()
    t0 = [0.0]
    tasks = [
        asyncio.ensure_future(one_socket(url, topic, tokens[i % len(tokens)], after_id, go, t0)) for i in range(SOCKETS)
    ]
    await asyncio.sleep(1.0)  # every socket connected and waiting
    t0[0] = time.monotonic()
    go.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    done = [r for r in results if isinstance(r, tuple) and r[0] is not None and r[1] is not None]
    return Round([r[0] for r in done], [r[1] for r in done], SOCKETS - len(done))


def main() -> int:
    name = f"bench_rejoin_{secrets.token_hex(3)}"
    prepared = json.loads(python(str(ROOT / "e2e" / "prepare.py"), "create", name, env=dict(os.environ)))
    key = secrets.token_hex(32)
    school = prepared["schools"]["a"]
    sub_topic = f"attendance:org_{school['org']}:group_{school['group']}"
    users = school["users"]
    tokens = [sign(key, users[role]) for role in ("admin", "teacher")]
    env = {
        **os.environ,
        **prepared["env"],
        "JWT_SIGNING_KEY": key,
        "REALTIME_API_KEY": "",
        "REALTIME_MAX_CONNECTIONS_PER_USER": str(SOCKETS + 10),
        "REALTIME_MAX_CONNECTIONS_PER_ORG": str(SOCKETS + 10),
    }
    rows: dict[tuple[int, bool], list[Round]] = {}
    try:
        with ServerProcess(["manage.py", "realtime_listen"], {**env, "LOG_LEVEL": "INFO"}, ready="listener active"):
            published = json.loads(
                python(
                    str(ROOT / "e2e" / "publish_events.py"),
                    school["org"],
                    users["admin"]["id"],
                    sub_topic,
                    *[f"replayed_{n}:medium" for n in range(EVENTS)],
                    env=env,
                )
            )
            python(str(ROOT / "e2e" / "outbox_drained.py"), "60", env=env)
        after_id = min(published["seqs"]) - 1
        for threads, replay in CASES:
            server_env = {
                **env,
                "REALTIME_DB_THREADS": str(threads),
                "CHANNEL_LAYER_PREFIX": f"b{secrets.token_hex(3)}",
            }
            args = ["-m", "uvicorn", "--host", "127.0.0.1", "--port", "0", "--ws", "websockets-sansio"]
            args += ["--no-access-log", "--lifespan", "off", "harry_realtime.asgi:application"]
            with ServerProcess(args, server_env) as server:
                url = f"ws://127.0.0.1:{server.match.group(1)}/realtime/v1/websocket?vsn=1.0.0"
                for round_no in range(ROUNDS):
                    print(f"[bench] {threads} thread(s), replay {replay}, round {round_no + 1}", file=sys.stderr)
                    rows.setdefault((threads, replay), []).append(
                        asyncio.run(storm(url, f"realtime:{sub_topic}", tokens, after_id if replay else None))
                    )
    finally:
        subprocess.run([sys.executable, str(ROOT / "e2e" / "prepare.py"), "drop", name], cwd=ROOT, check=False)
    report(rows)
    return 0


def summary(rounds: list[Round]) -> dict:
    def last(values: list[float]) -> float:
        return max(values) if values else float("nan")

    median_round = sorted(rounds, key=lambda r: last(r.joined))[len(rounds) // 2]
    return {
        "first_join": min(median_round.joined, default=float("nan")),
        "last_join": last(median_round.joined),
        "p50_join": statistics.median(median_round.joined) if median_round.joined else float("nan"),
        "last_replay": last(median_round.replayed),
        "failed": sum(r.failed for r in rounds),
    }


def report(rows: dict[tuple[int, bool], list[Round]]) -> None:
    print(f"\n{SOCKETS} sockets join at once (median of {ROUNDS} rounds)\n")
    print("| socket db threads | replay per join | first join ms | p50 join ms | last join ms", end="")
    print(" | all replays done ms | failed |")
    print("|---|---|---|---|---|---|---|")
    sums = {case: summary(rounds) for case, rounds in rows.items()}
    for (threads, replay), s in sums.items():
        replays = f"{s['last_replay'] * 1000:.0f}" if replay else "-"
        print(
            f"| {threads} | {EVENTS if replay else 0} | {s['first_join'] * 1000:.0f} | {s['p50_join'] * 1000:.0f}"
            f" | {s['last_join'] * 1000:.0f} | {replays} | {s['failed']} |"
        )
    first, last = THREADS[0], THREADS[-1]
    floor, best, one = sums.get((last, False)), sums.get((last, True)), sums.get((first, True))
    print()
    if floor and best:
        print(f"ratio last join, replays / no replay ({last} threads): {best['last_join'] / floor['last_join']:.2f}")
    if one and best and first != last:
        print(
            f"ratio {last} threads / {first}: last join {best['last_join'] / one['last_join']:.2f},"
            f" all replays done {best['last_replay'] / one['last_replay']:.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
