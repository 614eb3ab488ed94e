#!/usr/bin/env python
"""Gateway scale-out benchmark (second half of `make bench-gateway`).

Three set-ups, measured one after another in the same run with the same client code:

- **floor**: a minimal broadcast server on the same WebSocket library uvicorn runs (`websockets`),
  no Django, Channels or Redis: it sends each published frame, as received, to every socket
  (websockets' `broadcast`, one encoding per frame). What Python can do on this machine.
- **1 web**, **2 web**: the product (uvicorn) as 1 and 2 processes behind HAProxy (round robin),
  sharing Redis; the clients connect through the proxy, the publisher is one more client.

Each: CLIENTS realtime clients joined to one attendance topic, a publisher broadcasting at the
RATES (deliveries/s) and then a burst as fast as accepted; deliveries/s, p50/p99 (publisher send
to client receive), lost, refused connections, and the CPU time of the server processes per 1,000
deliveries (and the client process's, which shares the 2 cores). Then the memory per idle socket:
IDLE_SOCKETS joined sockets on one web process (and on the floor server), resident memory before
and after. Clients do not offer permessage-deflate here: the floor cannot pre-encode compressed
frames, so both sides send plain frames.

Connections are made in a bounded ramp; refusals are counted, never fatal.

Environment: BENCH_CLIENTS (200), BENCH_SECONDS (3 per rate), BENCH_CLUSTER_RATES ("4000,8000"),
BENCH_IDLE_SOCKETS (2000); DATABASE_URL/REDIS_URL as for the tests; haproxy on PATH.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gateway import CONNECT_CONCURRENCY, Ramp, Receivers, Result, sign  # noqa: E402

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "200"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
RATES = [int(r) for r in os.environ.get("BENCH_CLUSTER_RATES", "4000,8000").split(",")]
IDLE_SOCKETS = int(os.environ.get("BENCH_IDLE_SOCKETS", "2000"))
BURST = 100  # broadcasts back to back: the publisher's per-second message allowance
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def floor_server(port: int) -> None:
    """The floor: frames from /publish go to every other socket, as they are (no parsing)."""
    from websockets.asyncio.server import broadcast, serve

    sockets: set = set()

    async def handler(ws) -> None:
        if ws.request.path == "/publish":
            async for frame in ws:
                broadcast(sockets, frame)
            return
        sockets.add(ws)
        try:
            await ws.wait_closed()
        finally:
            sockets.discard(ws)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, compression=None, max_size=None, ping_interval=None):
            await asyncio.Future()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spawn(args: list[str], env: dict, port: int, timeout: float = 60.0) -> subprocess.Popen:
    """Start a server and wait until it accepts on `port`; RuntimeError when it exits or never does."""
    # Output to a file, not a pipe: a server must never block on a full pipe mid-run.
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{args[0]} exited: {log.read()[-500:]}") from None
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{args[0]} did not accept on port {port}") from None
            time.sleep(0.1)


def start_web(env: dict) -> tuple[subprocess.Popen, int]:
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--ws", "websockets-sansio"]
    args += ["--no-access-log", "--lifespan", "off", "--log-level", "warning", "harry_realtime.asgi:application"]
    return spawn(args, env, port), port


def start_proxy(backends: list[int], workdir: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = Path(workdir) / f"haproxy-{port}.cfg"
    servers = "\n".join(f"    server web{i} 127.0.0.1:{p}" for i, p in enumerate(backends, 1))
    config.write_text(
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 75s\n    timeout server 75s\n"
        "    timeout tunnel 1h\n"
        f"frontend http\n    bind 127.0.0.1:{port}\n    default_backend web\n"
        f"backend web\n    balance roundrobin\n{servers}\n"
    )
    return spawn(["haproxy", "-db", "-f", str(config)], os.environ.copy(), port), port


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class FloorReceivers(Receivers):
    async def run_floor(self, url: str, ramp: Ramp) -> None:
        ws = await ramp.connect(url, None)
        if ws is None:
            return
        try:
            async for raw in ws:
                self._record(json.loads(raw)[4]["payload"])
        finally:
            await ws.close()


def frame(topic: str, body: dict) -> str:
    return json.dumps(["p", None, topic, "broadcast", {"type": "broadcast", "event": "b", "payload": body}])


async def publisher_for(setup: str, url: str, topic: str, token: str):
    import websockets

    if setup == "floor":
        return await websockets.connect(f"{url}/publish", max_size=None, compression=None)
    publisher = await websockets.connect(
        f"{url}/realtime/v1/websocket?apikey=x&vsn=2.0.0", max_size=None, compression=None
    )
    await publisher.send(json.dumps(["p", "p", topic, "phx_join", {"config": {}, "access_token": token}]))
    while json.loads(await publisher.recv())[3] != "phx_reply":
        pass
    return publisher


async def throughput(setup: str, url: str, server_pids: list[int], topic: str, tokens: dict) -> list[dict]:
    holder: list = [None]
    receivers = FloorReceivers(holder)
    ramp = Ramp(CLIENTS, compression=None)
    tasks = []
    for _ in range(CLIENTS):
        if setup == "floor":
            tasks.append(asyncio.create_task(receivers.run_floor(f"{url}/socket", ramp)))
        else:
            socket_url = f"{url}/realtime/v1/websocket?apikey={tokens['listener']}&vsn=2.0.0"
            tasks.append(asyncio.create_task(receivers.run_realtime(socket_url, topic, tokens["listener"], ramp)))
    await ramp.done.wait()
    publisher = await publisher_for(setup, url, topic, tokens["sender"])

    async def drain() -> None:
        async for _ in publisher:
            pass

    drainer = asyncio.create_task(drain())
    rows = []
    for rate in [*RATES, 0]:
        result = Result(label=f"{setup}-{rate or 'burst'}", offered=rate, clients=ramp.connected, refused=ramp.refused)
        holder[0] = result
        cpu_before, client_before = cpu_seconds(server_pids), time.process_time()
        result.started = time.time()
        if rate:
            per_second = rate / max(1, ramp.connected)
            total, interval, next_at = int(per_second * SECONDS), 1 / per_second, time.perf_counter()
            for i in range(total):
                await publisher.send(frame(topic, {"run": result.label, "i": i, "t": time.time()}))
                result.sent += 1
                next_at += interval
                if (delay := next_at - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
        else:
            await asyncio.sleep(1.1)  # refill the publisher's message allowance
            result.started = time.time()
            for i in range(BURST):
                await publisher.send(frame(topic, {"run": result.label, "i": i, "t": time.time()}))
                result.sent += 1
        deadline = time.time() + 10
        while result.received < result.expected and time.time() < deadline:
            await asyncio.sleep(0.05)
        holder[0] = None
        server_cpu = cpu_seconds(server_pids) - cpu_before
        client_cpu = time.process_time() - client_before
        await asyncio.sleep(0.3)
        rows.append({"setup": setup, "result": result, "server_cpu": server_cpu, "client_cpu": client_cpu})
    drainer.cancel()
    await publisher.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return rows


async def idle_memory(setup: str, url: str, pid: int, topic: str, tokens: dict) -> dict:
    """Resident memory added per joined, idle socket, measured on one server process."""
    receivers = FloorReceivers([None])

    def connect(count: int, ramp: Ramp) -> list[asyncio.Task]:
        if setup == "floor":
            return [asyncio.create_task(receivers.run_floor(f"{url}/socket", ramp)) for _ in range(count)]
        socket_url = f"{url}/realtime/v1/websocket?apikey={tokens['listener']}&vsn=2.0.0"
        return [
            asyncio.create_task(receivers.run_realtime(socket_url, topic, tokens["listener"], ramp))
            for _ in range(count)
        ]

    # A few sockets first, so that start-up allocations (imports, pools) are not counted.
    warm = Ramp(CONNECT_CONCURRENCY, compression=None)
    tasks = connect(CONNECT_CONCURRENCY, warm)
    await warm.done.wait()
    await asyncio.sleep(1)
    before = rss_bytes(pid)
    ramp = Ramp(IDLE_SOCKETS, compression=None)
    started = time.monotonic()
    tasks += connect(IDLE_SOCKETS, ramp)
    await ramp.done.wait()
    connect_seconds = time.monotonic() - started
    await asyncio.sleep(2)
    after = rss_bytes(pid)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    per_socket = (after - before) / ramp.connected if ramp.connected else float("nan")
    return {
        "setup": setup,
        "connected": ramp.connected,
        "refused": ramp.refused,
        "per_socket_kb": per_socket / 1024,
        "rss_mb": after / 2**20,
        "connect_seconds": connect_seconds,
    }


def measured(what: str, coroutine) -> object | None:
    """Run one measurement; a failure is reported as a line, the benchmark goes on."""
    try:
        return asyncio.run(coroutine)
    except (OSError, TimeoutError, RuntimeError, ValueError) as error:
        print(f"[bench] {what}: not measured ({type(error).__name__}: {error})")
        return None


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def report(rows: list[dict], memory: list[dict]) -> None:
    print(
        f"\n{'set-up':8} {'offered/s':>9} {'deliv/s':>8} {'p50 ms':>7} {'p99 ms':>8} {'lost':>6} {'refused':>7}"
        f" {'server CPU ms/1k':>16} {'client CPU ms/1k':>16}"
    )
    for row in rows:
        r: Result = row["result"]
        per_k = 1000 / r.received if r.received else float("nan")
        offered = str(r.offered) if r.offered else "burst"
        print(
            f"{row['setup']:8} {offered:>9} {r.rate:8.0f} {r.pct(0.5):7.1f} {r.pct(0.99):8.1f}"
            f" {r.lost:6d} {r.refused:7d}"
            f" {row['server_cpu'] * 1000 * per_k:16.1f} {row['client_cpu'] * 1000 * per_k:16.1f}"
        )
    burst = {row["setup"]: row["result"].rate for row in rows if row["result"].offered == 0}
    print()
    if burst.get("1 web") and burst.get("2 web"):
        print(f"burst throughput, 2 web processes / 1: {burst['2 web'] / burst['1 web']:.2f}x")
    if burst.get("1 web") and burst.get("floor"):
        print(f"burst throughput, 1 web process / floor (no Django): {burst['1 web'] / burst['floor']:.0%}")
    for m in memory:
        print(
            f"memory per idle socket, {m['setup']}: {m['per_socket_kb']:.1f} KB"
            f" ({m['connected']} connected in {m['connect_seconds']:.1f} s, {m['refused']} refused,"
            f" process RSS {m['rss_mb']:.0f} MB)"
        )


def main() -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    name = f"bench_cluster_{secrets.token_hex(3)}"
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
        "JWT_SIGNING_KEY": key,
        "REALTIME_API_KEY": "",
        "LOG_LEVEL": "WARNING",
        "REALTIME_MAX_CONNECTIONS_PER_USER": str(IDLE_SOCKETS + CLIENTS + 100),
        "REALTIME_MAX_CONNECTIONS_PER_ORG": str(IDLE_SOCKETS + CLIENTS + 100),
    }
    rows: list[dict] = []
    memory: list[dict] = []
    workdir = tempfile.mkdtemp(prefix="bench-cluster-")
    try:
        port = free_port()
        floor = spawn([sys.executable, __file__, "--floor", str(port)], env, port)
        try:
            print(f"[bench] floor: {CLIENTS} clients", file=sys.stderr)
            url = f"ws://127.0.0.1:{port}"
            rows += measured("floor", throughput("floor", url, [floor.pid], topic, tokens)) or []
            print(f"[bench] floor: {IDLE_SOCKETS} idle sockets", file=sys.stderr)
            memory.append(measured("floor memory", idle_memory("floor", url, floor.pid, topic, tokens)))
        finally:
            stop([floor])
        for processes in (1, 2):
            setup = f"{processes} web"
            # A fresh Redis prefix per set-up: the previous sockets' connection slots lapse only later.
            web_env = {**env, "CHANNEL_LAYER_PREFIX": f"bench{secrets.token_hex(3)}"}
            webs: list = []
            proxy = None
            try:
                webs = [start_web(web_env) for _ in range(processes)]
                proxy, proxy_port = start_proxy([p for _, p in webs], workdir)
                print(f"[bench] {setup}: {CLIENTS} clients through HAProxy", file=sys.stderr)
                url = f"ws://127.0.0.1:{proxy_port}"
                pids = [proc.pid for proc, _ in webs]
                rows += measured(setup, throughput(setup, url, pids, topic, tokens)) or []
                if processes == 1:
                    print(f"[bench] {setup}: {IDLE_SOCKETS} idle sockets", file=sys.stderr)
                    web_url = f"ws://127.0.0.1:{webs[0][1]}"
                    memory.append(measured("memory", idle_memory("1 web", web_url, pids[0], topic, tokens)))
            except RuntimeError as error:
                print(f"[bench] {setup}: not measured ({error})")
            finally:
                stop([p for p in (proxy, *[proc for proc, _ in webs]) if p is not None])
    finally:
        subprocess.run([sys.executable, str(ROOT / "e2e" / "prepare.py"), "drop", name], cwd=ROOT, check=False)
    report(rows, [m for m in memory if m])
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--floor"]:
        floor_server(int(sys.argv[2]))
    else:
        sys.exit(main())
