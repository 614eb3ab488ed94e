"""The spec's sync rules as pure functions: priority matrix and educational conflict resolution.

No database here, so the rules are tested on their own and shared by upload, retry and the
conflict-resolution endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# "Intelligent Sync Prioritization" (SyncPriorityMatrix), 10 = highest.
PRIORITY_MATRIX = {
    "attendance_marking": 10,
    "student_safety_alerts": 10,
    "achievement_celebrations": 8,
    "task_submissions": 7,
    "ranking_updates": 6,
    "feedback_entries": 5,
    "general_notifications": 3,
    "profile_updates": 2,
}
CULTURAL_BOOSTS = {
    "prayer_time_events": 3,
    "ramadan_schedule": 2,
    "family_communication": 2,
    "teacher_authority": 3,
}
BATTERY_ADJUSTMENT = {"battery_saver": -1, "standard": 0, "high_performance": 1}
PRAYERS = {"fajr", "dhuhr", "asr", "maghrib", "isha"}
AUTHORITY_ROLES = {"teacher", "admin"}

TABLE_KIND = {
    "attendance": "attendance_marking",
    "student_achievements": "achievement_celebrations",
    "home_tasks": "task_submissions",
    "student_rankings": "ranking_updates",
    "feedback_entries": "feedback_entries",
    "students": "profile_updates",
    "groups": "profile_updates",
    "student_group_enrollments": "profile_updates",
}


def priority_kind(table_name: str, data: Mapping[str, Any]) -> str:
    if table_name == "attendance" and data.get("status") == "emergency":
        return "student_safety_alerts"
    return TABLE_KIND.get(table_name, "general_notifications")


def cultural_boosts(*, cultural_context: Mapping[str, Any], prayer_time_context: str | None, role: str) -> list[str]:
    """Which of the spec's cultural boosts apply to one operation."""
    boosts = []
    if cultural_context.get("prayer_time_event") or (prayer_time_context or "").lower() in PRAYERS:
        boosts.append("prayer_time_events")
    if cultural_context.get("ramadan_schedule"):
        boosts.append("ramadan_schedule")
    if cultural_context.get("family_communication"):
        boosts.append("family_communication")
    if role in AUTHORITY_ROLES:
        boosts.append("teacher_authority")
    return boosts


def effective_priority(
    *,
    table_name: str,
    data: Mapping[str, Any],
    role: str,
    cultural_context: Mapping[str, Any],
    prayer_time_context: str | None,
    battery_mode: str,
) -> int:
    """Matrix priority of the kind of write, plus cultural boosts and battery mode, clamped 1-10.

    The device's own `priority` is not trusted as the base (a student could mark every write 10);
    it only orders operations of equal effective priority.
    """
    value = PRIORITY_MATRIX[priority_kind(table_name, data)]
    value += sum(
        CULTURAL_BOOSTS[b]
        for b in cultural_boosts(cultural_context=cultural_context, prayer_time_context=prayer_time_context, role=role)
    )
    value += BATTERY_ADJUSTMENT.get(battery_mode, 0)
    return max(1, min(10, value))


# resolve_educational_conflict: fixed rules per table; the requested strategy elsewhere.
TABLE_RULES = {
    "attendance": "teacher_authority",
    "feedback_entries": "teacher_authority",
    "student_rankings": "server_wins",
    "home_tasks": "merge_task_submission",
}
TASK_CLIENT_FIELDS = ("student_response", "submission_timestamp")
TASK_SERVER_FIELDS = ("teacher_feedback", "grading_status")


@dataclass
class Resolution:
    rule: str
    winner: str  # client | server | merged | pending
    changes: dict[str, Any] = field(default_factory=dict)
    conflict_fields: list[str] = field(default_factory=list)
    discarded_fields: list[str] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return self.winner == "pending"

    def as_metadata(self) -> dict:
        return {
            "rule": self.rule,
            "winner": self.winner,
            "conflict_fields": self.conflict_fields,
            "discarded_fields": self.discarded_fields,
            "applied_fields": sorted(self.changes),
        }


def rule_for(table_name: str, requested_strategy: str) -> str:
    return TABLE_RULES.get(table_name, requested_strategy)


def resolve_conflict(
    *,
    table_name: str,
    role: str,
    requested_strategy: str,
    client_changes: Mapping[str, Any],
    server_values: Mapping[str, Any],
    base_values: Mapping[str, Any] | None = None,
) -> Resolution:
    """What to write when the device's version of a record is stale.

    `client_changes` are the fields the device wrote, `server_values` the record now, and
    `base_values` what the device saw before its edit (its `oldData`), when it sent it.
    """
    conflict_fields = sorted(k for k, v in client_changes.items() if server_values.get(k) != v)
    rule = rule_for(table_name, requested_strategy)
    client = dict(client_changes)
    resolution = Resolution(rule=rule, winner="server", conflict_fields=conflict_fields)
    if rule in ("teacher_authority", "admin_override"):
        allowed = AUTHORITY_ROLES if rule == "teacher_authority" else {"admin"}
        if role in allowed:
            resolution.winner, resolution.changes = "client", client
    elif rule == "client_wins":
        resolution.winner, resolution.changes = "client", client
    elif rule == "merge_task_submission":
        resolution.winner = "merged"
        resolution.changes = {k: client[k] for k in TASK_CLIENT_FIELDS if k in client}
    elif rule == "merge_fields":
        # A field the server has not touched since the device's base takes the device's value.
        base = base_values or {}
        resolution.winner = "merged"
        resolution.changes = {k: v for k, v in client.items() if k in base and base[k] == server_values.get(k)}
    elif rule == "prompt_user":
        resolution.winner = "pending"
        return resolution
    resolution.discarded_fields = sorted(
        k for k in client if k not in resolution.changes and server_values.get(k) != client[k]
    )
    return resolution
