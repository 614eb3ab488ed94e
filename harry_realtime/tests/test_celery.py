"""Celery across Redis outages: workers keep reconnecting, tasks published right after a Redis
restart reach the broker (harry_realtime/settings.py, CELERY_BROKER_CONNECTION_*)."""

import os
import subprocess
import sys
import threading
import time

import redis
from celery import Celery
from django.conf import settings

from harry_realtime.celery import app
from harry_realtime.tests.test_redis_conn import OwnRedis


def test_workers_and_beat_keep_reconnecting_for_as_long_as_redis_is_away():
    assert app.conf.broker_connection_retry is True
    assert app.conf.broker_connection_retry_on_startup is True
    assert app.conf.broker_connection_max_retries is None
    assert app.conf.task_publish_retry is True


def test_a_task_published_right_after_a_redis_restart_reaches_the_broker(tmp_path):
    server = OwnRedis(tmp_path)
    publisher = Celery("harry-realtime-test")
    publisher.config_from_object("django.conf:settings", namespace="CELERY")
    publisher.conf.broker_url = server.url
    try:
        publisher.send_task("harry.test.before", queue="restart-test")
        server.kill()
        server.restart()
        # The producer's pooled connection died with the server: the publish retry sends again.
        publisher.send_task("harry.test.after", queue="restart-test")
        queued = redis.Redis(port=server.port).lrange("restart-test", 0, -1)
        assert len(queued) == 2
        assert b"harry.test.after" in queued[0]
    finally:
        publisher.close()
        server.stop()


class Worker:
    """`celery -A harry_realtime worker` on the test's own Redis, its output collected by a thread."""

    def __init__(self, broker: str, queue: str) -> None:
        env = {**os.environ, "CELERY_BROKER_URL": broker, "REDIS_URL": broker}
        command = [sys.executable, "-m", "celery", "-A", "harry_realtime", "worker", "-P", "solo"]
        command += ["-Q", queue, "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.proc = subprocess.Popen(
            command, cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, "".join(self.lines[-30:])
            assert time.monotonic() < deadline, f"no {text!r} in:\n" + "".join(self.lines[-30:])
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_a_worker_reconnects_by_itself_after_a_redis_restart(tmp_path):
    server = OwnRedis(tmp_path, persistent=False)
    publisher = Celery("harry-realtime-test")
    publisher.config_from_object("django.conf:settings", namespace="CELERY")
    publisher.conf.broker_url = server.url
    worker = Worker(server.url, "worker-restart-test")
    try:
        worker.wait_for("ready", timeout=60)
        first = publisher.send_task("celery.accumulate", args=(1,), queue="worker-restart-test")
        worker.wait_for(f"{first.id}] succeeded", timeout=30)
        server.kill()
        time.sleep(2)
        server.restart()  # empty: the worker's queue and its connection are gone
        second = publisher.send_task("celery.accumulate", args=(2,), queue="worker-restart-test")
        worker.wait_for(f"{second.id}] succeeded", timeout=60)
        assert worker.proc.poll() is None
    finally:
        worker.stop()
        publisher.close()
        server.stop()
