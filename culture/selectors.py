"""Reads of the cultural calendar for an organization. Call inside that organization's tenant
context (or the platform context): the school's calculation settings are a tenant table.

Public API (used by events, presence, notifications and syncqueue):

`prayer_times_for(organization, day: date) -> dict[str, datetime]`
    The day's {"fajr", "sunrise", "dhuhr", "asr", "maghrib", "isha"} as aware datetimes in the
    organization's timezone, in that order.

`cultural_context_for(organization, at: datetime) -> dict`
    JSON-ready context at an instant (`at` aware; naive is read as UTC)::

        {"date": "2026-02-19", "timezone": "Asia/Tashkent",
         "hijri_date": "1447-09-01",
         "hijri": {"year": 1447, "month": 9, "day": 1, "source": "announced"|"umm_al_qura",
                   "month_name": {"en", "uz", "ru", "ar"}, "text": {"en": "1 Ramadan 1447 AH", ...}},
         "ramadan_mode": true,
         "prayer_times": {"fajr": "05:21", "sunrise": ..., "isha": "19:43"},
         "prayer_time_status": "normal"|"approaching_prayer"|"in_prayer"|"post_prayer",
         "current_prayer": "dhuhr"|null, "current_prayer_time": "12:38"|null,
         "next_prayer": "asr", "next_prayer_time": "16:41", "next_prayer_at": ISO-8601,
         "minutes_to_next_prayer": 123, "prayer_window_ends_at": ISO-8601|null}

    `current_prayer` names the prayer the status is about (the one approaching, in progress or
    just finished); it is null when the status is normal.

`client_cultural_context(context: dict) -> dict`
    The spec's camelCase `culturalContext` of the connect response, built from the above.

`event_cultural_columns(context: dict) -> tuple[dict, dict]`
    Values for realtime_events.cultural_context and .islamic_calendar_context.

`hijri_date_for(day: date, country: str) -> HijriDay`, `location_of(organization)`,
`method_for(organization)`: the building blocks, also used by the `cultural_context` command.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from school.models import Organization

from . import messages
from .hijri import HijriDay, hijri_date
from .models import HijriMonthOverride, PrayerCalculationSettings
from .prayer import Location, Method, compute_timetable, prayer_status


def location_of(organization: Organization) -> Location:
    return Location(
        latitude=float(organization.latitude),
        longitude=float(organization.longitude),
        timezone=organization.timezone,
        country=(organization.country or "").upper(),
    )


def method_for(organization: Organization) -> Method:
    """The school's calculation settings, or the Muslim Board of Uzbekistan defaults."""
    row = PrayerCalculationSettings.objects.filter(organization_id=organization.pk).first()
    if row is None:
        return Method()
    return Method(
        fajr_angle=float(row.fajr_angle),
        isha_angle=float(row.isha_angle),
        asr_method=row.asr_method,
        adjustments=tuple(
            (name, getattr(row, f"{name}_adjustment"))
            for name in ("fajr", "sunrise", "dhuhr", "asr", "maghrib", "isha")
        ),
        approaching_minutes=row.approaching_minutes,
        prayer_window_minutes=row.prayer_window_minutes,
        post_prayer_minutes=row.post_prayer_minutes,
    )


def hijri_overrides(country: str) -> dict[tuple[int, int], date]:
    rows = HijriMonthOverride.objects.filter(country=country.upper()).values_list(
        "hijri_year", "hijri_month", "gregorian_start"
    )
    return {(year, month): start for year, month, start in rows}


def hijri_date_for(day: date, country: str) -> HijriDay:
    return hijri_date(day, hijri_overrides(country))


def prayer_times_for(organization: Organization, day: date) -> dict[str, datetime]:
    return dict(compute_timetable(day, location_of(organization), method_for(organization)))


def _hhmm(moment: datetime | None) -> str | None:
    return moment.strftime("%H:%M") if moment else None


def context_at(at: datetime, location: Location, method: Method, overrides: dict) -> dict:
    """The cultural context for any place and method; `cultural_context_for` fills them in."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    local = at.astimezone(location.zone)
    hijri = hijri_date(local.date(), overrides)
    status = prayer_status(at, location, method)
    timetable = compute_timetable(local.date(), location, method)
    minutes_to_next = int((status.next_prayer_at - local).total_seconds() // 60)
    return {
        "date": local.date().isoformat(),
        "timezone": location.timezone,
        "hijri_date": hijri.isoformat(),
        "hijri": {
            "year": hijri.year,
            "month": hijri.month,
            "day": hijri.day,
            "source": hijri.source,
            "month_name": messages.multilingual(messages.HIJRI_MONTHS[hijri.month]),
            "text": {
                language: messages.hijri_date_text(hijri.year, hijri.month, hijri.day, language)
                for language in messages.LANGUAGES
            },
        },
        "ramadan_mode": hijri.is_ramadan,
        "prayer_times": {name: _hhmm(moment) for name, moment in timetable.items()},
        "prayer_time_status": status.status,
        "current_prayer": status.current_prayer,
        "current_prayer_time": _hhmm(status.current_prayer_at),
        "next_prayer": status.next_prayer,
        "next_prayer_time": _hhmm(status.next_prayer_at),
        "next_prayer_at": status.next_prayer_at.isoformat(),
        "minutes_to_next_prayer": minutes_to_next,
        "prayer_window_ends_at": status.window_ends_at.isoformat() if status.window_ends_at else None,
    }


def cultural_context_for(organization: Organization, at: datetime) -> dict:
    location = location_of(organization)
    return context_at(at, location, method_for(organization), hijri_overrides(location.country))


def client_cultural_context(context: dict) -> dict:
    return {
        "currentPrayerTime": context["current_prayer_time"],
        "currentPrayer": context["current_prayer"],
        "nextPrayerTime": context["next_prayer_time"],
        "nextPrayer": context["next_prayer"],
        "prayerTimeStatus": context["prayer_time_status"],
        "prayerTimeRemaining": context["minutes_to_next_prayer"],
        "ramadanMode": context["ramadan_mode"],
        "islamicDate": context["hijri_date"],
    }


def event_cultural_columns(context: dict) -> tuple[dict, dict]:
    cultural = {
        "prayer_time_context": context["prayer_time_status"],
        "current_prayer": context["current_prayer"],
        "ramadan_mode": context["ramadan_mode"],
        "islamic_date": context["hijri_date"],
        "timezone": context["timezone"],
    }
    islamic = {
        "hijri_date": context["hijri_date"],
        "hijri_year": context["hijri"]["year"],
        "hijri_month": context["hijri"]["month"],
        "hijri_day": context["hijri"]["day"],
        "hijri_source": context["hijri"]["source"],
        "ramadan_mode": context["ramadan_mode"],
        "gregorian_date": context["date"],
    }
    return cultural, islamic
