"""The push statistics line speaks the admin's language."""

import pytest

from harry_realtime.tenancy import dangerously_platform_context
from notifications.models import PushNotification

pytestmark = pytest.mark.django_db


def test_push_statistics_line_in_russian_and_arabic(client, staff_login, schools, make_push):
    a = schools.a
    pushes = [make_push(a.student_user, title_en=f"P{i}") for i in range(2)]
    with dangerously_platform_context():
        PushNotification.objects.filter(pk=pushes[0].pk).update(delivery_status="sent")
        PushNotification.objects.filter(pk=pushes[1].pk).update(delivery_status="failed")
    staff_login(a.admin_user)

    russian = client.get("/admin/notifications/pushnotification/", HTTP_ACCEPT_LANGUAGE="ru").content.decode()
    assert "Пушей: 2" in russian and "доставлено 50,0%" in russian and "открыто: 0" in russian
    arabic = client.get("/admin/notifications/pushnotification/", HTTP_ACCEPT_LANGUAGE="ar").content.decode()
    assert "نسبة التسليم" in arabic and "الإشعارات: 2" in arabic and 'dir="rtl"' in arabic
    english = client.get("/admin/notifications/pushnotification/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "2 pushes" in english and "delivery rate 50.0%" in english


def test_text_fields_follow_their_texts_direction(client, staff_login, schools, make_push):
    push = make_push(schools.a.student_user, title_en="Hello", title_ar="مرحبا")
    staff_login(schools.a.admin_user)
    page = client.get(f"/admin/notifications/pushnotification/{push.pk}/change/").content.decode()
    assert 'dir="auto"' in page and "مرحبا" in page


def test_model_and_filter_labels_are_translated(client, staff_login, schools):
    staff_login(schools.a.admin_user)
    page = client.get("/admin/notifications/pushnotification/", HTTP_ACCEPT_LANGUAGE="ru").content.decode()
    assert "push-уведомление" in page  # the model's name
    assert "статус доставки" in page.lower() and "приоритет" in page.lower()  # filters by field labels
