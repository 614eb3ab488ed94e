"""Celery across Redis outages: workers keep reconnecting, tasks published right after a Redis
restart reach the broker (harry_realtime/settings.py, CELERY_BROKER_CONNECTION_*)."""

import redis
from celery import Celery

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
