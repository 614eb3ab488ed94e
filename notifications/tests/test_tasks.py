"""The delivery task survives a worker killed mid-call without sending anything twice.

The worker is a real separate process running the task against the committed test database;
the fake provider holds the request so the test can SIGKILL the worker while the provider has
the push in hand, then run the task again the way Celery redelivers it (acks_late).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from harry_realtime.tenancy import dangerously_platform_context
from notifications import delivery, tasks
from notifications.models import PushDelivery

from .conftest import reload

# Committed data across connections and processes; only the owner alias may flush the tables between tests.
pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner"])

WORKER = """
import django, sys
django.setup()
from notifications.tasks import deliver_push_notification
deliver_push_notification(sys.argv[1])
"""


def _worker_env(fake) -> dict:
    db = connections["default"].settings_dict
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="harry_realtime.settings",
        DATABASE_URL=f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        PUSH_ANDROID_BACKEND="fcm",
        FCM_BASE_URL=fake.url,
        FCM_PROJECT_ID="harry-test",
        FCM_ACCESS_TOKEN="fcm-test-token",
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
    )
    return env


def _wait(event, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if event.wait(0.05):
            return True
    return False


def test_task_killed_mid_call_then_rerun_sends_nothing_twice(schools, providers, make_device, make_push):
    user = schools.a.student_user
    make_device(user, "fcm-dies", "android")
    make_device(user, "fcm-lives", "android")
    push = make_push(user)
    providers.hold("fcm-dies")

    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(push.pk)], env=_worker_env(providers), cwd=Path(settings.BASE_DIR)
    )
    try:
        assert _wait(providers.arrived, 30), "the worker never reached the provider"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        providers.release("fcm-dies")
    assert worker.returncode == -signal.SIGKILL
    assert len(providers.for_token("fcm-dies")) == 1
    # The worker may or may not have reached the second device before dying; whichever it did is claimed.
    sent_before_rerun = len(providers.for_token("fcm-lives"))

    # Celery redelivers the task (acks_late): the re-run must not call the provider for the claimed device.
    tasks.deliver_push_notification(str(push.pk))
    assert len(providers.for_token("fcm-dies")) == 1
    assert len(providers.for_token("fcm-lives")) == max(1, sent_before_rerun)

    with dangerously_platform_context():
        rows = {d.device.token: d for d in PushDelivery.objects.filter(notification=push).select_related("device")}
    assert rows["fcm-dies"].status == "sending" and rows["fcm-dies"].attempts == 1

    # After the lease the sweep settles the unknown outcome without a resend.
    assert delivery.push_delivery_resolve_stale(lease_seconds=0) >= 1
    tasks.dispatch_due_push_notifications()
    tasks.deliver_push_notification(str(push.pk))
    assert len(providers.for_token("fcm-dies")) == 1
    with dangerously_platform_context():
        dies = PushDelivery.objects.get(notification=push, device__token="fcm-dies")
    assert dies.status == "unconfirmed" and "not resent" in dies.error_message
    push = reload(push)
    # The other device got it, so the notification counts as sent.
    assert push.delivery_status == "sent"


def test_concurrent_runs_claim_each_device_once(schools, providers, make_device, make_push):
    """Two workers on the same notification at once: SKIP LOCKED hands each device to one of them."""
    from concurrent.futures import ThreadPoolExecutor

    user = schools.a.student_user
    tokens = [f"fcm-concurrent-{i}" for i in range(6)]
    for token in tokens:
        make_device(user, token, "android")
    push = make_push(user)

    def run():
        try:
            return delivery.push_notification_deliver(notification_id=push.pk).status
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=3) as pool:
        statuses = list(pool.map(lambda _: run(), range(3)))

    assert "sent" in statuses
    assert sorted(r.token for r in providers.received) == sorted(tokens)


def test_dispatch_due_signature_is_beat_scheduled():
    assert settings.CELERY_BEAT_SCHEDULE["push-dispatch-due"]["task"] == tasks.dispatch_due_push_notifications.name
    assert settings.CELERY_BEAT_SCHEDULE["push-expire"]["task"] == tasks.expire_push_notifications.name
