"""gzip for the JSON API: large responses when accepted, never the admin, gzip request bodies."""

import gzip
import json

import pytest

from events.models import RealtimeEvent
from harry_realtime.tenancy import Tenant, tenant_context
from syncqueue.tests.conftest import op

pytestmark = pytest.mark.django_db


def announce(school, count: int) -> None:
    topic = f"notifications:org_{school.org.pk}:role_all"
    with tenant_context(Tenant(school.org.pk, school.admin_user.pk, "admin")):
        for i in range(count):
            RealtimeEvent.objects.create(
                organization_id=school.org.pk,
                event_type="system_announcement",
                event_category="system",
                event_payload={"title": f"Notice {i}", "body": "Parents' evening " * 10},
                event_metadata={"topics": [topic], "event": "system_announcement"},
                broadcast_scope="organization",
            )


def test_large_poll_response_is_gzipped_when_accepted(schools, client_for):
    a = schools.a
    announce(a, 10)
    client = client_for(a.admin_user)
    plain = client.get("/api/realtime/poll?since=0")
    zipped = client.get("/api/realtime/poll?since=0", HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert "Content-Encoding" not in plain.headers and len(plain.content) > 1024
    assert zipped.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in zipped.headers["Vary"]
    inflated = json.loads(gzip.decompress(zipped.content))
    # The same events (FERPA stamps each response with its own `filtered_at`).
    assert [e["id"] for e in inflated["events"]] == [e["id"] for e in plain.json()["events"]]
    assert inflated["next"] == plain.json()["next"]
    assert len(zipped.content) < len(plain.content) / 3


def test_small_responses_and_the_admin_are_not_compressed(schools, client_for, client):
    a = schools.a
    small = client_for(a.admin_user).get("/api/realtime/poll?since=999999", HTTP_ACCEPT_ENCODING="gzip")
    assert small.status_code == 200 and len(small.content) < 1024 and "Content-Encoding" not in small.headers
    page = client.get("/admin/login/", HTTP_ACCEPT_ENCODING="gzip")  # a CSRF token in a page: never
    assert page.status_code == 200 and len(page.content) > 1024 and "Content-Encoding" not in page.headers


def test_gzip_encoded_sync_upload_is_applied(schools, client_for):
    a = schools.a
    data = {"student_id": str(a.student.pk), "group_id": str(a.group.pk), "status": "late"}
    body = json.dumps({"deviceId": "gz-device", "operations": [op("attendance", data=data)]}).encode()
    response = client_for(a.teacher_user).generic(
        "POST",
        "/api/realtime/sync/queue",
        gzip.compress(body),
        content_type="application/json",
        HTTP_CONTENT_ENCODING="gzip",
    )
    assert response.status_code == 200, response.content
    (result,) = response.json()["results"]
    assert "error" not in result, result


@pytest.mark.parametrize(
    ("encoding", "body", "status", "code"),
    [
        ("gzip", b"not gzip at all", 400, "invalid_content_encoding"),
        ("gzip", gzip.compress(b'{"deviceId": "d", "operations": []}')[:-6], 400, "invalid_content_encoding"),
        ("br", b"{}", 415, "unsupported_content_encoding"),
        ("gzip", gzip.compress(b" " * 5000), 413, "payload_too_large"),
    ],
)
def test_bad_encoded_bodies_get_structured_errors(schools, client_for, settings, encoding, body, status, code):
    settings.HTTP_GZIP_MAX_REQUEST_BYTES = 4096
    response = client_for(schools.a.teacher_user).generic(
        "POST", "/api/realtime/sync/queue", body, content_type="application/json", HTTP_CONTENT_ENCODING=encoding
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
