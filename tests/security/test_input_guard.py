"""Issue 13 item 8: bad input answers 4xx with a machine-readable code, never 500, and nothing is
half-written; values the pipeline cannot carry are refused at the door (harry_realtime/inputguard.py).

Bodies are sent as raw JSON text (`json.dumps`, ASCII with `\\u` escapes) so that lone surrogates
and NUL characters reach the server exactly as an attacker sends them.
"""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from harry_realtime.tenancy import dangerously_platform_context
from notifications.models import PushNotification
from school.models import Attendance, FeedbackEntry
from syncqueue.models import OfflineSyncOperation
from syncqueue.tests.conftest import op

DEEP = "[" * 100_000 + "]" * 100_000
SYNC = "/api/realtime/sync/queue"


def _post(client, url, body, **headers):
    text = body if isinstance(body, str) else json.dumps(body)
    return client.post(url, data=text, content_type="application/json", **headers)


def _error(response, status, code):
    assert response.status_code == status, response.content[:500]
    assert response.json()["error"]["code"] == code, response.json()
    return response.json()["error"]


def _broadcast_body(school, **payload):
    return {
        "eventType": "task_assignment",
        "targetScope": "individual",
        "targetIds": [str(school.student_user.pk)],
        "payload": {"title": {"en": "Homework"}, "content": {"en": "Read p. 5"}, **payload},
        "delivery": {"priority": "high", "methods": ["websocket", "in_app"]},
        "cultural": {"islamicValuesCompliant": True},
    }


# --- the body: depth, strings, integers, size ----------------------------------------------


@pytest.mark.django_db
def test_deep_nesting_on_the_unauthenticated_token_endpoint_is_400():
    _error(_post(APIClient(), "/api/auth/token", DEEP), 400, "json_too_deep")
    inside = '{"username": "a", "password": ' + DEEP + "}"
    _error(_post(APIClient(), "/api/auth/token", inside), 400, "json_too_deep")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/api/realtime/broadcast",
        "/api/notifications/send",
        "/api/notifications/teacher-messages",
        "/api/realtime/attendance/mark",
        "/api/realtime/connect",
        "/api/realtime/conflicts/resolve",
        SYNC,
    ],
)
def test_deep_nesting_on_json_endpoints_is_400(schools, client_for, url):
    _error(_post(client_for(schools.a.teacher_user), url, DEEP), 400, "json_too_deep")


@pytest.mark.django_db
def test_a_lone_surrogate_in_a_broadcast_payload_is_400(schools, client_for):
    body = _broadcast_body(schools.a, actionData={"note": "\ud800"})
    error = _error(_post(client_for(schools.a.teacher_user), "/api/realtime/broadcast", body), 400, "invalid_string")
    assert error["details"] == {"path": "payload.actionData.note"}


@pytest.mark.django_db
def test_a_lone_surrogate_or_nul_in_a_push_title_is_400_and_nothing_is_written(schools, client_for):
    client = client_for(schools.a.admin_user)
    for title in ("Hi \udc00", {"en": "Hi", "uz": "Sa\x00lom"}):
        body = {"target_user_ids": [str(schools.a.student_user.pk)], "title": title, "body": "Lesson moved"}
        _error(_post(client, "/api/notifications/send", body), 400, "invalid_string")
    with dangerously_platform_context():
        assert not PushNotification.objects.exists()


@pytest.mark.django_db
def test_a_surrogate_in_a_key_is_400(schools, client_for):
    body = _broadcast_body(schools.a, actionData={"\udfff": 1})
    _error(_post(client_for(schools.a.teacher_user), "/api/realtime/broadcast", body), 400, "invalid_string")


@pytest.mark.django_db
def test_an_integer_beyond_64_bits_is_400(schools, client_for):
    body = _broadcast_body(schools.a, actionData={"n": 2**70})
    error = _error(
        _post(client_for(schools.a.teacher_user), "/api/realtime/broadcast", body), 400, "integer_out_of_range"
    )
    assert error["details"] == {"path": "payload.actionData.n"}


@pytest.mark.django_db
def test_an_oversize_body_is_413(schools, client_for, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = _broadcast_body(schools.a, actionData={"pad": "x" * 2000})
    _error(_post(client_for(schools.a.teacher_user), "/api/realtime/broadcast", body), 413, "payload_too_large")


@pytest.mark.django_db
def test_a_form_body_is_415(schools, client_for):
    response = client_for(schools.a.admin_user).post(
        "/api/notifications/teacher-messages",
        {"student_id": str(schools.a.student.pk), "message": "x"},
        format="multipart",
    )
    _error(response, 415, "unsupported_media_type")


# --- the URL ------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    ["/api/realtime/sync/status/%00", "/api/realtime/sync/status/ab%00cd", "/api/realtime/sync/changes?cursor=%00"],
)
def test_a_nul_in_the_url_is_400(schools, client_for, url):
    _error(client_for(schools.a.teacher_user).get(url), 400, "invalid_string")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        f"/api/realtime/poll?since={2**70}",
        f"/api/realtime/sync/changes?cursor=0..{2**70}.0",
        f"/api/realtime/sync/changes?cursor=0..0.{2**64}",
    ],
)
def test_query_integers_beyond_64_bits_are_400(schools, client_for, url):
    response = client_for(schools.a.teacher_user).get(url)
    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"]["code"] in ("invalid_poll_query", "invalid_cursor")


# --- dates that the pipeline cannot carry --------------------------------------------------


@pytest.mark.django_db
def test_far_dates_in_rest_fields_are_400(schools, client_for):
    a = schools.a
    mark = {
        "groupId": str(a.group.pk),
        "studentId": str(a.student.pk),
        "status": "late",
        "attendanceDate": "0001-01-01",
    }
    response = _post(client_for(a.teacher_user), "/api/realtime/attendance/mark", mark)
    error = _error(response, 400, "validation_error")
    assert "attendanceDate" in error["details"]
    push = {
        "target_user_ids": [str(a.student_user.pk)],
        "title": "Hi",
        "body": "x",
        "scheduled_for": "9999-12-31T23:59:59Z",
    }
    error = _error(_post(client_for(a.admin_user), "/api/notifications/send", push), 400, "validation_error")
    assert "scheduled_for" in error["details"]
    with dangerously_platform_context():
        assert not Attendance.objects.filter(attendance_date__year__lt=1924).exists()


# --- offline sync: a bad value fails its operation, the rest of the batch applies ----------

committed = pytest.mark.django_db(transaction=True, databases=["default", "owner"])


def _feedback(school, content, **extra):
    return op("feedback_entries", data={"student_id": str(school.student.pk), "content": content}, **extra)


def _sync(client, ops):
    response = _post(client, SYNC, {"deviceId": "phone-1", "operations": ops})
    assert response.status_code == 200, response.content[:500]
    return response.json()["results"]


@committed
def test_a_nul_in_one_operations_data_fails_that_operation_only(schools, client_for):
    a = schools.a
    ops = [_feedback(a, "before"), _feedback(a, "with a \x00 inside"), _feedback(a, "after")]
    results = _sync(client_for(a.teacher_user), ops)
    assert [r["status"] for r in results] == ["completed", "failed", "completed"]
    assert results[1]["error"]["code"] == "invalid_string"
    assert results[1]["error"]["details"] == {"path": "data.content"}
    assert results[1]["id"] == ops[1]["id"]
    with dangerously_platform_context():
        written = set(FeedbackEntry.objects.filter(author=a.teacher_user).values_list("content", flat=True))
    assert written == {"before", "after"}


@committed
def test_bad_values_in_operations_fail_them_with_codes(schools, client_for):
    a = schools.a
    lone = _feedback(a, "lone surrogate id")
    lone["id"] = "op-\ud800"
    big_version = op(
        "attendance", "UPDATE", record_id=a.attendance.pk, data={"status": "late"}, version=2**70, op_id="op-version"
    )
    month_13 = _feedback(a, "month 13", op_id="op-month", timestamp="2026-13-45T10:00:00Z")
    far_device_clock = _feedback(a, "year 9999", op_id="op-far", timestamp="9999-12-31T23:59:59+05:00")
    ancient_mark = op(
        "attendance",
        data={
            "student_id": str(a.student.pk),
            "group_id": str(a.group.pk),
            "status": "present",
            "attendance_date": "0001-01-01",
        },
        op_id="op-ancient",
    )
    ok = _feedback(a, "fine", op_id="op-fine")
    results = _sync(client_for(a.teacher_user), [lone, big_version, month_13, far_device_clock, ancient_mark, ok])

    by_id = {r["id"]: r for r in results}
    assert results[0]["id"] is None and results[0]["error"]["code"] == "invalid_string"
    assert by_id["op-version"]["error"]["code"] == "integer_out_of_range"
    assert by_id["op-month"]["error"]["code"] == "invalid_timestamp"
    assert by_id["op-far"]["error"]["code"] == "date_out_of_range"
    assert by_id["op-ancient"]["error"]["code"] == "invalid_value"
    assert "attendance_date" in by_id["op-ancient"]["error"]["details"]
    assert by_id["op-fine"]["status"] == "completed"
    assert [r["status"] for r in results[:5]] == ["failed"] * 5
    with dangerously_platform_context():
        assert list(FeedbackEntry.objects.filter(author=a.teacher_user).values_list("content", flat=True)) == ["fine"]
        assert Attendance.objects.get(pk=a.attendance.pk).sync_version == 1
        assert not Attendance.objects.filter(attendance_date__year__lt=1924).exists()
        # Refused on their shape: no queue rows; the far attendance date is refused when applied,
        # and its queue row records the refusal.
        stored = dict(OfflineSyncOperation.objects.values_list("operation_id", "sync_status"))
    assert stored == {"op-ancient": "failed", "op-fine": "completed"}


@committed
def test_a_bad_envelope_refuses_the_whole_batch(schools, client_for):
    a = schools.a
    body = {"deviceId": "phone-\x00", "operations": [_feedback(a, "never")]}
    _error(_post(client_for(a.teacher_user), SYNC, body), 400, "invalid_string")
    with dangerously_platform_context():
        assert not FeedbackEntry.objects.filter(content="never").exists()


@committed
@pytest.mark.parametrize(("day", "accepted"), [("1924-08-01", True), ("2077-11-16", True), ("1924-07-31", False)])
def test_an_accepted_attendance_date_is_one_the_listener_can_carry(schools, client_for, day, accepted):
    """The listener builds each attendance event with the day's Hijri date: every date the door
    lets in converts; the day before the range is refused, not lost later with an OverflowError."""
    from events import domain
    from events.models import RealtimeEvent

    a = schools.a
    data = {"student_id": str(a.student.pk), "group_id": str(a.group.pk), "status": "present", "attendance_date": day}
    (result,) = _sync(client_for(a.teacher_user), [op("attendance", data=data, op_id="op-day")])
    assert (result["status"] == "completed") is accepted, result
    if not accepted:
        assert result["error"]["code"] == "invalid_value"
        with dangerously_platform_context():
            assert not Attendance.objects.filter(attendance_date=day).exists()
        return
    with dangerously_platform_context():
        (event,) = RealtimeEvent.objects.filter(source_table="attendance", source_record_id=result["recordId"])
    routed = domain.broadcasts(event)
    assert routed[0][2]["payload"]["culturalContext"]["islamicDateRecorded"]
