"""GET /metrics: cluster-wide figures from PostgreSQL and Redis, for loopback or a bearer token."""

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from events.models import RealtimeEvent
from harry_realtime.tenancy import dangerously_platform_context

pytestmark = pytest.mark.django_db


def samples(response) -> dict[tuple[str, tuple], float]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_outbox_backlog_counts_every_school(client, schools):
    with dangerously_platform_context():
        RealtimeEvent.objects.filter(processed_at__isnull=True).update(processed_at="2000-01-01T00:00:00Z")
        for school in (schools.a, schools.b):
            RealtimeEvent.objects.create(
                organization=school.org, event_type="system_announcement", event_category="system", event_payload={}
            )
    figures = samples(client.get("/metrics"))
    assert figures[("harry_outbox_backlog", ())] == 2
    assert figures[("harry_outbox_oldest_seconds", ())] >= 0
    assert figures[("harry_listener_active", ())] == 0
    assert figures[("harry_redis_up", ())] == 1
    assert figures[("harry_realtime_events", (("status", "pending"),))] >= 2


def test_redis_down_shows_as_zero(client, schools):
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        figures = samples(client.get("/metrics"))
    assert figures[("harry_redis_up", ())] == 0


def test_remote_clients_without_the_token_are_refused(client):
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "metrics_forbidden"


@override_settings(METRICS_TOKEN="s3cret")
def test_with_a_token_configured_it_is_required(client, schools):
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    figures = samples(client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer s3cret"))
    assert ("harry_outbox_backlog", ()) in figures


def test_listener_leadership_is_visible(client, schools):
    import psycopg

    from events.listener import LEADER_LOCK, conninfo

    with psycopg.connect(conninfo(), autocommit=True) as leader:
        assert leader.execute("SELECT pg_try_advisory_lock(%s, %s)", LEADER_LOCK).fetchone()[0]
        assert samples(client.get("/metrics"))[("harry_listener_active", ())] == 1
    assert samples(client.get("/metrics"))[("harry_listener_active", ())] == 0
