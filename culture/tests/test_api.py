"""GET /api/culture/context."""

from datetime import date
from unittest import mock

import pytest
from django.utils import timezone

from culture.models import PrayerCalculationSettings

pytestmark = pytest.mark.django_db
URL = "/api/culture/context"


def test_context_for_a_date_uses_the_callers_school(schools, client_for):
    response = client_for(schools.a.student_user).get(URL, {"date": "2026-02-19"})
    assert response.status_code == 200
    body = response.json()
    assert body["date"] == "2026-02-19"
    assert body["hijri_date"] == "1447-09-01"
    assert body["ramadan_mode"] is True
    assert body["prayer_times"]["fajr"] == "05:54"
    assert body["prayer_time_status"] in {"normal", "approaching_prayer", "in_prayer", "post_prayer"}
    assert body["next_prayer"] in {"fajr", "dhuhr", "asr", "maghrib", "isha"}


def test_each_school_gets_its_own_settings(schools, client_for, as_user):
    with as_user(schools.b.admin_user):
        PrayerCalculationSettings.objects.create(organization=schools.b.org, dhuhr_adjustment=15)
    a = client_for(schools.a.teacher_user).get(URL, {"date": "2026-03-13"}).json()
    b = client_for(schools.b.teacher_user).get(URL, {"date": "2026-03-13"}).json()
    assert a["prayer_times"]["dhuhr"] == "12:38"
    assert b["prayer_times"]["dhuhr"] == "12:48"


def test_without_date_it_is_now(schools, client_for):
    fixed = timezone.datetime.fromisoformat("2026-03-20T07:40:00+00:00")  # 12:40 in Tashkent
    with mock.patch("culture.api.views.timezone.now", return_value=fixed):
        body = client_for(schools.a.parent_user).get(URL).json()
    assert body["date"] == "2026-03-20"
    assert body["hijri_date"] == "1447-10-01"  # Eid al-Fitr: Ramadan is over
    assert body["ramadan_mode"] is False
    assert (body["prayer_time_status"], body["current_prayer"]) == ("in_prayer", "dhuhr")
    assert date.fromisoformat(body["date"])


@pytest.mark.parametrize(
    ("value", "code"),
    [("2026-13-01", "invalid_date"), ("tomorrow", "invalid_date"), ("1900-01-01", "date_out_of_range")],
)
def test_bad_dates_are_refused(schools, client_for, value, code):
    response = client_for(schools.a.admin_user).get(URL, {"date": value})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["details"] == {"date": value}


def test_error_message_in_the_users_language(schools, client_for):
    schools.a.admin_user.language = "ru"
    from harry_realtime.tenancy import dangerously_platform_context

    with dangerously_platform_context():
        schools.a.admin_user.save(update_fields=["language"])
    response = client_for(schools.a.admin_user).get(URL, {"date": "nope"})
    assert response.json()["error"]["message"] == "Дата должна быть в формате YYYY-MM-DD."


def test_requires_authentication(api):
    response = api.get(URL)
    assert response.status_code in (401, 403)
    assert "error" in response.json()
