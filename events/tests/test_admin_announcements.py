"""The admin's Announcements page: sends what the API sends, shows the delivery summary, stays in
the admin's school, and renders text fields right to left when the text is."""

import pytest

from events.models import Announcement, RealtimeEvent
from harry_realtime.tenancy import dangerously_platform_context
from school.models import User

pytestmark = pytest.mark.django_db

ADD = "/admin/events/announcement/add/"


def form(**overrides) -> dict:
    return {
        "kind": "emergency_alert",
        "audience": "all",
        "title_en": "Evacuate",
        "message_en": "Leave by the east exit",
        "title_ar": "إخلاء",
        "expires_in_hours": "24",
    } | overrides


def test_admin_sends_an_emergency_alert_and_sees_its_delivery(client, staff_login, schools):
    a = schools.a
    staff_login(a.admin_user)
    page = client.get(ADD)
    assert page.status_code == 200 and b'dir="auto"' in page.content
    response = client.post(ADD, form())
    assert response.status_code == 302, response.content.decode()[:2000]
    with dangerously_platform_context():
        (announcement,) = Announcement.objects.all()
        copies = RealtimeEvent.objects.filter(source_record_id=announcement.pk)
        recipients = set(copies.values_list("target_user_id", flat=True))
        assert recipients == set(User.objects.filter(organization=a.org).values_list("pk", flat=True))
        assert set(copies.values_list("priority", flat=True)) == {"critical"}
    assert (announcement.kind, announcement.title) == ("emergency_alert", {"en": "Evacuate", "ar": "إخلاء"})

    listing = client.get("/admin/events/announcement/").content.decode()
    assert "Evacuate" in listing
    detail = client.get(f"/admin/events/announcement/{announcement.pk}/change/").content.decode()
    assert f"{len(recipients)} recipients: 0 reached live, 0 by push, 0 expired, {len(recipients)} not yet" in detail


def test_the_form_refuses_an_emergency_alert_to_one_role(client, staff_login, schools):
    staff_login(schools.a.admin_user)
    response = client.post(ADD, form(audience="teacher"))
    assert response.status_code == 200 and "An emergency alert goes to the whole school." in response.content.decode()
    with dangerously_platform_context():
        assert not Announcement.objects.exists()


def test_a_system_announcement_to_one_role_and_other_schools_do_not_see_it(client, staff_login, schools):
    a, b = schools.a, schools.b
    staff_login(a.admin_user)
    assert client.post(ADD, form(kind="system_announcement", audience="parent")).status_code == 302
    with dangerously_platform_context():
        (announcement,) = Announcement.objects.all()
        targets = set(
            RealtimeEvent.objects.filter(source_record_id=announcement.pk).values_list("target_user", flat=True)
        )
    assert targets == {a.parent_user.pk}
    client.logout()
    staff_login(b.admin_user)
    assert "Evacuate" not in client.get("/admin/events/announcement/").content.decode()
    assert client.get(f"/admin/events/announcement/{announcement.pk}/change/").status_code in (302, 404)
