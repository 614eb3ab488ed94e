"""Notification text in every language the apps speak (en, uz, ru, ar), through Django gettext.

A language whose catalog has no translation for a message is stored as NULL, so delivery falls
back to English for it instead of showing English under a Russian flag.
Message catalogs live in locale/ (owned by the culture app); the msgids are the strings below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.utils.translation import gettext, override
from django.utils.translation import gettext_lazy as _

from culture import messages

LANGUAGES = ("en", "uz", "ru", "ar")

# (notification_type, audience) -> (title, body); audience "self" is the student/user the event
# is about, "family" a parent or guardian of that student.
TEMPLATES: dict[tuple[str, str], tuple[Any, Any]] = {
    ("achievement_earned", "self"): (_("New achievement!"), _("You earned “%(achievement)s”.")),
    ("achievement_earned", "family"): (
        _("%(student)s earned an achievement"),
        _("%(student)s earned “%(achievement)s”."),
    ),
    ("ranking_update", "self"): (_("Your ranking changed"), _("You are now number %(rank)s in the ranking.")),
    ("ranking_update", "family"): (
        _("%(student)s's ranking changed"),
        _("%(student)s is now number %(rank)s in the ranking."),
    ),
    ("task_assigned", "self"): (_("New task"), _("New task: %(task)s")),
    ("attendance_reminder", "self"): (_("Attendance"), _("Attendance was recorded: %(status)s.")),
    ("teacher_message", "self"): (_("Message from %(teacher)s"), "%(message)s"),
    ("teacher_message", "family"): (_("Message from %(teacher)s about %(student)s"), "%(message)s"),
    ("system_alert", "self"): (_("School announcement"), "%(message)s"),
    # The culture app's reminder texts, so one catalog entry serves the socket and the push.
    ("prayer_time", "self"): (messages.REMINDER_TITLE, messages.REMINDER_MESSAGE),
}


def _render(text: Any, params: Mapping[str, Any]) -> str:
    values = {key: value if isinstance(value, int) else str(value) for key, value in params.items()}
    return str(text) % values


def localized(notification_type: str, audience: str, params: Mapping[str, Any]) -> dict[str, str | None]:
    """`{"title_en": ..., "title_uz": ..., "body_en": ..., ...}` for a push_notifications row."""
    title, body = TEMPLATES[(notification_type, audience)]
    fields: dict[str, str | None] = {}
    for language in LANGUAGES:
        with override(language):
            fields[f"title_{language}"] = _render(title, params)
            fields[f"body_{language}"] = _render(body, params)
    for language in LANGUAGES[1:]:
        for part in ("title", "body"):
            if fields[f"{part}_{language}"] == fields[f"{part}_en"]:
                fields[f"{part}_{language}"] = None
    return fields


def per_language(value: str | Mapping[str, str], part: str) -> dict[str, str | None]:
    """Caller-supplied text: one string (English) or a mapping language -> text."""
    if isinstance(value, str):
        return {f"{part}_en": value}
    fields: dict[str, str | None] = {f"{part}_{lang}": value.get(lang) or None for lang in LANGUAGES}
    fields[f"{part}_en"] = value.get("en") or next(v for v in value.values() if v)
    return fields


def with_greeting(body: str, language: str) -> str:
    with override(language):
        return gettext("%(greeting)s! %(body)s") % {"greeting": str(messages.GREETING_FORMAL), "body": body}
