"""The staff board's page and data: admins and teachers only, scoped like the API."""

import json
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders

from harry_realtime.tenancy import dangerously_platform_context
from presence import marking
from school.models import Attendance

pytestmark = pytest.mark.django_db


def _login(client, user):
    response = client.post("/board/login/", {"username": user.username, "password": "harry-demo", "next": "/board/"})
    return response


def test_admins_and_teachers_sign_in_others_are_refused(client, schools):
    assert client.get("/board/").status_code == 302  # to the sign-in page
    for user in (schools.a.student_user, schools.a.parent_user):
        response = _login(client, user)
        assert response.status_code == 200 and "for a school&#x27;s admins and teachers" in response.content.decode()
    assert _login(client, schools.a.teacher_user).status_code == 302
    page = client.get("/board/").content.decode()
    assert 'id="board-config"' in page and "vendor/realtime-js.min.js" in page
    assert client.get("/board/token").json()["access"].count(".") == 2


def test_the_page_serves_the_bundled_client_not_a_cdn(client, staff_login, schools):
    staff_login(schools.a.admin_user)
    page = client.get("/board/").content.decode()
    assert "https://" not in page and "http://" not in page
    bundle = Path(finders.find("board/vendor/realtime-js.min.js")).read_text()
    pinned = json.loads((settings.BASE_DIR / "e2e" / "package.json").read_text())["devDependencies"]
    assert bundle.startswith(f"/* @supabase/realtime-js {pinned['@supabase/realtime-js']} (MIT)")


def test_admin_snapshot_covers_the_school_and_nothing_else(client_for, schools):
    a, b = schools.a, schools.b
    marking.claim(group_id=str(a.group.pk), user_id=str(a.teacher_user.pk), student_ids=[str(a.student.pk)])
    try:
        snapshot = client_for(a.admin_user).get("/api/realtime/board").json()
    finally:
        marking.release(group_id=str(a.group.pk), user_id=str(a.teacher_user.pk))
    names = {g["name"] for g in snapshot["groups"]}
    assert names == {a.group.name, a.other_group.name}
    group = next(g for g in snapshot["groups"] if g["id"] == str(a.group.pk))
    assert group["attendance"]["enrolled"] == 1
    assert [m["name"] for m in group["marking"]] == [a.teacher_user.full_name]
    assert snapshot["organization"]["name"] == a.org.name
    assert all(b.org.name not in str(e) for e in snapshot["events"])
    assert set(snapshot["pipeline"]) >= {"listenerActive", "backlog", "p99DeliveryMs", "deliveriesLast5Min"}


def test_teachers_see_their_own_groups_students_are_refused(client_for, schools):
    a = schools.a
    with dangerously_platform_context():
        status = Attendance.objects.get(pk=a.attendance.pk).status
    snapshot = client_for(a.teacher_user).get("/api/realtime/board").json()
    assert [g["name"] for g in snapshot["groups"]] == [a.group.name]
    assert snapshot["groups"][0]["attendance"].get(status, 0) in (0, 1)
    refused = client_for(a.student_user).get("/api/realtime/board")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden_role"
    assert client_for(a.outsider_user).get("/api/realtime/board").json()["groups"] == []
