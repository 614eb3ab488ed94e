"""Prayer times against the Muslim Board of Uzbekistan's Tashkent timetable, and prayer windows."""

import csv
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from culture.prayer import (
    APPROACHING,
    IN_PRAYER,
    NORMAL,
    POST_PRAYER,
    Location,
    Method,
    compute_timetable,
    prayer_status,
)

TASHKENT = Location(latitude=41.2995, longitude=69.2401, timezone="Asia/Tashkent", country="UZ")
SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "reference" / "tashkent_prayer_samples.csv"
# The shared reference rows, used when the reference folder is not beside the repository.
BOARD_TIMETABLE = [
    ("2025-06-05", "03:08", "04:51", "12:27", "17:35", "19:56", "21:32"),
    ("2025-11-30", "06:04", "07:28", "12:17", "15:14", "16:59", "18:17"),
    ("2026-03-13", "05:21", "06:39", "12:38", "16:41", "18:31", "19:43"),
]
COLUMNS = ("fajr", "sunrise", "dhuhr", "asr", "maghrib", "isha")


def _rows():
    if SAMPLES.exists():
        with SAMPLES.open() as handle:
            return [tuple(row[c] for c in ("date", *COLUMNS)) for row in csv.DictReader(handle)]
    return BOARD_TIMETABLE


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


@pytest.mark.parametrize("row", _rows(), ids=lambda row: row[0])
def test_board_samples_within_two_minutes(row):
    day, *published = row
    table = compute_timetable(date.fromisoformat(day), TASHKENT, Method())
    for name, expected in zip(COLUMNS, published, strict=True):
        got = table[name].strftime("%H:%M")
        assert abs(_minutes(got) - _minutes(expected)) <= 2, (day, name, got, expected)


def test_full_year_in_tashkent_has_every_prayer_in_order():
    day = date(2026, 1, 1)
    previous_isha = None
    while day.year == 2026:
        table = compute_timetable(day, TASHKENT, Method())
        times = [table[name] for name in COLUMNS]
        assert all(t.date() == day for t in times), day
        assert all(t.utcoffset() == timedelta(hours=5) for t in times), day
        assert times == sorted(times) and len(set(times)) == 6, (day, times)
        # Plausibility bounds of Tashkent's timetable over the year.
        assert 2 * 60 + 50 <= _minutes(table["fajr"].strftime("%H:%M")) <= 6 * 60 + 25, (day, table["fajr"])
        assert 11 * 60 + 55 <= _minutes(table["dhuhr"].strftime("%H:%M")) <= 12 * 60 + 45, day
        assert 16 * 60 + 40 <= _minutes(table["maghrib"].strftime("%H:%M")) <= 20 * 60 + 10, day
        if previous_isha is not None:
            assert table["fajr"] > previous_isha
        previous_isha = table["isha"]
        day += timedelta(days=1)


def test_method_changes_the_result():
    day = date(2025, 6, 5)
    board = compute_timetable(day, TASHKENT, Method())
    shafii = compute_timetable(day, TASHKENT, Method(asr_method="standard"))
    steeper = compute_timetable(day, TASHKENT, Method(fajr_angle=18.0, isha_angle=17.0))
    assert shafii["asr"] < board["asr"] - timedelta(minutes=40)
    assert steeper["fajr"] < board["fajr"] - timedelta(minutes=15)
    assert steeper["isha"] > board["isha"] + timedelta(minutes=10)


def _at(hhmm: str, day: date = date(2026, 3, 13)) -> datetime:
    return datetime.fromisoformat(f"{day.isoformat()}T{hhmm}:00+05:00")


@pytest.mark.parametrize(
    ("clock", "status", "current", "next_prayer"),
    [
        ("12:00", NORMAL, None, "dhuhr"),
        ("12:28", APPROACHING, "dhuhr", "dhuhr"),
        ("12:38", IN_PRAYER, "dhuhr", "asr"),
        ("12:57", IN_PRAYER, "dhuhr", "asr"),
        ("12:58", POST_PRAYER, "dhuhr", "asr"),
        ("13:13", NORMAL, None, "asr"),
        ("19:50", IN_PRAYER, "isha", "fajr"),
        ("23:30", NORMAL, None, "fajr"),
        ("05:15", APPROACHING, "fajr", "fajr"),
    ],
)
def test_prayer_status_through_the_day(clock, status, current, next_prayer):
    # 2026-03-13 in Tashkent: fajr 05:21, dhuhr 12:38, asr 16:41, maghrib 18:31, isha 19:43.
    result = prayer_status(_at(clock), TASHKENT, Method())
    assert (result.status, result.current_prayer, result.next_prayer) == (status, current, next_prayer)
    if status == IN_PRAYER:
        assert result.window_ends_at == result.current_prayer_at + timedelta(minutes=20)
    else:
        assert result.window_ends_at is None


def test_isha_window_crossing_midnight_counts_yesterdays_isha():
    # In June isha is 21:32; a 180-minute window runs past midnight into the next day.
    method = Method(prayer_window_minutes=90)
    result = prayer_status(datetime.fromisoformat("2025-06-05T23:00:00+05:00"), TASHKENT, method)
    assert (result.status, result.current_prayer) == (IN_PRAYER, "isha")
    late = prayer_status(datetime.fromisoformat("2025-06-06T00:30:00+05:00"), TASHKENT, Method())
    assert late.next_prayer == "fajr" and late.next_prayer_at.date() == date(2025, 6, 6)
