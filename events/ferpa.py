"""FERPA: the one rule for how much of a student's record a reader gets, on every path.

A student's record carries protected fields (`PROTECTED_KEYS`: `personal_info`, `family_details`,
`medical_notes`). `access_level` decides, for one reader and one student, which of five levels
applies; only `public` loses the protected fields:

| level | who | protected fields |
|---|---|---|
| `self` | the student | yes |
| `family` | their family (`user_relationships` parent, guardian, family; active) | yes |
| `educator` | teachers of one of the student's active groups (active assignment) | yes |
| `admin` | the school's admins (row-level security keeps them to their own school) | yes |
| `public` | anyone else | no |

The relation comes from the student's *audience* (`student_user_id`, `family_user_ids`,
`educator_user_ids`), computed by one SQL function, `realtime_student_audience`: the
change-capture trigger stores it with every event about a student (so socket delivery needs no
query per recipient), and the REST paths ask it for their rows (`events.selectors.student_audiences`).
Every path uses this module: socket delivery, replay and held-back catch-up
(`events/recipients.py`), the poll (`events/api/poll.py`), `sync/changes` and pending conflicts
(`syncqueue/selectors.py`). Which *topics* a reader gets messages of is the join rule of
`events/topics.py` on every path as well (`may_read_topic`).

Differences from the spec's SQL function `ensure_ferpa_compliance_realtime`: it counted *any*
active teacher of *any* school as an authorized educator (and compared a user id with
teachers.id); here only the student's own teachers are educators. It did not name admins; here a
school's admins read the protected fields, as they do (and write them) in the admin and through
offline sync.
"""

from __future__ import annotations

import time
from typing import Any, Literal

Level = Literal["self", "family", "educator", "admin", "public"]
PROTECTED_KEYS = ("personal_info", "family_details", "medical_notes")
FULL_LEVELS: frozenset[str] = frozenset({"self", "family", "educator", "admin"})


def access_level(user_id: Any, audience: dict | None, *, role: str) -> Level:
    """How much of the audience's student this user (of `role`) may see."""
    audience = audience or {}
    user_id = str(user_id)
    if audience.get("student_user_id") and str(audience["student_user_id"]) == user_id:
        return "self"
    if user_id in {str(u) for u in audience.get("family_user_ids") or []}:
        return "family"
    if user_id in {str(u) for u in audience.get("educator_user_ids") or []}:
        return "educator"
    if role == "admin":
        return "admin"
    return "public"


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in PROTECTED_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def filter_record(record: dict, level: str) -> dict:
    """A row as this access level may see it (sync/changes, conflicts): no compliance keys added."""
    return record if level in FULL_LEVELS else _strip(record)


def filter_payload(payload: dict, level: str) -> dict:
    """The payload as this access level may see it, with the spec's compliance keys."""
    filtered = dict(payload) if level in FULL_LEVELS else _strip(payload)
    filtered.update(ferpa_compliant=True, access_level=level, filtered_at=time.time() * 1000)
    return filtered


def filter_change(change: dict, level: str) -> dict:
    """A postgres_changes `data` object: the records lose the protected columns unless allowed."""
    data = dict(change)
    if level not in FULL_LEVELS:
        data["record"] = _strip(change.get("record") or {})
        data["old_record"] = _strip(change.get("old_record") or {})
    data["access_level"] = level
    return data


def may_receive(user_id: str, role: str, audience: dict | None, payload: dict | None = None) -> bool:
    """Row rules beyond the topic: a notification only reaches its target (or an admin), and
    feedback hidden from the family does not reach family members."""
    audience = audience or {}
    target = audience.get("target_user_id")
    if target and str(target) != str(user_id) and role != "admin":
        return False
    if payload is not None and payload.get("visible_to_family") is False:
        return access_level(user_id, audience, role=role) != "family"
    return True
