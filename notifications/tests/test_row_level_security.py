"""Device tokens are visible to their owner and the school's admins only; deliveries to admins."""

import pytest
from django.db import DatabaseError, connection

from harry_realtime.tenancy import dangerously_platform_context
from notifications import delivery
from notifications.models import DeviceToken, PushDelivery

pytestmark = pytest.mark.django_db


def test_device_tokens_visible_to_owner_and_admin_only(schools, as_user, make_device):
    a, b = schools.a, schools.b
    device = make_device(a.student_user, "rls-device")
    make_device(b.student_user, "rls-device-b")

    def visible(user):
        with as_user(user):
            return set(DeviceToken.objects.values_list("token", flat=True))

    assert visible(a.student_user) == {"rls-device"}
    assert visible(a.admin_user) == {"rls-device"}
    assert visible(b.admin_user) == {"rls-device-b"}
    for user in (a.teacher_user, a.parent_user, a.other_student_user, a.outsider_user):
        assert visible(user) == set(), user
    with as_user(a.teacher_user):
        assert DeviceToken.objects.filter(pk=device.pk).update(is_active=False) == 0


def test_nobody_registers_a_device_for_someone_else(schools, as_user):
    a = schools.a
    with pytest.raises(DatabaseError), as_user(a.admin_user):
        DeviceToken.objects.create(organization=a.org, user=a.student_user, platform="android", token="forged")
    with pytest.raises(DatabaseError), as_user(a.student_user):
        DeviceToken.objects.create(organization=schools.b.org, user=a.student_user, platform="android", token="x")


def test_release_function_only_deactivates_by_exact_token(schools, as_user, make_device):
    make_device(schools.b.student_user, "phone-xyz")
    with as_user(schools.a.student_user), connection.cursor() as cursor:
        cursor.execute("SELECT push_release_device_token(%s)", ["phone-x"])
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT push_release_device_token(%s)", ["phone-xyz"])
        assert cursor.fetchone()[0] == 1


def test_deliveries_visible_to_admins_of_the_school_only(schools, as_user, providers, make_device, make_push):
    a = schools.a
    make_device(a.student_user, "rls-delivery")
    push = make_push(a.student_user)
    delivery.push_notification_deliver(notification_id=push.pk)
    with dangerously_platform_context():
        assert PushDelivery.objects.count() == 1

    for user, expected in ((a.admin_user, 1), (a.teacher_user, 0), (a.student_user, 0), (schools.b.admin_user, 0)):
        with as_user(user):
            assert PushDelivery.objects.count() == expected, user
