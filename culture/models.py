"""Cultural calendar data: how each school computes prayer times, announced Hijri month starts,
and the record of prayer reminders already sent.

A school's location (latitude, longitude, timezone, country) lives on `school.Organization`; the
method lives here so staff can tune it without touching the location. A school without a
`PrayerCalculationSettings` row uses the defaults below, which reproduce the Muslim Board of
Uzbekistan's published timetable.
"""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from harry_realtime.models import TenantModel, TimestampedModel

PRAYERS = ("fajr", "dhuhr", "asr", "maghrib", "isha")
# Sunrise ends the fajr time and is published in every timetable, but it is not a prayer.
TIMETABLE = ("fajr", "sunrise", "dhuhr", "asr", "maghrib", "isha")

_ADJUSTMENT = [MinValueValidator(-60), MaxValueValidator(60)]


class AsrMethod(models.TextChoices):
    # Hanafi: the shadow equals twice the object's height (Uzbekistan); standard: once.
    HANAFI = "hanafi", _("Hanafi (shadow twice the object)")
    STANDARD = "standard", _("Standard / Shafi'i (shadow equal to the object)")


class PrayerCalculationSettings(TimestampedModel):
    """Per-school calculation method. Defaults reproduce the Muslim Board of Uzbekistan."""

    organization = models.OneToOneField("school.Organization", on_delete=models.CASCADE, related_name="prayer_settings")
    fajr_angle = models.DecimalField(
        max_digits=4,
        decimal_places=2,
        default=Decimal("15.40"),
        validators=[MinValueValidator(Decimal("10")), MaxValueValidator(Decimal("21"))],
        help_text=_("Sun depression below the horizon at fajr, in degrees."),
    )
    isha_angle = models.DecimalField(
        max_digits=4,
        decimal_places=2,
        default=Decimal("15.00"),
        validators=[MinValueValidator(Decimal("10")), MaxValueValidator(Decimal("21"))],
        help_text=_("Sun depression below the horizon at isha, in degrees."),
    )
    asr_method = models.CharField(
        max_length=10, choices=AsrMethod.choices, default=AsrMethod.HANAFI, verbose_name=_("asr method")
    )
    fajr_adjustment = models.SmallIntegerField(default=0, validators=_ADJUSTMENT)
    sunrise_adjustment = models.SmallIntegerField(default=0, validators=_ADJUSTMENT)
    dhuhr_adjustment = models.SmallIntegerField(
        default=5, validators=_ADJUSTMENT, help_text=_("Minutes after solar noon.")
    )
    asr_adjustment = models.SmallIntegerField(default=0, validators=_ADJUSTMENT)
    maghrib_adjustment = models.SmallIntegerField(
        default=3, validators=_ADJUSTMENT, help_text=_("Minutes after sunset.")
    )
    isha_adjustment = models.SmallIntegerField(default=0, validators=_ADJUSTMENT)
    approaching_minutes = models.PositiveSmallIntegerField(
        default=10,
        validators=[MaxValueValidator(60)],
        help_text=_("Minutes before a prayer that count as approaching it."),
    )
    prayer_window_minutes = models.PositiveSmallIntegerField(
        default=20,
        validators=[MinValueValidator(1), MaxValueValidator(90)],
        help_text=_("Minutes from the start of a prayer during which non-urgent messages are held."),
    )
    post_prayer_minutes = models.PositiveSmallIntegerField(
        default=15,
        validators=[MaxValueValidator(60)],
        help_text=_("Minutes after the prayer window that count as just after prayer."),
    )

    class Meta:
        db_table = "culture_prayer_settings"
        verbose_name = _("prayer calculation settings")
        verbose_name_plural = _("prayer calculation settings")

    def __str__(self) -> str:
        return f"{self.organization}: fajr {self.fajr_angle}°, isha {self.isha_angle}°, asr {self.asr_method}"


class HijriMonthOverride(TimestampedModel):
    """An announced first day of a Hijri month in one country (not scoped to a school).

    Days after an override count from it, until the next month begins (by its own override or
    by Umm al-Qura).
    """

    country = models.CharField(max_length=2, help_text=_("ISO 3166-1 alpha-2, e.g. UZ"), verbose_name=_("country"))
    hijri_year = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1343), MaxValueValidator(1500)], verbose_name=_("hijri year")
    )
    hijri_month = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(12)], verbose_name=_("hijri month")
    )
    gregorian_start = models.DateField(help_text=_("The announced first day of the month."))
    source = models.CharField(max_length=200, blank=True, help_text=_("Who announced it."))

    class Meta:
        verbose_name = _("Hijri month override")
        verbose_name_plural = _("Hijri month overrides")
        db_table = "culture_hijri_month_overrides"
        ordering = ["country", "gregorian_start"]
        constraints = [
            models.UniqueConstraint(fields=["country", "hijri_year", "hijri_month"], name="uniq_hijri_override_month"),
            models.UniqueConstraint(fields=["country", "gregorian_start"], name="uniq_hijri_override_start"),
            models.CheckConstraint(condition=Q(hijri_month__gte=1, hijri_month__lte=12), name="hijri_override_month"),
        ]

    def __str__(self) -> str:
        return f"{self.country} {self.hijri_year}-{self.hijri_month:02d} from {self.gregorian_start}"

    def clean(self) -> None:
        # Announcements differ from Umm al-Qura by a day or two; more is a typo (wrong year or month).
        from .hijri import umm_al_qura_start

        if self.gregorian_start and self.hijri_year and self.hijri_month:
            expected = umm_al_qura_start(self.hijri_year, self.hijri_month)
            if abs((self.gregorian_start - expected).days) > 2:
                raise ValidationError(
                    {
                        "gregorian_start": _(
                            "Umm al-Qura starts this month on %(date)s; an announcement is at most two days from it."
                        )
                        % {"date": expected.isoformat()}
                    }
                )


class PrayerReminder(TenantModel):
    """One reminder per user, prayer and local date: the row that makes the beat job idempotent."""

    user = models.ForeignKey("school.User", on_delete=models.CASCADE, related_name="+")
    prayer = models.CharField(max_length=10, choices=[(p, p) for p in PRAYERS], verbose_name=_("prayer"))
    prayer_date = models.DateField(verbose_name=_("prayer date"))
    prayer_at = models.DateTimeField()
    event = models.ForeignKey(
        "events.RealtimeEvent", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        verbose_name = _("prayer reminder")
        verbose_name_plural = _("prayer reminders")
        db_table = "culture_prayer_reminders"
        ordering = ["-prayer_at"]
        constraints = [
            models.UniqueConstraint(fields=["user", "prayer", "prayer_date"], name="uniq_prayer_reminder"),
            models.CheckConstraint(condition=Q(prayer__in=PRAYERS), name="prayer_reminder_prayer"),
        ]

    def __str__(self) -> str:
        return f"{self.prayer.capitalize()} reminder for {self.user}, {self.prayer_date}"
