"""The admin as school staff and as the platform: roles by permission group, rows by RLS."""

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group as AuthGroup
from django.contrib.auth.models import Permission
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from culture.hijri import umm_al_qura_start
from culture.models import HijriMonthOverride
from harry_realtime.tenancy import dangerously_platform_context
from school.models import Organization, User
from school.services import PLATFORM_LOGIN, demo_data_seed
from school.staff import SCHOOL_ADMIN_GROUP, SCHOOL_ADMIN_PERMISSIONS

pytestmark = pytest.mark.django_db

PLATFORM_LISTS = [
    "/admin/django_celery_beat/periodictask/",
    "/admin/django_celery_beat/intervalschedule/",
    "/admin/auth/group/",
    "/admin/culture/hijrimonthoverride/",
]


def _changelist(model) -> str:
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/"


def test_seeded_school_admins_are_staff_in_the_school_admin_group_not_superusers(client):
    demo_data_seed()
    with dangerously_platform_context():
        admin_user = User.objects.get(username="admin@harry.uz")
        platform = User.objects.get(username=PLATFORM_LOGIN)
        school_superusers = User.objects.filter(organization__isnull=False, is_superuser=True).count()
    assert admin_user.is_staff and not admin_user.is_superuser
    assert list(admin_user.groups.values_list("name", flat=True)) == [SCHOOL_ADMIN_GROUP]
    assert school_superusers == 0
    assert platform.is_superuser and platform.organization_id is None
    response = client.post("/admin/login/", {"username": "admin@harry.uz", "password": "harry-demo"})
    assert response.status_code == 302
    assert client.get("/admin/django_celery_beat/periodictask/").status_code == 403


def test_the_database_refuses_a_superuser_flag_on_a_school_user(schools):
    from django.db import IntegrityError

    with pytest.raises(IntegrityError, match="users_superuser_is_platform_only"), dangerously_platform_context():
        User.objects.filter(pk=schools.a.admin_user.pk).update(is_superuser=True)


def test_school_admin_never_sees_platform_objects(client, staff_login, schools):
    with dangerously_platform_context():
        every = IntervalSchedule.objects.create(every=30, period="seconds")
        task = PeriodicTask.objects.create(
            name="every-school-job", task="presence.tasks.expire_presence", interval=every
        )
        AuthGroup.objects.create(name="made-by-the-platform")
    staff_login(schools.a.admin_user)

    for url in PLATFORM_LISTS:
        assert client.get(url).status_code == 403, url
    assert client.get(f"/admin/django_celery_beat/periodictask/{task.pk}/change/").status_code == 403
    assert client.post(f"/admin/django_celery_beat/periodictask/{task.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.post("/admin/auth/group/add/", {"name": "visible-to-bravo"}).status_code == 403
    assert client.get("/admin/school/organization/add/").status_code == 403
    index = client.get("/admin/").content.decode()
    for absent in ("Periodic tasks", "Hijri", "/admin/auth/group/"):
        assert absent not in index, absent
    organizations = client.get("/admin/school/organization/").content.decode()
    assert schools.a.org.name in organizations and schools.b.org.name not in organizations
    with dangerously_platform_context():
        assert PeriodicTask.objects.filter(pk=task.pk, enabled=True).exists()
        assert not AuthGroup.objects.filter(name="visible-to-bravo").exists()


def test_school_admin_cannot_see_or_grant_the_superuser_flag(client, staff_login, schools):
    teacher = schools.a.teacher_user
    staff_login(schools.a.admin_user)
    url = f"/admin/school/user/{teacher.pk}/change/"
    form = client.get(url).content.decode()
    assert 'name="is_superuser"' not in form and 'name="groups"' not in form and 'name="user_permissions"' not in form
    assert 'name="is_staff"' in form

    response = client.post(
        url,
        {
            "username": teacher.username,
            "full_name": "Renamed Teacher",
            "email": teacher.email,
            "organization": str(schools.a.org.pk),
            "role": "teacher",
            "language": "en",
            "is_active": "on",
            "is_superuser": "on",
            "groups": [str(AuthGroup.objects.get(name=SCHOOL_ADMIN_GROUP).pk)],
        },
    )

    assert response.status_code == 302, response.content[:2000]
    with dangerously_platform_context():
        teacher.refresh_from_db()
    assert teacher.full_name == "Renamed Teacher"
    assert not teacher.is_superuser and not teacher.groups.exists()


def test_school_admin_sees_only_their_schools_rows(client, staff_login, schools):
    staff_login(schools.a.admin_user)
    page = client.get("/admin/school/student/").content.decode()
    assert schools.a.student.full_name in page
    assert schools.b.student.full_name not in page
    assert client.get(f"/admin/school/student/{schools.b.student.pk}/change/").status_code in (302, 404)
    users = client.get("/admin/school/user/").content.decode()
    assert schools.a.teacher_user.username in users and schools.b.teacher_user.username not in users


def test_a_write_refused_by_row_level_security_is_a_403_not_a_500(client, staff_login, schools):
    """Even a staff member given the model permission cannot write a platform row: PostgreSQL
    refuses, and the admin says so."""
    with dangerously_platform_context():
        override = HijriMonthOverride.objects.create(
            country="KZ", hijri_year=1448, hijri_month=9, gregorian_start=umm_al_qura_start(1448, 9), source="muftiate"
        )
        staff = schools.a.admin_user
        staff.user_permissions.add(Permission.objects.get(codename="change_hijrimonthoverride"))
    staff_login(staff)
    url = f"/admin/culture/hijrimonthoverride/{override.pk}/change/"
    assert client.get(url).status_code == 200

    response = client.post(
        url,
        {
            "country": override.country,
            "hijri_year": override.hijri_year,
            "hijri_month": override.hijri_month,
            "gregorian_start": override.gregorian_start.isoformat(),
            "source": "changed by a school",
        },
    )

    assert response.status_code == 403
    assert "row-level security" in response.content.decode()
    with dangerously_platform_context():
        assert HijriMonthOverride.objects.get(pk=override.pk).source == override.source
    assert client.get("/admin/").status_code == 200  # the session and its transaction are fine


def test_school_admin_lists_follow_the_group(client, staff_login, schools):
    staff_login(schools.a.admin_user)
    allowed = set(SCHOOL_ADMIN_PERMISSIONS)
    for model in admin.site._registry:
        label = f"{model._meta.app_label}.{model._meta.model_name}"
        expected = 200 if label in allowed else 403
        assert client.get(_changelist(model)).status_code == expected, label


def test_platform_superuser_sees_every_school_and_each_rows_school(client, platform_login, schools):
    platform_login()
    for model in admin.site._registry:
        assert client.get(_changelist(model)).status_code == 200, model
    page = client.get("/admin/school/student/").content.decode()
    assert schools.a.student.full_name in page and schools.b.student.full_name in page
    assert "column-organization" in page and 'data-filter-title="organization"' in page.replace("By ", "")
    assert client.get("/admin/school/organization/add/").status_code == 200


def test_school_staff_get_no_organization_column(client, staff_login, schools):
    staff_login(schools.a.admin_user)
    assert "column-organization" not in client.get("/admin/school/student/").content.decode()


def test_staff_without_the_group_have_no_admin(client, schools):
    response = client.post("/admin/login/", {"username": schools.a.teacher_user.username, "password": "harry-demo"})
    assert response.status_code == 200  # the login form again: not staff


def test_view_site_points_to_the_staff_board(client, staff_login, schools):
    staff_login(schools.a.admin_user)
    index = client.get("/admin/").content.decode()
    assert 'href="/board/"' in index and "Staff board" in index


def test_every_row_reads_as_words_not_as_an_object_id(client, platform_login, schools):
    platform_login()
    for model in admin.site._registry:
        with dangerously_platform_context():
            texts = [str(row) for row in model._base_manager.all()[:3]]
        for text in texts:
            assert "object (" not in text and text.strip(), (model, text)


def test_organization_is_preselected_for_school_staff(client, staff_login, schools):
    staff_login(schools.a.admin_user)
    form = client.get("/admin/school/group/add/").content.decode()
    assert f'<option value="{schools.a.org.pk}" selected>' in form
    with dangerously_platform_context():
        assert Organization.objects.count() == 2
