import pytest

from harry_realtime.tenancy import dangerously_platform_context
from notifications.models import PushNotification

from .conftest import reload

pytestmark = pytest.mark.django_db


def test_changelist_shows_delivery_and_open_rates_for_own_school(client, staff_login, schools, make_push):
    a = schools.a
    sent = [make_push(a.student_user, title_en=f"Sent {i}") for i in range(3)]
    make_push(a.student_user, title_en="Failed one")
    make_push(schools.b.student_user, title_en="Other school")
    with dangerously_platform_context():
        PushNotification.objects.filter(pk__in=[p.pk for p in sent]).update(delivery_status="sent")
        PushNotification.objects.filter(title_en="Failed one").update(delivery_status="failed")
        PushNotification.objects.filter(pk=sent[0].pk).update(opened_at="2026-01-01T00:00:00Z")
    staff_login(a.admin_user)

    page = client.get("/admin/notifications/pushnotification/").content.decode()

    assert "Sent 0" in page and "Other school" not in page
    assert "delivery rate 75.0%" in page
    assert "open rate 33.3%" in page


def test_resend_action_creates_a_fresh_pending_copy(client, staff_login, schools, make_push):
    a = schools.a
    original = make_push(a.student_user, title_en="Try again")
    with dangerously_platform_context():
        PushNotification.objects.filter(pk=original.pk).update(delivery_status="failed", error_message="x")
    staff_login(a.admin_user)

    response = client.post(
        "/admin/notifications/pushnotification/",
        {"action": "resend", "_selected_action": [str(original.pk)]},
    )

    assert response.status_code == 302
    with dangerously_platform_context():
        copy = PushNotification.objects.exclude(pk=original.pk).get(title_en="Try again")
    assert copy.delivery_status == "pending" and copy.error_message is None
    assert copy.cultural_context["resent_from"] == str(original.pk)
    assert reload(original).delivery_status == "failed"


def test_device_and_delivery_changelists_render(client, staff_login, schools, make_device):
    make_device(schools.a.student_user, "admin-device")
    staff_login(schools.a.admin_user)
    assert client.get("/admin/notifications/devicetoken/").status_code == 200
    assert client.get("/admin/notifications/pushdelivery/").status_code == 200
