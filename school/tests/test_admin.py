import pytest

from harry_realtime.tenancy import dangerously_platform_context
from school.models import User

pytestmark = pytest.mark.django_db


def _staff_login(client, user):
    with dangerously_platform_context():
        user.is_staff = True
        user.is_superuser = True
        user.save()
    response = client.post("/admin/login/", {"username": user.username, "password": "harry-demo", "next": "/admin/"})
    assert response.status_code == 302, response.content[:500]


def test_school_staff_see_their_own_school_only(client, schools):
    _staff_login(client, schools.a.admin_user)
    page = client.get("/admin/school/student/").content.decode()
    assert schools.a.student.full_name in page
    assert schools.b.student.full_name not in page
    orgs = client.get("/admin/school/organization/").content.decode()
    assert schools.a.org.name in orgs and schools.b.org.name not in orgs
    assert client.get(f"/admin/school/student/{schools.b.student.pk}/change/").status_code in (302, 404)


def test_every_model_has_a_working_changelist(client, schools):
    from django.contrib import admin

    _staff_login(client, schools.a.admin_user)
    for model in admin.site._registry:
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        assert client.get(url).status_code == 200, url


def test_platform_superuser_sees_every_school(client, schools):
    with dangerously_platform_context():
        User.objects.create_superuser("root@platform.test", "harry-demo")
    response = client.post("/admin/login/", {"username": "root@platform.test", "password": "harry-demo"})
    assert response.status_code == 302
    page = client.get("/admin/school/student/").content.decode()
    assert schools.a.student.full_name in page and schools.b.student.full_name in page


def test_staff_without_superuser_flag_has_no_admin_rights_by_default(client, schools):
    response = client.post("/admin/login/", {"username": schools.a.teacher_user.username, "password": "harry-demo"})
    assert response.status_code == 200  # the login form again: not staff
