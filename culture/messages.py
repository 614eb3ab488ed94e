"""User-facing texts of the cultural calendar, through Django's gettext catalogs (locale/).

`translated(message, language, **params)` renders one text in one language (English when the
language is unknown); `multilingual(message, **params)` renders it in all four languages, the
shape the spec calls MultilingualText: `{"en": ..., "uz": ..., "ru": ..., "ar": ...}`.
Parameters are interpolated after translation, and parameters that are themselves lazy texts
(a prayer's name) are translated into the same language.
"""

from __future__ import annotations

from django.utils import translation
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

LANGUAGES = ("en", "uz", "ru", "ar")
FALLBACK_LANGUAGE = "en"

PRAYER_NAMES = {
    "fajr": pgettext_lazy("prayer", "Fajr"),
    "sunrise": pgettext_lazy("prayer", "Sunrise"),
    "dhuhr": pgettext_lazy("prayer", "Dhuhr"),
    "asr": pgettext_lazy("prayer", "Asr"),
    "maghrib": pgettext_lazy("prayer", "Maghrib"),
    "isha": pgettext_lazy("prayer", "Isha"),
}

HIJRI_MONTHS = {
    1: pgettext_lazy("hijri month", "Muharram"),
    2: pgettext_lazy("hijri month", "Safar"),
    3: pgettext_lazy("hijri month", "Rabi al-Awwal"),
    4: pgettext_lazy("hijri month", "Rabi al-Thani"),
    5: pgettext_lazy("hijri month", "Jumada al-Awwal"),
    6: pgettext_lazy("hijri month", "Jumada al-Thani"),
    7: pgettext_lazy("hijri month", "Rajab"),
    8: pgettext_lazy("hijri month", "Shaban"),
    9: pgettext_lazy("hijri month", "Ramadan"),
    10: pgettext_lazy("hijri month", "Shawwal"),
    11: pgettext_lazy("hijri month", "Dhu al-Qadah"),
    12: pgettext_lazy("hijri month", "Dhu al-Hijjah"),
}

# Attendance statuses inside sentences ("… was marked absent"), so no enum value reaches a reader
# untranslated (school.models.AttendanceStatus).
ATTENDANCE_STATUSES = {
    "present": pgettext_lazy("attendance status", "present"),
    "absent": pgettext_lazy("attendance status", "absent"),
    "late": pgettext_lazy("attendance status", "late"),
    "excused": pgettext_lazy("attendance status", "excused"),
    "sick": pgettext_lazy("attendance status", "sick"),
    "emergency": pgettext_lazy("attendance status", "absent (emergency)"),
    "early_dismissal": pgettext_lazy("attendance status", "dismissed early"),
    "partial": pgettext_lazy("attendance status", "partly present"),
}

HIJRI_DATE = _("%(day)d %(month)s %(year)d AH")

REMINDER_TITLE = _("Prayer time reminder")
REMINDER_MESSAGE = _("%(prayer)s prayer begins at %(time)s, in %(minutes)d min.")
GREETING_FORMAL = _("As-salaam alaikum")
GREETING_CASUAL = _("Hello")
RAMADAN_GREETING = _("Ramadan Mubarak")

PREPARATION_SUGGESTIONS = (
    _("Save your work and finish the current exercise"),
    _("Prepare for ablution (wudu)"),
)
RESPECTFUL_BEHAVIOR = (
    _("Notifications are paused during the prayer window"),
    _("Avoid scheduling calls or lessons during prayer"),
)
POST_PRAYER_ACTIONS = (
    _("Resume your lessons and tasks"),
    _("Messages held during prayer are delivered now"),
)

# API error messages of this app.
ERROR_DATE_INVALID = _("The date must be in the form YYYY-MM-DD.")
ERROR_DATE_OUT_OF_RANGE = _("The date is outside the supported range (1924-08-01 to 2077-11-16).")


def normalize_language(language: str | None) -> str:
    code = (language or "").split("-")[0].lower()
    return code if code in LANGUAGES else FALLBACK_LANGUAGE


def _render(message, params: dict) -> str:
    resolved = {key: str(value) if isinstance(value, Promise) else value for key, value in params.items()}
    text = str(message)
    return text % resolved if resolved else text


def translated(message, language: str | None, **params) -> str:
    with translation.override(normalize_language(language)):
        return _render(message, params)


def multilingual(message, **params) -> dict[str, str]:
    return {language: translated(message, language, **params) for language in LANGUAGES}


def prayer_name(prayer: str, language: str | None) -> str:
    return translated(PRAYER_NAMES[prayer], language)


def hijri_date_text(year: int, month: int, day: int, language: str | None) -> str:
    return translated(HIJRI_DATE, language, day=day, month=HIJRI_MONTHS[month], year=year)
