import pytest

pytestmark = pytest.mark.django_db


def test_teacher_profile(client_for, schools):
    a = schools.a
    body = client_for(a.teacher_user).get("/api/me").json()
    assert body["role"] == "teacher"
    assert body["organization"]["id"] == str(a.org.pk)
    assert body["teacher_id"] == str(a.teacher.pk)
    assert body["student_id"] is None
    assert [g["id"] for g in body["groups"]] == [str(a.group.pk)]
    assert f"attendance:org_{a.org.pk}:group_{a.group.pk}" in body["topics"]
    assert f"groups:org_{a.org.pk}:teacher_{a.teacher.pk}" in body["topics"]
    assert f"attendance:org_{a.org.pk}:group_{a.other_group.pk}" not in body["topics"]


def test_student_profile(client_for, schools):
    a = schools.a
    body = client_for(a.student_user).get("/api/me").json()
    assert body["student_id"] == str(a.student.pk)
    assert [g["name"] for g in body["groups"]] == [a.group.name]
    assert f"rankings:org_{a.org.pk}:student_{a.student.pk}" in body["topics"]
    assert f"tasks:org_{a.org.pk}:student_{a.student.pk}" in body["topics"]
    assert f"notifications:org_{a.org.pk}:role_student" in body["topics"]
    assert not any(str(a.other_student.pk) in t for t in body["topics"])


def test_parent_profile_lists_children(client_for, schools):
    a = schools.a
    body = client_for(a.parent_user).get("/api/me").json()
    assert body["children"] == [{"student_id": str(a.student.pk), "full_name": a.student.full_name}]
    assert f"rankings:org_{a.org.pk}:student_{a.student.pk}" in body["topics"]


def test_profile_never_mentions_the_other_school(client_for, schools):
    body = client_for(schools.a.admin_user).get("/api/me").json()
    text = str(body)
    assert str(schools.b.org.pk) not in text
    assert str(schools.b.group.pk) not in text
