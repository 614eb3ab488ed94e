"""Cultural context per organization: settings per school (RLS), overrides per country."""

from datetime import date, datetime
from decimal import Decimal

import pytest

from culture.models import HijriMonthOverride, PrayerCalculationSettings
from culture.selectors import (
    client_cultural_context,
    cultural_context_for,
    event_cultural_columns,
    hijri_date_for,
    prayer_times_for,
)
from harry_realtime.tenancy import dangerously_platform_context

pytestmark = pytest.mark.django_db


def test_prayer_times_for_uses_board_defaults_without_settings(schools, as_user):
    with as_user(schools.a.admin_user):
        times = prayer_times_for(schools.a.org, date(2026, 3, 13))
    assert list(times) == ["fajr", "sunrise", "dhuhr", "asr", "maghrib", "isha"]
    assert {k: v.strftime("%H:%M") for k, v in times.items()} == {
        "fajr": "05:21",
        "sunrise": "06:39",
        "dhuhr": "12:38",
        "asr": "16:41",
        "maghrib": "18:30",
        "isha": "19:43",
    }
    assert str(times["fajr"].tzinfo) == "Asia/Tashkent"


def test_school_settings_apply_to_that_school_only(schools, as_user):
    with as_user(schools.a.admin_user):
        PrayerCalculationSettings.objects.create(
            organization=schools.a.org, asr_method="standard", dhuhr_adjustment=10, fajr_angle=Decimal("18")
        )
    with as_user(schools.a.admin_user):
        a = prayer_times_for(schools.a.org, date(2026, 3, 13))
    with as_user(schools.b.admin_user):
        b = prayer_times_for(schools.b.org, date(2026, 3, 13))
        # Row-level security: school b cannot see school a's settings at all.
        assert PrayerCalculationSettings.objects.count() == 0
    assert a["dhuhr"].strftime("%H:%M") == "12:43"
    assert a["asr"] < b["asr"]
    assert a["fajr"] < b["fajr"]
    assert b["dhuhr"].strftime("%H:%M") == "12:38"


def test_cultural_context_in_ramadan_during_dhuhr(schools, as_user):
    at = datetime.fromisoformat("2026-03-13T12:45:00+05:00")
    with as_user(schools.a.student_user):
        context = cultural_context_for(schools.a.org, at)
    assert context["date"] == "2026-03-13"
    assert context["hijri_date"] == "1447-09-23"
    assert context["hijri"]["source"] == "announced"
    assert context["hijri"]["text"]["en"] == "23 Ramadan 1447 AH"
    assert set(context["hijri"]["text"]) == {"en", "uz", "ru", "ar"}
    assert context["ramadan_mode"] is True
    assert context["prayer_time_status"] == "in_prayer"
    assert (context["current_prayer"], context["current_prayer_time"]) == ("dhuhr", "12:38")
    assert (context["next_prayer"], context["next_prayer_time"]) == ("asr", "16:41")
    assert context["minutes_to_next_prayer"] == 236
    assert context["prayer_window_ends_at"] == "2026-03-13T12:58:00+05:00"
    client = client_cultural_context(context)
    assert client["ramadanMode"] is True and client["islamicDate"] == "1447-09-23"
    assert client["nextPrayerTime"] == "16:41"
    cultural, islamic = event_cultural_columns(context)
    assert cultural["prayer_time_context"] == "in_prayer"
    assert islamic["hijri_month"] == 9 and islamic["gregorian_date"] == "2026-03-13"


def test_naive_instant_is_read_as_utc(schools, as_user):
    with as_user(schools.a.admin_user):
        context = cultural_context_for(schools.a.org, datetime(2026, 3, 13, 7, 45))
    assert context["prayer_time_status"] == "in_prayer"


def test_override_table_is_per_country_and_editable(schools, as_user):
    with as_user(schools.a.admin_user):
        assert hijri_date_for(date(2026, 2, 19), "UZ").isoformat() == "1447-09-01"
        # Other countries follow Umm al-Qura until someone announces otherwise.
        assert hijri_date_for(date(2026, 2, 19), "KZ").isoformat() == "1447-09-02"
    with dangerously_platform_context():
        HijriMonthOverride.objects.create(
            country="KZ", hijri_year=1447, hijri_month=9, gregorian_start=date(2026, 2, 19)
        )
    with as_user(schools.a.admin_user):
        assert hijri_date_for(date(2026, 2, 19), "KZ").isoformat() == "1447-09-01"


def test_schools_cannot_write_country_overrides(schools, as_user):
    from django.db import ProgrammingError

    with pytest.raises(ProgrammingError), as_user(schools.a.admin_user):
        HijriMonthOverride.objects.create(
            country="UZ", hijri_year=1448, hijri_month=9, gregorian_start=date(2027, 2, 8)
        )


def test_admin_lists_culture_models_for_the_platform_superuser(client):
    from school.tests.factories import UserFactory

    with dangerously_platform_context():
        root = UserFactory(username="root@platform.test", is_staff=True, is_superuser=True, role="admin")
    client.force_login(root)
    for path in ("hijrimonthoverride", "prayercalculationsettings", "prayerreminder"):
        response = client.get(f"/admin/culture/{path}/")
        assert response.status_code == 200, path
    page = client.get("/admin/culture/hijrimonthoverride/").content.decode()
    assert "Muslim Board of Uzbekistan" in page


def test_override_far_from_umm_al_qura_is_rejected_as_a_typo():
    from django.core.exceptions import ValidationError

    typo = HijriMonthOverride(country="UZ", hijri_year=1448, hijri_month=9, gregorian_start=date(2026, 2, 19))
    with pytest.raises(ValidationError) as error:
        typo.full_clean()
    assert "gregorian_start" in error.value.message_dict
    plausible = HijriMonthOverride(country="UZ", hijri_year=1448, hijri_month=9, gregorian_start=date(2027, 2, 9))
    plausible.full_clean()
