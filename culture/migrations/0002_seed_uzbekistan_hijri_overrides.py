"""Uzbekistan's announced starts of Ramadan, Shawwal and Dhu al-Hijja, 1444-1447 AH.

Announced by the Muslim Board of Uzbekistan (Dhu al-Hijja from the announced Eid al-Adha, the
10th). They agree with Umm al-Qura except 1 Ramadan 1447, which the Board set one day later.
Staff add later announcements in the admin.
"""

from datetime import date

from django.db import migrations

SOURCE = "Muslim Board of Uzbekistan"
ANNOUNCED = [
    (1444, 9, date(2023, 3, 23)),
    (1444, 10, date(2023, 4, 21)),
    (1444, 12, date(2023, 6, 19)),  # Eid al-Adha 2023-06-28
    (1445, 9, date(2024, 3, 11)),
    (1445, 10, date(2024, 4, 10)),
    (1445, 12, date(2024, 6, 7)),  # Eid al-Adha 2024-06-16
    (1446, 9, date(2025, 3, 1)),
    (1446, 10, date(2025, 3, 30)),
    (1446, 12, date(2025, 5, 28)),  # Eid al-Adha 2025-06-06
    (1447, 9, date(2026, 2, 19)),  # Umm al-Qura: 2026-02-18
    (1447, 10, date(2026, 3, 20)),
    (1447, 12, date(2026, 5, 18)),  # Eid al-Adha 2026-05-27
]


def seed(apps, schema_editor):
    Override = apps.get_model("culture", "HijriMonthOverride")
    for year, month, start in ANNOUNCED:
        Override.objects.using(schema_editor.connection.alias).update_or_create(
            country="UZ", hijri_year=year, hijri_month=month, defaults={"gregorian_start": start, "source": SOURCE}
        )


def unseed(apps, schema_editor):
    Override = apps.get_model("culture", "HijriMonthOverride")
    for year, month, _start in ANNOUNCED:
        Override.objects.using(schema_editor.connection.alias).filter(
            country="UZ", hijri_year=year, hijri_month=month
        ).delete()


class Migration(migrations.Migration):
    dependencies = [("culture", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
