import pytest

from harry_realtime.tenancy import dangerously_platform_context
from school import models
from school.services import demo_data_seed

pytestmark = pytest.mark.django_db


def _counts():
    with dangerously_platform_context():
        return {m.__name__: m.objects.count() for m in (models.User, models.Student, models.Attendance, models.Group)}


def test_seed_is_idempotent_and_has_the_contract_logins(api):
    demo_data_seed()
    first = _counts()
    demo_data_seed()
    assert _counts() == first
    for login in (
        "admin@harry.uz",
        "teacher@harry.uz",
        "student@harry.uz",
        "parent@harry.uz",
        "teacher@samarkand.uz",
        "student@samarkand.uz",
    ):
        response = api.post("/api/auth/token", {"username": login, "password": "harry-demo"}, format="json")
        assert response.status_code == 200, login


def test_demo_relations_hold(client_for, api):
    demo_data_seed()
    with dangerously_platform_context():
        teacher = models.User.objects.get(username="teacher@harry.uz")
        student = models.User.objects.get(username="student@harry.uz")
        tashkent = models.Organization.objects.get(slug="harry-tashkent")
        ages = sorted({s.date_of_birth.year for s in models.Student.objects.filter(organization=tashkent)})
    assert len(ages) == 9
    teacher_groups = {g["id"] for g in client_for(teacher).get("/api/me").json()["groups"]}
    student_groups = {g["id"] for g in client_for(student).get("/api/me").json()["groups"]}
    assert teacher_groups & student_groups
    parent = client_for(_user("parent@harry.uz"))
    assert parent.get("/api/me").json()["children"][0]["full_name"].startswith("Student aged 12")
    assert float(tashkent.latitude) == pytest.approx(41.2995)


def _user(username):
    with dangerously_platform_context():
        return models.User.objects.get(username=username)


def test_ranking_change_columns_are_maintained_by_the_database(schools, as_user):
    from school.models import StudentRanking

    a = schools.a
    with as_user(a.teacher_user):
        StudentRanking.objects.filter(pk=a.ranking.pk).update(current_rank=3)
        up = StudentRanking.objects.get(pk=a.ranking.pk)
        StudentRanking.objects.filter(pk=a.ranking.pk).update(total_points=150)
        points = StudentRanking.objects.get(pk=a.ranking.pk)
        StudentRanking.objects.filter(pk=a.ranking.pk).update(current_rank=4, ranking_metadata={"x": 1})
        down = StudentRanking.objects.get(pk=a.ranking.pk)
    assert (up.position_change_delta, up.celebration_triggered) == (2, True) and up.last_position_change
    assert (points.position_change_delta, points.celebration_triggered) == (2, False)  # +30 points, same rank
    assert points.last_position_change == up.last_position_change
    assert (down.position_change_delta, down.celebration_triggered) == (-1, False)
    assert down.last_position_change >= up.last_position_change
