"""Row-level security for the school tables, and the triggers that keep versions true."""

from django.db import migrations

from harry_realtime import rls

ORG_TABLES = [
    "teachers",
    "students",
    "groups",
    "student_group_enrollments",
    "teacher_group_assignments",
    "attendance",
    "student_rankings",
    "achievements",
    "student_achievements",
    "home_tasks",
    "feedback_entries",
    "user_relationships",
]
SYNC_VERSIONED = [
    "students",
    "groups",
    "student_group_enrollments",
    "attendance",
    "student_rankings",
    "student_achievements",
    "home_tasks",
    "feedback_entries",
]
TIMESTAMPED = ["organizations", "users", "teachers", "teacher_group_assignments", "achievements", "user_relationships"]

operations = [rls.helper_functions()]
for table in ORG_TABLES:
    operations += rls.tenant_table(table)
# An organization row is visible inside its own context; a user row inside its organization's
# context, and always to the user themself.
operations += [
    rls.rls_table("organizations"),
    rls.policy("organizations", "tenant_isolation", using="id = app_org_id()", check="id = app_org_id()"),
    rls.rls_table("users"),
    rls.policy(
        "users",
        "tenant_isolation",
        using="organization_id = app_org_id() OR id = app_user_id()",
        check="organization_id = app_org_id()",
    ),
]
operations += [rls.sync_version_trigger(t) for t in SYNC_VERSIONED]
operations += [rls.updated_at_trigger(t) for t in TIMESTAMPED]


class Migration(migrations.Migration):
    dependencies = [("school", "0001_initial")]
    operations = operations
