"""Hijri dates: Umm al-Qura plus announced month starts, against what Uzbekistan observed."""

import csv
from datetime import date, timedelta
from pathlib import Path

import pytest

from culture.hijri import hijri_date

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "reference" / "uzbekistan_hijri_samples.csv"


def _seeded_overrides() -> dict:
    from importlib import import_module

    seed = import_module("culture.migrations.0002_seed_uzbekistan_hijri_overrides")
    return {(year, month): start for year, month, start in seed.ANNOUNCED}


# The shared reference rows, used when the reference folder is not beside the repository.
OBSERVED = [("2024-03-11", "1445-09-01"), ("2025-03-30", "1446-10-01"), ("2026-02-19", "1447-09-01")]


def _samples():
    if not SAMPLES.exists():
        return OBSERVED
    with SAMPLES.open() as handle:
        return [(row["gregorian"], row["hijri_as_observed_in_uzbekistan"]) for row in csv.DictReader(handle)]


@pytest.mark.parametrize(("gregorian", "observed"), _samples())
def test_observed_samples_with_uzbekistan_overrides(gregorian, observed):
    assert hijri_date(date.fromisoformat(gregorian), _seeded_overrides()).isoformat() == observed


def test_umm_al_qura_without_overrides_differs_only_where_the_board_departed():
    assert hijri_date(date(2024, 3, 11)).isoformat() == "1445-09-01"
    assert hijri_date(date(2025, 3, 30)).isoformat() == "1446-10-01"
    assert hijri_date(date(2026, 2, 19)).isoformat() == "1447-09-02"


def test_days_after_an_override_count_from_it():
    overrides = _seeded_overrides()
    start = date(2026, 2, 19)
    for offset in range(29):
        day = hijri_date(start + timedelta(days=offset), overrides)
        assert (day.year, day.month, day.day, day.source) == (1447, 9, offset + 1, "announced")
    # The day before the announced start is the 30th of Shaban, not 1 Ramadan (Umm al-Qura's).
    eve = hijri_date(date(2026, 2, 18), overrides)
    assert (eve.month, eve.day, eve.is_ramadan) == (8, 30, False)
    # The announced 1 Shawwal ends the 29-day Ramadan.
    assert hijri_date(date(2026, 3, 20), overrides).isoformat() == "1447-10-01"


def test_ramadan_flag_at_month_edges():
    overrides = _seeded_overrides()
    edges = {
        date(2025, 2, 28): False,
        date(2025, 3, 1): True,
        date(2025, 3, 29): True,
        date(2025, 3, 30): False,
        date(2026, 2, 18): False,
        date(2026, 2, 19): True,
        date(2026, 3, 19): True,
        date(2026, 3, 20): False,
        # April is not Ramadan (the spec's guess) in any of these years.
        date(2024, 4, 15): False,
        date(2025, 4, 15): False,
    }
    for day, expected in edges.items():
        assert hijri_date(day, overrides).is_ramadan is expected, day


def test_month_never_exceeds_thirty_days_and_rejoins_umm_al_qura():
    # An announcement one day before Umm al-Qura, with no announced end: Ramadan stops at day 30
    # and Shawwal counts from the day after.
    overrides = {(1447, 9): date(2026, 2, 17)}
    assert hijri_date(date(2026, 3, 18), overrides).isoformat() == "1447-09-30"
    shawwal = [hijri_date(date(2026, 3, 19) + timedelta(days=n), overrides) for n in range(30)]
    assert [(d.month, d.day) for d in shawwal[:2]] == [(10, 1), (10, 2)]
    assert shawwal[0].source == "adjusted"
    # Shawwal lasts 30 days, then Dhu al-Qadah starts on Umm al-Qura's day again.
    assert hijri_date(date(2026, 4, 18), overrides).isoformat() == "1447-11-01"
    assert hijri_date(date(2026, 4, 18), overrides).source == "umm_al_qura"


def test_seeded_announcements_put_eid_on_the_announced_days():
    overrides = _seeded_overrides()
    assert {(y, m) for y, m in overrides} == {(y, m) for y in range(1444, 1448) for m in (9, 10, 12)}
    eid_al_adha = [date(2023, 6, 28), date(2024, 6, 16), date(2025, 6, 6), date(2026, 5, 27)]
    assert [hijri_date(day, overrides).isoformat()[5:] for day in eid_al_adha] == ["12-10"] * 4
    eid_al_fitr = [date(2023, 4, 21), date(2024, 4, 10), date(2025, 3, 30), date(2026, 3, 20)]
    assert [hijri_date(day, overrides).isoformat()[5:] for day in eid_al_fitr] == ["10-01"] * 4
