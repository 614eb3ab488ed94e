"""The alert job: the spec's thresholds from PostgreSQL and Redis, one system_alert per breach to
the school's admins (socket and push), and a recovery notice when it ends."""

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.utils import timezone

from events.listener import Listener
from events.models import RealtimeEvent
from events.tests.test_pipeline_delivery import _backlog_done
from harry_realtime import alerts, kpi
from harry_realtime.tenancy import dangerously_platform_context
from harry_realtime.testing import Socket, token
from notifications.models import PushNotification
from syncqueue.models import OfflineSyncOperation

RULES = Path(settings.BASE_DIR) / "docker" / "prometheus"
# The job remembers what it told in Redis once its notices commit: these tests commit for real.
TRANSACTIONAL = pytest.mark.django_db(transaction=True, databases=["default", "owner"])


@pytest.fixture(autouse=True)
def fresh_alert_state():
    client = kpi.redis_client()
    client.delete(kpi.redis_key("alert_state"), kpi.redis_key("alert_snapshots"))
    yield
    client.delete(kpi.redis_key("alert_state"), kpi.redis_key("alert_snapshots"))


def notices(org, rule: str) -> list[dict]:
    with dangerously_platform_context():
        rows = RealtimeEvent.objects.filter(organization=org, event_payload__rule=rule).order_by("seq")
        return [e.event_payload for e in rows]


def pending_operations(school, count: int) -> None:
    with dangerously_platform_context():
        for n in range(count):
            OfflineSyncOperation.objects.create(
                organization=school.org,
                user=school.teacher_user,
                device_id="alert-phone",
                operation_id=f"alert-op-{n}",
                operation_type="UPDATE",
                table_name="attendance",
                local_timestamp=timezone.now(),
            )


@TRANSACTIONAL
def test_a_schools_sync_backlog_alerts_its_admins_once_then_recovers(schools, monkeypatch):
    monkeypatch.setattr(alerts, "SYNC_BACKLOG_MAX", 2)
    a, b = schools.a, schools.b
    pending_operations(a, 3)

    first = alerts.alerts_evaluate()
    alerts.alerts_evaluate()  # still breached: no second notice

    [firing] = notices(a.org, "sync_backlog")
    assert firing["state"] == "firing" and firing["type"] == "system_alert" and firing["value"] == 3
    assert "3 offline sync operations" in firing["message"]
    assert notices(b.org, "sync_backlog") == []
    assert first["firing"] >= 1
    with dangerously_platform_context():
        push = PushNotification.objects.get(
            target_user=a.admin_user, realtime_event__event_payload__rule="sync_backlog"
        )
        assert push.notification_type == "system_alert" and "3 offline sync operations" in push.body_en
        assert not PushNotification.objects.filter(target_user=a.teacher_user).exists()
        OfflineSyncOperation.objects.filter(organization=a.org).update(sync_status="completed")

    alerts.alerts_evaluate()
    alerts.alerts_evaluate()

    assert [n["state"] for n in notices(a.org, "sync_backlog")] == ["firing", "resolved"]
    raised = kpi.counter_values("harry_system_alerts_total")
    assert raised[("sync_backlog", "firing")] >= 1 and raised[("sync_backlog", "resolved")] >= 1
    assert notices(a.org, "sync_backlog")[1]["message"].startswith("Resolved: ")


@TRANSACTIONAL
def test_outbox_backlog_is_per_school(schools, monkeypatch):
    monkeypatch.setattr(alerts, "OUTBOX_BACKLOG_MAX", 0)
    with dangerously_platform_context():
        RealtimeEvent.objects.filter(processed_at__isnull=True).update(processed_at=timezone.now())
        RealtimeEvent.objects.create(
            organization=schools.b.org, event_type="system_announcement", event_category="system", event_payload={}
        )
    alerts.alerts_evaluate()
    assert notices(schools.a.org, "outbox_backlog") == []
    assert [n["state"] for n in notices(schools.b.org, "outbox_backlog")] == ["firing"]


@TRANSACTIONAL
def test_latency_and_heartbeat_breaches_over_the_window_reach_every_school(schools):
    start = time.time()
    alerts.alerts_evaluate(now=start)  # the window's first snapshot
    for _ in range(10):
        kpi.observe("harry_delivery_latency_seconds", 0.9, priority="medium")
    kpi.inc("harry_heartbeats_total", 95, outcome="ok")
    kpi.inc("harry_heartbeats_total", 5, outcome="missed")

    alerts.alerts_evaluate(now=start + 60)

    for school in (schools.a, schools.b):
        [latency] = notices(school.org, "delivery_latency")
        assert latency["state"] == "firing" and latency["value"] == pytest.approx(0.9)
        [heartbeat] = notices(school.org, "heartbeat_success")
        assert heartbeat["value"] == pytest.approx(0.95)
    # Nothing new in the next window: both recover.
    alerts.alerts_evaluate(now=start + 60 + alerts.WINDOW_SECONDS + 1)
    assert [n["state"] for n in notices(schools.a.org, "delivery_latency")] == ["firing", "resolved"]


@TRANSACTIONAL
def test_connection_drops_over_twenty_percent_alert(schools):
    start = time.time()
    alerts.alerts_evaluate(now=start)
    kpi.inc("harry_websocket_disconnects_total", 3, reason="dropped")
    kpi.inc("harry_websocket_disconnects_total", 2, reason="client")
    alerts.alerts_evaluate(now=start + 30)
    [drops] = notices(schools.a.org, "connection_drops")
    assert drops["value"] == pytest.approx(3 / 5) and drops["severity"] == "critical"


@TRANSACTIONAL
async def test_the_admins_socket_gets_the_system_alert(schools):
    a = schools.a
    await sync_to_async(_backlog_done)()
    topic = f"realtime:notifications:org_{a.org.pk}:role_admin"
    socket = Socket()
    await socket.connect()
    assert (await socket.join(topic, token(a.admin_user))).payload["status"] == "ok"
    await sync_to_async(alerts.alerts_evaluate)()  # no listener runs: "listener_down" for every school

    listener = Listener(poll_interval=30)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    try:
        message = await socket.until("broadcast", topic=topic, timeout=10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await socket.close()
        await sync_to_async(connections.close_all)()
    assert message.payload["event"] == "system_alert"
    assert message.payload["payload"]["rule"] == "listener_down"
    assert message.payload["payload"]["state"] == "firing"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: scripts/test_tools.sh installs it (Debian package prometheus)")
    return path


def test_promtool_accepts_the_rules_and_the_scrape_config():
    checked = subprocess.run([_promtool(), "check", "rules", "alerts.yml"], cwd=RULES, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 11 rules found" in checked.stdout
    config = subprocess.run(
        [_promtool(), "check", "config", "--syntax-only", "prometheus.yml"], cwd=RULES, capture_output=True, text=True
    )
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_rule_fires_on_its_breach_in_promtool_unit_tests():
    result = subprocess.run(
        [_promtool(), "test", "rules", "alerts_test.yml"], cwd=RULES, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = (RULES / "alerts_test.yml").read_text()
    for rule in [
        line.split(":", 1)[1].strip() for line in (RULES / "alerts.yml").read_text().splitlines() if "- alert:" in line
    ]:
        assert f"alertname: {rule}" in tested, f"{rule} has no promtool unit test"
