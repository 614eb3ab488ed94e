"""Prayer-time astronomy and prayer windows, with no database access.

`compute_timetable(day, location, method)` gives the day's fajr, sunrise, dhuhr, asr, maghrib and
isha as aware datetimes in the location's timezone, computed by al-falak (Meeus solar position)
with the school's angles, asr method and minute adjustments. `prayer_status(at, ...)` places a
moment relative to those times: approaching (before a prayer), in the prayer window, just after
it, or normal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from alfalak import CalculationParameters, Madhab, PrayerAdjustments, PrayerTimes

from .models import PRAYERS, TIMETABLE, AsrMethod

NORMAL = "normal"
APPROACHING = "approaching_prayer"
IN_PRAYER = "in_prayer"
POST_PRAYER = "post_prayer"


@dataclass(frozen=True)
class Location:
    latitude: float
    longitude: float
    timezone: str
    country: str = "UZ"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Method:
    """Calculation parameters; the defaults are the Muslim Board of Uzbekistan's."""

    fajr_angle: float = 15.4
    isha_angle: float = 15.0
    asr_method: str = AsrMethod.HANAFI
    # (prayer, minutes) pairs, a tuple so a Method can key the timetable cache.
    adjustments: tuple[tuple[str, int], ...] = (("dhuhr", 5), ("maghrib", 3))
    approaching_minutes: int = 10
    prayer_window_minutes: int = 20
    post_prayer_minutes: int = 15


@lru_cache(maxsize=4096)
def compute_timetable(day: date, location: Location, method: Method) -> dict[str, datetime]:
    """The day's six times (TIMETABLE order), aware in the location's timezone, to the minute.

    Cached: the same day, place and method always give the same times. Callers must not mutate
    the returned dict.
    """
    adjustments = dict(method.adjustments)
    params = CalculationParameters(
        fajr_angle=float(method.fajr_angle),
        isha_angle=float(method.isha_angle),
        adjustments=PrayerAdjustments(**{name: int(adjustments.get(name, 0)) for name in TIMETABLE}),
    )
    params.madhab = Madhab.HANAFI if method.asr_method == AsrMethod.HANAFI else Madhab.SHAFI
    times = PrayerTimes(
        (float(location.latitude), float(location.longitude)),
        datetime(day.year, day.month, day.day),
        calculation_parameters=params,
        time_zone=location.zone,
    )
    return {name: getattr(times, name) for name in TIMETABLE}


@dataclass(frozen=True)
class PrayerStatus:
    status: str
    current_prayer: str | None
    current_prayer_at: datetime | None
    next_prayer: str
    next_prayer_at: datetime
    window_ends_at: datetime | None

    @property
    def in_window(self) -> bool:
        return self.status == IN_PRAYER


def _prayer_moments(day: date, location: Location, method: Method) -> list[tuple[str, datetime]]:
    moments = []
    for offset in (-1, 0, 1):
        table = compute_timetable(day + timedelta(days=offset), location, method)
        moments += [(name, table[name]) for name in PRAYERS]
    return moments


def prayer_status(at: datetime, location: Location, method: Method) -> PrayerStatus:
    """Where `at` falls relative to the prayers around it.

    in_prayer lasts `prayer_window_minutes` from a prayer's time; post_prayer the
    `post_prayer_minutes` after that; approaching_prayer the `approaching_minutes` before a
    prayer. Yesterday's and tomorrow's prayers are included so isha's window after midnight and
    the next fajr are right.
    """
    local = at.astimezone(location.zone)
    moments = _prayer_moments(local.date(), location, method)
    window = timedelta(minutes=method.prayer_window_minutes)
    post = timedelta(minutes=method.post_prayer_minutes)
    approaching = timedelta(minutes=method.approaching_minutes)
    next_name, next_at = next((name, when) for name, when in moments if when > local)
    started = [(name, when) for name, when in moments if when <= local]
    if started:
        name, when = started[-1]
        if local < when + window:
            return PrayerStatus(IN_PRAYER, name, when, next_name, next_at, when + window)
        if local < when + window + post and local < next_at - approaching:
            return PrayerStatus(POST_PRAYER, name, when, next_name, next_at, None)
    if local >= next_at - approaching:
        return PrayerStatus(APPROACHING, next_name, next_at, next_name, next_at, None)
    return PrayerStatus(NORMAL, None, None, next_name, next_at, None)


def prayers_starting(
    after: datetime, until: datetime, location: Location, method: Method
) -> list[tuple[str, datetime]]:
    """Prayers whose time is in (after, until], in order, with their local datetimes."""
    local = after.astimezone(location.zone)
    return [(name, when) for name, when in _prayer_moments(local.date(), location, method) if after < when <= until]
