"""The school-admin role in the Django admin: a permission group, not the superuser flag.

A school admin is `is_staff` and a member of SCHOOL_ADMIN_GROUP. The group's model permissions
decide which admin lists exist for them; row-level security keeps every row to their school.
Platform objects (periodic tasks, auth groups and permissions, Hijri overrides) are absent on
purpose: only the platform superuser manages them. Records the system writes (the outbox,
presence, deliveries, the sync change log, reminders) are view-only.
"""

from __future__ import annotations

SCHOOL_ADMIN_GROUP = "School admin"

EDIT = ("view", "add", "change", "delete")
VIEW = ("view",)

# "app_label.model" -> actions
SCHOOL_ADMIN_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "school.organization": ("view", "change"),
    "school.user": ("view", "add", "change"),
    "school.teacher": EDIT,
    "school.student": EDIT,
    "school.group": EDIT,
    "school.studentgroupenrollment": EDIT,
    "school.teachergroupassignment": EDIT,
    "school.attendance": EDIT,
    "school.studentranking": EDIT,
    "school.achievement": EDIT,
    "school.studentachievement": EDIT,
    "school.hometask": EDIT,
    "school.feedbackentry": EDIT,
    "school.userrelationship": EDIT,
    "events.realtimeevent": VIEW,
    "events.realtimesubscription": VIEW,
    # Sent is sent: an announcement is created (the admin's Announcements page) and viewed, never edited.
    "events.announcement": ("view", "add"),
    "presence.realtimepresence": VIEW,
    "syncqueue.offlinesyncoperation": ("view", "change"),
    "syncqueue.syncchange": VIEW,
    "notifications.pushnotification": ("view", "add", "change"),
    "notifications.devicetoken": ("view", "change"),
    "notifications.pushdelivery": VIEW,
    "culture.prayercalculationsettings": ("view", "add", "change"),
    "culture.prayerreminder": VIEW,
}


def school_admin_codenames() -> list[tuple[str, str]]:
    """(app_label, codename) of every permission the school-admin group holds."""
    pairs = []
    for label, actions in SCHOOL_ADMIN_PERMISSIONS.items():
        app_label, model = label.split(".")
        pairs += [(app_label, f"{action}_{model}") for action in actions]
    return pairs


def school_admin_group_sync(*, group_model, permission_model, using: str = "default", only_existing: bool = False):
    """Create the group or set its permissions to exactly SCHOOL_ADMIN_PERMISSIONS.

    Takes the models as arguments so that a migration can pass its historical ones; a migration
    passes `only_existing=True`, since models that a later migration creates have no permissions
    yet (that migration syncs the group again).
    """
    group, _ = group_model.objects.using(using).get_or_create(name=SCHOOL_ADMIN_GROUP)
    wanted = set(school_admin_codenames())
    candidates = permission_model.objects.using(using).filter(codename__in={c for _, c in wanted})
    permissions = [
        p for p in candidates.select_related("content_type") if (p.content_type.app_label, p.codename) in wanted
    ]
    missing = wanted - {(p.content_type.app_label, p.codename) for p in permissions}
    if only_existing:
        content_types = permission_model._meta.get_field("content_type").related_model.objects.using(using)
        existing = {f"{app}.{model}" for app, model in content_types.values_list("app_label", "model")}
        missing = {(app, codename) for app, codename in missing if f"{app}.{codename.split('_', 1)[1]}" in existing}
    if missing:
        raise LookupError(f"permissions missing for the school-admin group: {sorted(missing)}")
    group.permissions.set(permissions)
    return group
