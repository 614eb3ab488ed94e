"""Every user-facing string marked for translation anywhere in the repository is translated
into all four languages (en, uz, ru, ar), with the same placeholders; and the catalogs work."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import translation

from culture import messages

LANGUAGES = ("en", "uz", "ru", "ar")
ROOT = Path(settings.BASE_DIR)
LOCALE = Path(settings.LOCALE_PATHS[0])
SKIP_DIRS = {".venv", "node_modules", ".data", "e2e", "bench", "staticfiles", ".git", "migrations"}
KEYWORD = re.compile(r'^(msgctxt|msgid|msgid_plural|msgstr(?:\[\d+\])?) (".*")$')
PLACEHOLDER = re.compile(r"%\((\w+)\)[sdif]|%[sdif]")
# The keywords Django's makemessages passes to xgettext for Python files.
XGETTEXT_KEYWORDS = [
    "gettext_noop",
    "gettext_lazy",
    "ngettext_lazy:1,2",
    "pgettext:1c,2",
    "npgettext:1c,2,3",
    "pgettext_lazy:1c,2",
    "npgettext_lazy:1c,2,3",
]


def parse_po(text: str) -> dict[str, dict]:
    """{key: {"msgid", "msgstr"(s), "fuzzy"}}; key is "context\\x04msgid" when there is a context."""
    entries, current, field, seen_str = {}, {}, None, False

    def flush():
        if current.get("msgid"):
            key = f"{current['msgctxt']}\x04{current['msgid']}" if "msgctxt" in current else current["msgid"]
            entries[key] = dict(current)

    for line in text.splitlines() + [""]:
        starts_entry = line.startswith(("#", "msgctxt", "msgid ")) and seen_str
        if not line.strip() or starts_entry:
            flush()
            current, field, seen_str = {}, None, False
            if not line.strip():
                continue
        if line.startswith("#,") and "fuzzy" in line:
            current["fuzzy"] = True
        if match := KEYWORD.match(line):
            field = match.group(1)
            current[field] = json.loads(match.group(2))
            seen_str = seen_str or field.startswith("msgstr")
        elif line.startswith('"') and field:
            current[field] += json.loads(line)
    return entries


def catalog(language: str) -> dict[str, dict]:
    return parse_po((LOCALE / language / "LC_MESSAGES" / "django.po").read_text())


def marked_in_code(tmp_path: Path) -> set[str]:
    sources = sorted(
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*.py")
        if not SKIP_DIRS.intersection(path.relative_to(ROOT).parts)
    )
    pot = tmp_path / "marked.pot"
    command = ["xgettext", "--language=Python", "--from-code=UTF-8", "--keyword=_", "-o", str(pot)]
    command += [f"--keyword={keyword}" for keyword in XGETTEXT_KEYWORDS]
    subprocess.run(command + sources, cwd=ROOT, check=True)
    return set(parse_po(pot.read_text())) if pot.exists() else set()


def test_catalog_parser_sees_contexts_and_wrapped_strings():
    entries = parse_po(
        '#: a.py:1\nmsgctxt "prayer"\nmsgid "Fajr"\nmsgstr "Bomdod"\n#, fuzzy\nmsgid ""\n"Long "\n"text"\nmsgstr ""\n'
    )
    assert entries["prayer\x04Fajr"]["msgstr"] == "Bomdod"
    assert entries["Long text"] == {"msgid": "Long text", "msgstr": "", "fuzzy": True}


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="needs gettext's xgettext (Debian: gettext)")
def test_every_marked_string_is_in_every_catalog(tmp_path):
    marked = marked_in_code(tmp_path)
    assert marked, "xgettext found no marked strings"
    for language in LANGUAGES:
        missing = marked - set(catalog(language))
        assert not missing, f"{language}: run makemessages and translate: {sorted(missing)}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_catalog_entry_is_translated_with_the_same_placeholders(language):
    entries = catalog(language)
    assert set(entries) == set(catalog("en")), "catalogs must hold the same messages"
    for key, entry in entries.items():
        assert not entry.get("fuzzy"), f"{language}: fuzzy translation for {key!r}"
        assert "msgid_plural" not in entry or all(entry.get(f"msgstr[{n}]") for n in range(2)), (
            f"{language}: untranslated plural {key!r}"
        )
        translated = entry.get("msgstr") or entry.get("msgstr[0]")
        assert translated, f"{language}: no translation for {key!r}"
        assert sorted(PLACEHOLDER.findall(translated)) == sorted(PLACEHOLDER.findall(entry["msgid"])), (
            f"{language}: placeholders differ in {key!r}"
        )


def test_non_english_catalogs_really_translate_the_reminder():
    texts = messages.multilingual(
        messages.REMINDER_MESSAGE, prayer=messages.PRAYER_NAMES["dhuhr"], time="12:38", minutes=8
    )
    assert texts["en"] == "Dhuhr prayer begins at 12:38, in 8 min."
    assert texts["uz"] == "Peshin namozi soat 12:38 da, 8 daqiqadan so‘ng boshlanadi."
    assert texts["ru"] == "Намаз Зухр начинается в 12:38, через 8 мин."
    assert texts["ar"] == "تبدأ صلاة الظهر الساعة 12:38، بعد 8 د."
    assert len(set(texts.values())) == 4


def test_unknown_language_falls_back_to_english():
    assert messages.translated(messages.GREETING_FORMAL, "fr") == "As-salaam alaikum"
    assert messages.translated(messages.GREETING_FORMAL, None) == "As-salaam alaikum"
    assert messages.translated(messages.GREETING_FORMAL, "ru-RU") == "Ас-саляму алейкум"
    with translation.override("ar"):
        assert messages.prayer_name("isha", "uz") == "Xufton"
