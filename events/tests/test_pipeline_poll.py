"""GET /api/realtime/poll: the user's visible events in seq order, FERPA-filtered, with a cursor."""

import pytest

from events.models import RealtimeEvent
from harry_realtime.tenancy import dangerously_platform_context
from school.models import Attendance, Student, StudentRanking

pytestmark = pytest.mark.django_db
URL = "/api/realtime/poll"


def poll(client, **params):
    response = client.get(URL, params)
    assert response.status_code == 200, response.content
    return response.json()


def tables(body) -> list[str]:
    return [m["data"]["table"] for e in body["events"] for m in e["messages"] if m["type"] == "postgres_changes"]


def test_teacher_sees_own_group_events_in_order_with_cursor(schools, client_for, as_user):
    a = schools.a
    client = client_for(a.teacher_user)
    start = poll(client)["next"]
    with as_user(a.teacher_user):
        Attendance.objects.filter(pk=a.attendance.pk).update(status="late")
        StudentRanking.objects.filter(pk=a.ranking.pk).update(current_rank=2)
    body = poll(client, since=start)
    ids = [e["id"] for e in body["events"]]
    assert ids == sorted(ids) and len(ids) == 2
    assert body["events"][0]["messages"][0]["event"] == "attendance_sync"
    assert body["events"][1]["messages"][0]["event"] == "ranking_celebration"  # educator of the student
    assert body["next"] >= ids[-1]
    assert poll(client, since=body["next"])["events"] == []


def test_limit_and_priority_filter(schools, client_for, as_user):
    a = schools.a
    client = client_for(a.teacher_user)
    start = poll(client)["next"]
    with as_user(a.teacher_user):
        StudentRanking.objects.filter(pk=a.ranking.pk).update(current_rank=1)  # high
        Attendance.objects.filter(pk=a.attendance.pk).update(status="late")  # medium
    high = poll(client, since=start, priority="high,critical")
    assert [e["priority"] for e in high["events"]] == ["high"]
    first = poll(client, since=start, limit=1)
    assert len(first["events"]) == 1 and first["next"] == first["events"][0]["id"]
    second = poll(client, since=first["next"], limit=1)
    assert second["events"][0]["id"] > first["next"]


def test_other_school_and_unrelated_users_see_nothing(schools, client_for, as_user):
    a, b = schools.a, schools.b
    with as_user(a.teacher_user):
        Attendance.objects.filter(pk=a.attendance.pk).update(status="late")
    for user in (b.admin_user, b.teacher_user, b.student_user, b.parent_user):
        body = poll(client_for(user))
        record_orgs = {
            str(m["data"]["record"].get("organization_id"))
            for e in body["events"]
            for m in e["messages"]
            if m["type"] == "postgres_changes"
        }
        assert str(a.org.pk) not in record_orgs
        assert all(str(a.org.pk) not in m["topic"] for e in body["events"] for m in e["messages"])
    # Same school, but no relation to group A: the outsider teacher and the other student.
    for user in (a.outsider_user, a.other_student_user):
        assert "attendance" not in tables(poll(client_for(user)))


def test_parent_sees_child_events_and_ferpa_strips_for_public(schools, client_for, as_user):
    a = schools.a
    with as_user(a.admin_user):
        Student.objects.filter(pk=a.student.pk).update(medical_notes="asthma")
        StudentRanking.objects.filter(pk=a.ranking.pk).update(current_rank=1)
    parent = poll(client_for(a.parent_user))
    assert "student_rankings" in tables(parent)
    ranking = next(m for e in parent["events"] for m in e["messages"] if m.get("event") == "ranking_celebration")
    assert ranking["payload"]["access_level"] == "family"
    admin = poll(client_for(a.admin_user))
    student_rows = [
        m["data"]
        for e in admin["events"]
        for m in e["messages"]
        if m["type"] == "postgres_changes" and m["data"]["table"] == "students"
    ]
    # Admins read the protected fields, as on the socket and in sync/changes (events/ferpa.py).
    assert student_rows and all(
        d["record"]["medical_notes"] == "asthma" and d["access_level"] == "admin" for d in student_rows
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "-1"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"priority": "urgent"}, "priority"),
    ],
)
def test_bad_query_is_a_400_with_code(schools, client_for, params, field):
    response = client_for(schools.a.teacher_user).get(URL, params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_poll_query"
    assert field in response.json()["error"]["details"]


def test_poll_requires_authentication(api):
    assert api.get(URL).status_code == 401


def test_horizon_bounds_the_cursor(schools, client_for):
    with dangerously_platform_context():
        top = RealtimeEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    assert poll(client_for(schools.a.admin_user))["next"] >= top
