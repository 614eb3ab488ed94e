"""Hijri dates: Umm al-Qura (hijridate) corrected by announced month starts, no database access.

`hijri_date(day, overrides)` takes the country's announced month starts as
`{(hijri_year, hijri_month): first_gregorian_day}`. A month starts on its announced day if there
is one, else on Umm al-Qura's day moved just enough that the month before lasts 29 or 30 days; so
the days after an announcement count from it, and the calendar rejoins Umm al-Qura within a
month. The arithmetic (tabular) calendar is not used: it is a day off on about half of the
recent announcements.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from hijridate import Gregorian, Hijri

RAMADAN = 9
# Announcements move a month start by a day or two; starting the chain this many months earlier
# lets any announcement that still matters carry into the month asked for.
_CHAIN_MONTHS = 3


@dataclass(frozen=True)
class HijriDay:
    year: int
    month: int
    day: int
    # "announced", "umm_al_qura", or "adjusted" (Umm al-Qura's start moved by an announcement
    # of an earlier month).
    source: str

    def isoformat(self) -> str:
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"

    @property
    def is_ramadan(self) -> bool:
        return self.month == RAMADAN


def _shift(year: int, month: int, by: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + by
    return index // 12, index % 12 + 1


def umm_al_qura_start(year: int, month: int) -> date:
    return date(*Hijri(year, month, 1).to_gregorian().datetuple())


def hijri_date(day: date, overrides: Mapping[tuple[int, int], date] | None = None) -> HijriDay:
    overrides = overrides or {}
    base = Gregorian(day.year, day.month, day.day).to_hijri()
    months = [_shift(base.year, base.month, by) for by in range(-_CHAIN_MONTHS, 2)]
    starts: list[tuple[date, tuple[int, int]]] = []
    for year, month in months:
        announced = overrides.get((year, month))
        if announced:
            start = announced
        else:
            start = umm_al_qura_start(year, month)
            if starts:
                previous = starts[-1][0]
                start = min(max(start, previous + timedelta(days=29)), previous + timedelta(days=30))
        starts.append((start, (year, month)))
    start, (year, month) = max(entry for entry in starts if entry[0] <= day)
    if overrides.get((year, month)) == start:
        source = "announced"
    else:
        source = "umm_al_qura" if start == umm_al_qura_start(year, month) else "adjusted"
    return HijriDay(year, month, (day - start).days + 1, source)
