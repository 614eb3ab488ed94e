"""The spec's domain events ("Real-time Event Types and Payloads") built from stored events.

The change-capture trigger stores the facts (snake_case, as the spec's trigger functions do):
ranks, points, age group, celebration flag. This module turns a stored event into the spec's
TypeScript shapes (StudentRankingUpdateEvent, AttendanceSyncEvent, TaskAssignmentEvent,
AchievementEarnedEvent) and names the broadcast each topic receives. The rules that the trigger
also applies (age band, celebration, celebration style) are defined here once more for events
made in Python and are checked against the SQL versions in the tests.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from hijridate import Gregorian

from events.topics import notifications_topic
from school.selectors import age_on

AGE_GROUPS = ("10-12", "13-15", "16-18")
PRIORITY_ORDER = {"low": 0, "medium": 1, "high": 2, "critical": 3}


def age_group(date_of_birth: date, today: date) -> str:
    """The spec's three bands; ages outside 10-18 go to the nearest band."""
    age = age_on(date_of_birth, today)
    if age <= 12:
        return "10-12"
    if age <= 15:
        return "13-15"
    return "16-18"


def celebration_style(date_of_birth: date, today: date) -> str:
    age = age_on(date_of_birth, today)
    if 10 <= age <= 12:
        return "animated_celebration"
    if 13 <= age <= 15:
        return "achievement_badge"
    if 16 <= age <= 18:
        return "professional_recognition"
    return "standard_notification"


_CELEBRATION_MESSAGES = {
    "level_up": {
        "en": "Level up! You reached level {level}.",
        "uz": "Yangi daraja! Siz {level}-darajaga chiqdingiz.",
        "ru": "Новый уровень! Вы достигли уровня {level}.",
        "ar": "مستوى جديد! وصلت إلى المستوى {level}.",
    },
    "rank_improvement": {
        "en": "Great work! You moved up to rank {rank}.",
        "uz": "Ajoyib! Siz {rank}-o'ringa ko'tarildingiz.",
        "ru": "Отлично! Вы поднялись на {rank} место.",
        "ar": "عمل رائع! تقدمت إلى المرتبة {rank}.",
    },
    "milestone": {
        "en": "Masha'Allah! {points} points earned.",
        "uz": "Masha'Alloh! {points} ball to'plandi.",
        "ru": "Машаллах! Получено {points} баллов.",
        "ar": "ما شاء الله! حصلت على {points} نقطة.",
    },
}


def _millis(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value).timestamp() * 1000


def _celebration_type(data: dict) -> str | None:
    if not data.get("celebration_triggered"):
        return None
    if data.get("old_level") is not None and data["new_level"] > data["old_level"]:
        return "level_up"
    if data.get("old_rank") is not None and data["new_rank"] < data["old_rank"]:
        return "rank_improvement"
    return "milestone"


def student_ranking_update_event(data: dict, record: dict, *, family_notified: bool = False) -> dict:
    kind = _celebration_type(data)
    message = {}
    if kind:
        values = {"level": data["new_level"], "rank": data["new_rank"], "points": data["points_change"]}
        message = {lang: text.format(**values) for lang, text in _CELEBRATION_MESSAGES[kind].items()}
    old_rank = data.get("old_rank")
    # What the writer said caused the change (ranking_metadata.triggered_by); null when it did not say.
    triggered_by = (record.get("ranking_metadata") or {}).get("triggered_by")
    if triggered_by not in ("task_completion", "attendance", "feedback", "achievement"):
        triggered_by = None
    return {
        "eventType": "student_ranking_update",
        "timestamp": data["timestamp"],
        "payload": {
            "studentId": data["student_id"],
            "organizationId": data["organization_id"],
            "oldRank": old_rank,
            "newRank": data["new_rank"],
            "rankChange": (old_rank - data["new_rank"]) if old_rank is not None else 0,
            "oldLevel": data.get("old_level"),
            "newLevel": data["new_level"],
            "pointsGained": data["points_change"],
            "totalPoints": data["total_points"],
            "celebrationTriggered": bool(data["celebration_triggered"]),
            "celebrationType": kind,
            "ageGroup": data["age_group"],
            "culturalCelebration": {
                # True exactly when family notices were stored for this change (events/family.py).
                "familyNotificationRequired": family_notified,
                "culturalMessage": message,
            },
        },
        "metadata": {"triggeredBy": triggered_by},
    }


def _hijri(iso_date: str) -> str:
    day = date.fromisoformat(iso_date)
    return Gregorian(day.year, day.month, day.day).to_hijri().isoformat()


def attendance_sync_event(data: dict, old_record: dict, *, family_notified: bool = False) -> dict:
    marked_at = _millis(data.get("updated_at")) or data["timestamp"]
    return {
        "eventType": "attendance_sync",
        "timestamp": data["timestamp"],
        "payload": {
            "attendanceId": data["attendance_id"],
            "studentId": data["student_id"],
            "groupId": data["group_id"],
            "teacherId": data["teacher_id"],
            "organizationId": data["organization_id"],
            "status": data["status"],
            "attendanceDate": data["attendance_date"],
            "markedAt": marked_at,
            "wasOffline": bool(data["marked_offline"]),
            "syncPriority": data["sync_priority"],
            "conflictResolved": old_record.get("sync_status") == "conflict" and data["sync_status"] != "conflict",
            "teacherContext": {
                "markingMethod": data["marking_method"],
                "classroomContext": "offline" if data["marked_offline"] else "live",
            },
            "culturalContext": {
                "prayerTimeConsidered": bool(data.get("prayer_time_context")),
                "islamicDateRecorded": _hijri(data["attendance_date"]),
                # True exactly when family notices were stored for this change (events/family.py).
                "familyNotificationScheduled": family_notified,
            },
        },
        "metadata": {
            "syncVersion": data.get("sync_version"),
            "originalTimestamp": _millis(data.get("offline_timestamp")) or marked_at,
            "networkQuality": "poor" if data["marked_offline"] else "good",
        },
    }


_TASK_TYPES = {
    "reading": "text",
    "vocabulary": "text",
    "project": "writing",
    "quiz": "quiz",
    "speaking": "speaking",
    "listening": "listening",
    "writing": "writing",
}
_DIFFICULTY = {"beginner": 1, "intermediate": 3, "advanced": 5}
_FAMILY_ENGAGEMENT = {"10-12": "high", "13-15": "medium", "16-18": "low"}


def task_priority(due_date: str | None, now_ms: float) -> str:
    """Due within a day: high; within three days: medium; later or undated: low."""
    due = _millis(due_date)
    if due is None:
        return "low"
    hours = (due - now_ms) / 3_600_000
    if hours <= 24:
        return "high"
    if hours <= 72:
        return "medium"
    return "low"


def task_assignment_event(data: dict, *, family_notified: bool = False) -> dict:
    group = data.get("age_group")
    return {
        "eventType": "task_assignment",
        "timestamp": data["timestamp"],
        "payload": {
            "taskId": data["task_id"],
            "studentId": data["student_id"],
            "teacherId": data.get("teacher_id"),
            "groupId": data.get("group_id"),
            "organizationId": data["organization_id"],
            "taskType": _TASK_TYPES.get(data["task_type"], "text"),
            "title": {"en": data["title"]},
            "difficulty": _DIFFICULTY.get(data["difficulty"], 3),
            "estimatedDuration": data["estimated_minutes"],
            "aiGenerated": bool(data["ai_generated"]),
            "dueDate": data.get("due_date"),
            "priority": task_priority(data.get("due_date"), data["timestamp"]),
            # True exactly when family notices were stored for this task (events/family.py).
            "parentNotificationRequired": family_notified,
            "culturalAdaptation": {
                "localizedContent": False,
                "familyEngagementLevel": _FAMILY_ENGAGEMENT.get(group, "medium"),
            },
        },
        "metadata": {"assignmentSource": "ai_generated" if data["ai_generated"] else "teacher_manual"},
    }


_STYLE = {
    "animated_celebration": ("animated", 3000, True),
    "achievement_badge": ("badge", 2000, True),
    "professional_recognition": ("professional", 1500, False),
    "standard_notification": ("cultural", 1500, False),
}
_CATEGORIES = ("academic", "behavioral", "attendance", "collaboration", "cultural")
_RARITIES = ("common", "uncommon", "rare", "epic", "legendary")


def achievement_earned_event(data: dict, record: dict, *, family_notified: bool = False) -> dict:
    style, duration, sound = _STYLE[data["celebration_style"]]
    rarity = data.get("rarity") if data.get("rarity") in _RARITIES else "common"
    return {
        "eventType": "achievement_earned",
        "timestamp": data["timestamp"],
        "payload": {
            "achievementId": data["achievement_id"],
            "studentId": data["student_id"],
            "organizationId": data["organization_id"],
            "achievementName": {"en": data.get("name", "")},
            "description": {"en": data.get("description", "")},
            "category": data.get("category") if data.get("category") in _CATEGORIES else "academic",
            "rarity": rarity,
            "pointsAwarded": data.get("points_reward", 0),
            "coinsAwarded": data["coins_awarded"],
            "bonusPoints": data["bonus_points"],
            "celebration": {
                "style": style,
                "duration": duration,
                "sound": sound,
                "haptic": True,
                "islamicCelebration": {
                    "enabled": True,
                    "greeting": "Barakallahu fik",
                    "culturalElements": ["masha_allah", "geometric_pattern"],
                },
            },
            "sharing": {
                # True exactly when family notices were stored for this award (events/family.py).
                "familyNotification": family_notified,
                "classroomRecognition": _RARITIES.index(rarity) >= 2,
                "publicCelebration": False,
                "socialMediaEligible": False,
            },
        },
        "metadata": {
            "earnedThrough": "teacher_recognition" if record.get("awarded_by_id") else "task_completion",
            "difficultyLevel": _RARITIES.index(rarity) + 1,
            "culturalSignificance": "medium",
        },
    }


def broadcasts(event: Any) -> list[tuple[str, str, dict]]:
    """(topic, broadcast event name, payload) for each topic a stored event reaches.

    Events stored from Python name their broadcast in `event_metadata.event`; captured changes
    get the spec's names from their table and what changed.
    """
    meta = event.event_metadata or {}
    topics: list[str] = meta.get("topics", [])
    if not event.source_table:
        payload = event.event_payload
        if not topics and event.target_user_id and event.target_user_type:
            topics = [notifications_topic(event.organization_id, event.target_user_type)]
        name = meta.get("event") or (payload.get("type") if isinstance(payload, dict) else None) or event.event_type
        return [(t, name, payload) for t in topics]
    if not meta.get("domain_event", True):
        return []
    change = meta.get("change", {})
    data, record, old = event.event_payload, change.get("record", {}), change.get("old_record", {})
    table, op = event.source_table, change.get("type")
    family = bool(meta.get("family_notices"))
    if table == "student_rankings":
        if old.get("current_level") is not None and data["new_level"] > data["old_level"]:
            name = "level_up_achievement"
        elif data["celebration_triggered"]:
            name = "ranking_celebration"
        else:
            name = "ranking_update"
        return [(t, name, student_ranking_update_event(data, record, family_notified=family)) for t in topics]
    if table == "student_achievements":
        payload = achievement_earned_event(data, record, family_notified=family)
        return [(t, "achievement_earned", payload) for t in topics]
    if table == "attendance":
        if op == "DELETE":
            return [(t, "attendance_removed", data) for t in topics]
        payload = attendance_sync_event(data, old, family_notified=family)
        return [(t, "attendance_sync" if t.startswith("attendance:") else "attendance_update", payload) for t in topics]
    if table == "home_tasks":
        if op == "INSERT":
            name = "ai_task_ready" if data["ai_generated"] else "task_assigned"
        else:
            name = "task_removed" if op == "DELETE" else "task_updated"
        return [(t, name, task_assignment_event(data, family_notified=family)) for t in topics]
    if table == "feedback_entries":
        return [(t, "teacher_feedback", data) for t in topics]
    if table == "students":
        return [(t, "student_status_change", data) for t in topics]
    if table == "student_group_enrollments":
        return [(t, "enrollment_change", data) for t in topics]
    if table == "groups":
        return [(t, "group_update", data) for t in topics]
    return []
