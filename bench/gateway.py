#!/usr/bin/env python
"""Gateway benchmark (`make bench-gateway`): 200 realtime clients on one topic, paced broadcasts.

For each server (daphne, uvicorn) it starts the real ASGI application on a free port against a
fresh seeded database, connects CLIENTS Supabase-protocol clients (vsn 2.0.0) joined to one
attendance topic, and one publisher that broadcasts at 1,000 / 4,000 / 8,000 deliveries per
second, then a burst as fast as the server takes it. The same run measures a minimal raw Channels
consumer (group_send of the received text to every socket, no protocol, no auth) on the same
server process as the baseline. Latency is publisher send time to client receive time.
Clients connect in a bounded ramp (CONNECT_CONCURRENCY handshakes at a time); a connection the
server refuses (an HTTP error, a reset, a timeout) is counted in the `refused` column and the
run goes on with the others, so a slow or loaded machine gives numbers, not a traceback.

After the single-process runs, bench/cluster.py measures N web processes behind HAProxy, the
memory per idle socket and the no-Django floor (`make bench-gateway` runs both).

Environment: BENCH_CLIENTS (200), BENCH_SECONDS (5 per rate), BENCH_RATES ("1000,4000,8000"),
BENCH_SERVERS ("daphne,uvicorn"); DATABASE_URL/REDIS_URL as for the tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAW_GROUP = "bench.raw"


def _server_application():
    """The product's ASGI app plus the raw baseline route (loaded inside the server process)."""
    sys.path.insert(0, str(ROOT))
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path

    from harry_realtime.asgi import application as product

    class RawBroadcast(AsyncWebsocketConsumer):
        async def connect(self):
            await self.channel_layer.group_add(RAW_GROUP, self.channel_name)
            await self.accept()

        async def disconnect(self, code):
            await self.channel_layer.group_discard(RAW_GROUP, self.channel_name)

        async def receive(self, text_data=None, bytes_data=None):
            await self.channel_layer.group_send(RAW_GROUP, {"type": "raw.message", "text": text_data})

        async def raw_message(self, event):
            await self.send(text_data=event["text"])

    from events.routing import websocket_urlpatterns

    return ProtocolTypeRouter(
        {
            "http": product.application_mapping["http"],
            "websocket": URLRouter([path("bench/raw", RawBroadcast.as_asgi()), *websocket_urlpatterns]),
        }
    )


if os.environ.get("BENCH_GATEWAY_SERVER"):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")
    application = _server_application()


@dataclass
class Result:
    label: str
    offered: int
    clients: int = 0
    refused: int = 0
    sent: int = 0
    received: int = 0
    latencies: list[float] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0

    @property
    def expected(self) -> int:
        return self.sent * self.clients

    @property
    def lost(self) -> int:
        return self.expected - self.received

    @property
    def rate(self) -> float:
        return self.received / max(1e-9, self.finished - self.started)

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


CLIENTS = int(os.environ.get("BENCH_CLIENTS", "200"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
RATES = [int(r) for r in os.environ.get("BENCH_RATES", "1000,4000,8000").split(",")]
SERVERS = os.environ.get("BENCH_SERVERS", "daphne,uvicorn").split(",")
BURST = 100  # broadcasts sent back to back: the publisher's per-second message limit
# Handshakes in flight at once while the clients connect, and how long one may take.
CONNECT_CONCURRENCY = 20
CONNECT_TIMEOUT = 20.0


def sign(key: str, user: dict) -> str:
    import jwt

    now = int(time.time())
    claims = {
        "sub": user["id"],
        "organization_id": user["organization_id"],
        "role": user["role"],
        "type": "access",
        "iat": now,
        "exp": now + 3600,
        "iss": "harry-realtime",
    }
    return jwt.encode(claims, key, algorithm="HS256")


def _wait_accepting(port: int, timeout: float = 30.0) -> None:
    """The port is announced before worker processes accept on it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def start_server(kind: str, env: dict, workers: int = 1) -> tuple[subprocess.Popen, int]:
    # harry_realtime.testing imports models, so Django is set up first: this bench's main has
    # not done it, the pipeline bench has (a second setup is harmless).
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")
    import django

    django.setup()
    from harry_realtime.testing import UVICORN_READY, ServerProcess

    app = "bench.gateway:application"
    if kind == "uvicorn":
        port = "0"
        if workers > 1:  # the worker processes share a socket the parent binds: it needs a real port
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = str(probe.getsockname()[1])
        args = [
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--workers",
            str(workers),
            "--log-level",
            "info",
            app,
        ]
        ready = UVICORN_READY
    else:
        args = ["-m", "daphne", "-e", "tcp:port=0:interface=127.0.0.1", app]
        ready = r"Listening on TCP address 127\.0\.0\.1:(\d+)"
    server = ServerProcess(args, env, ready=ready)
    _wait_accepting(server.port)
    return server.process, server.port


class Ramp:
    """Connects at most CONNECT_CONCURRENCY clients at a time; counts the connected and the refused."""

    def __init__(self, total: int, compression: str | None = "deflate"):
        self.total = total
        self.compression = compression
        self.connected = 0
        self.refused = 0
        self.reasons: dict[str, int] = {}
        self.done = asyncio.Event()
        self._slots = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect(self, url: str, handshake):
        """An open socket (after `handshake(ws)`, when given), or None when the server refused it."""
        import websockets

        ws = None
        async with self._slots:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    ws = await websockets.connect(
                        url, max_size=None, ping_interval=None, open_timeout=None, compression=self.compression
                    )
                    if handshake is not None:
                        await handshake(ws)
                self.connected += 1
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException, ConnectionRefusedError) as error:
                reason = type(error).__name__
                self.reasons[reason] = self.reasons.get(reason, 0) + 1
                self.refused += 1
                if ws is not None:
                    await ws.close()
                ws = None
        if self.connected + self.refused == self.total:
            self.done.set()
        return ws


class Receivers:
    """CLIENTS sockets; every one records the latency of each message it gets."""

    def __init__(self, result_holder: list):
        self.current = result_holder

    async def run_realtime(self, url: str, topic: str, token: str, ramp: Ramp):
        async def join(ws) -> None:
            await ws.send(json.dumps(["1", "1", topic, "phx_join", {"config": {}, "access_token": token}]))
            while True:
                reply = json.loads(await ws.recv())
                if reply[3] == "phx_reply":
                    if reply[4]["status"] != "ok":
                        raise ConnectionRefusedError(str(reply[4]))
                    return

        ws = await ramp.connect(url, join)
        if ws is None:
            return
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(ws))
        try:
            async for raw in ws:
                message = json.loads(raw)
                if message[3] == "broadcast":
                    self._record(message[4]["payload"])
        finally:
            heartbeat.cancel()
            await ws.close()

    async def run_raw(self, url: str, ramp: Ramp):
        ws = await ramp.connect(url, None)
        if ws is None:
            return
        try:
            async for raw in ws:
                self._record(json.loads(raw))
        finally:
            await ws.close()

    def _record(self, payload: dict) -> None:
        now = time.time()
        result = self.current[0]
        if result is None or payload.get("run") != result.label:
            return
        result.received += 1
        result.latencies.append(now - payload["t"])
        result.finished = time.time()

    @staticmethod
    async def _heartbeat(ws):
        ref = 1000
        while True:
            await asyncio.sleep(20)
            ref += 1
            await ws.send(json.dumps([None, str(ref), "phoenix", "heartbeat", {}]))


async def measure(kind: str, port: int, mode: str, topic: str, tokens: dict) -> list[Result]:
    import websockets

    holder: list = [None]
    receivers = Receivers(holder)
    ramp = Ramp(CLIENTS)
    base = f"ws://127.0.0.1:{port}"
    tasks = []
    for _ in range(CLIENTS):
        if mode == "gateway":
            url = f"{base}/realtime/v1/websocket?apikey={tokens['listener']}&vsn=2.0.0"
            tasks.append(asyncio.create_task(receivers.run_realtime(url, topic, tokens["listener"], ramp)))
        else:
            tasks.append(asyncio.create_task(receivers.run_raw(f"{base}/bench/raw", ramp)))
    await ramp.done.wait()
    if ramp.refused:
        print(f"[bench] {kind} {mode}: {ramp.refused} of {CLIENTS} connections refused {ramp.reasons}", file=sys.stderr)
    results = []
    if mode == "gateway":
        publisher = await websockets.connect(f"{base}/realtime/v1/websocket?apikey=x&vsn=2.0.0", max_size=None)
        await publisher.send(
            json.dumps(["p", "p", topic, "phx_join", {"config": {}, "access_token": tokens["sender"]}])
        )
        while json.loads(await publisher.recv())[3] != "phx_reply":
            pass

        def frame(body: dict) -> str:
            return json.dumps(["p", None, topic, "broadcast", {"type": "broadcast", "event": "b", "payload": body}])
    else:
        publisher = await websockets.connect(f"{base}/bench/raw", max_size=None)

        def frame(body: dict) -> str:
            return json.dumps(body)

    async def drain_publisher():
        async for _ in publisher:
            pass

    drainer = asyncio.create_task(drain_publisher())
    for rate in [*RATES, 0]:
        label = f"{kind}-{mode}-{rate or 'burst'}"
        result = Result(label=label, offered=rate, clients=ramp.connected, refused=ramp.refused)
        holder[0] = result
        result.started = time.time()
        if rate:
            per_second = rate / CLIENTS
            interval = 1 / per_second
            total = int(per_second * SECONDS)
            next_at = time.perf_counter()
            for i in range(total):
                await publisher.send(frame({"run": label, "i": i, "t": time.time()}))
                result.sent += 1
                next_at += interval
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
        else:
            await asyncio.sleep(1.1)  # refill the publisher's message allowance
            for i in range(BURST):
                await publisher.send(frame({"run": label, "i": i, "t": time.time()}))
                result.sent += 1
        deadline = time.time() + 5
        while result.received < result.expected and time.time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        holder[0] = None
        results.append(result)
    drainer.cancel()
    await publisher.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return results


def report(rows: list[Result]) -> None:
    print(f"\n{'run':34} {'offered/s':>10} {'deliv/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'lost':>7} {'refused':>8}")
    for r in rows:
        offered = str(r.offered) if r.offered else "burst"
        print(
            f"{r.label:34} {offered:>10} {r.rate:9.0f} {r.pct(0.5):8.1f} {r.pct(0.99):8.1f} {r.lost:7d} {r.refused:8d}"
        )


def main() -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.path.insert(0, str(ROOT))
    name = f"bench_gateway_{secrets.token_hex(3)}"
    prepared = json.loads(
        subprocess.run(
            [sys.executable, str(ROOT / "e2e" / "prepare.py"), "create", name],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    key = secrets.token_hex(32)
    school = prepared["schools"]["a"]
    topic = f"realtime:attendance:org_{school['org']}:group_{school['group']}"
    tokens = {"listener": sign(key, school["users"]["admin"]), "sender": sign(key, school["users"]["teacher"])}
    env = {
        **os.environ,
        **prepared["env"],
        "BENCH_GATEWAY_SERVER": "1",
        "JWT_SIGNING_KEY": key,
        "REALTIME_API_KEY": "",
        # 200 sockets of one user and organization: above the product's per-user/org limits.
        "REALTIME_MAX_CONNECTIONS_PER_USER": str(CLIENTS + 10),
        "REALTIME_MAX_CONNECTIONS_PER_ORG": str(CLIENTS + 10),
    }
    rows: list[Result] = []
    try:
        for kind in SERVERS:
            # A fresh Redis prefix per server: connection slots of the previous server's sockets
            # lapse only with their lease once it is stopped.
            proc, port = start_server(kind, {**env, "CHANNEL_LAYER_PREFIX": f"bench{secrets.token_hex(3)}"})
            try:
                for mode in ("raw", "gateway"):
                    print(f"[bench] {kind} {mode}: {CLIENTS} clients", file=sys.stderr)
                    try:
                        rows += asyncio.run(measure(kind, port, mode, topic, tokens))
                    except (OSError, TimeoutError, RuntimeError) as error:
                        # A run that cannot start (its publisher refused) is reported, not fatal.
                        print(f"[bench] {kind} {mode}: not measured ({type(error).__name__}: {error})")
            finally:
                proc.terminate()
                proc.wait(10)
    finally:
        subprocess.run([sys.executable, str(ROOT / "e2e" / "prepare.py"), "drop", name], cwd=ROOT, check=False)
    report(rows)
    print()
    for kind in SERVERS:
        raw = {r.offered: r for r in rows if r.label.startswith(f"{kind}-raw")}
        gw = {r.offered: r for r in rows if r.label.startswith(f"{kind}-gateway")}
        if 0 not in raw or 0 not in gw:
            print(f"{kind}: no burst ratio (a run was not measured)")
            continue
        burst_ratio = gw[0].rate / raw[0].rate if raw[0].rate else float("nan")
        at_4000 = gw.get(4000)
        print(
            f"{kind}: gateway burst throughput = {burst_ratio:.0%} of raw baseline; "
            + (f"at 4000/s p99 {at_4000.pct(0.99):.0f} ms, lost {at_4000.lost}" if at_4000 else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
