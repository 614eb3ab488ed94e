"""FERPA filtering per recipient (spec: `ensure_ferpa_compliance_realtime`).

The student themself, their family (user_relationships) and their educators (teachers of one of
the student's groups) receive the full payload; anyone else loses `personal_info`,
`family_details` and `medical_notes`. Every filtered payload says which `access_level` applied.

Differences from the spec's SQL function: it counted *any* active teacher of *any* school as an
authorized educator (and compared a user id with teachers.id); here only the student's own
teachers are educators. The audience (student user, family, educators) is computed by the
change-capture trigger when the event is stored, so filtering needs no query per recipient.
"""

from __future__ import annotations

import time
from typing import Any

SENSITIVE_KEYS = ("personal_info", "family_details", "medical_notes")


def access_level(user_id: str, audience: dict | None) -> str:
    """self, family, educator or public: how much of a student's data this user may see."""
    audience = audience or {}
    user_id = str(user_id)
    if audience.get("student_user_id") and str(audience["student_user_id"]) == user_id:
        return "self"
    if user_id in {str(u) for u in audience.get("family_user_ids", [])}:
        return "family"
    if user_id in {str(u) for u in audience.get("educator_user_ids", [])}:
        return "educator"
    return "public"


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in SENSITIVE_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def filter_payload(payload: dict, level: str) -> dict:
    """The payload as this access level may see it, with the spec's compliance keys."""
    filtered = dict(payload) if level != "public" else _strip(payload)
    filtered.update(ferpa_compliant=True, access_level=level, filtered_at=time.time() * 1000)
    return filtered


def filter_change(change: dict, level: str) -> dict:
    """A postgres_changes `data` object: the records lose the sensitive columns unless allowed."""
    data = dict(change)
    if level == "public":
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
        return access_level(user_id, audience) != "family"
    return True
