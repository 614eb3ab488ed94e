"""The spec's realtime policies ("RLS Policies for Real-time Access"), within the organization."""

from django.db import migrations

from harry_realtime import rls

IN_ORG = "organization_id = app_org_id()"
# The spec's rule, plus the author of an event (so a sender can read back what it stored).
VISIBLE_EVENT = (
    f"{IN_ORG} AND (target_user_id = app_user_id() OR target_user_id IS NULL"
    " OR broadcast_scope IN ('organization', 'system') OR created_by_id = app_user_id())"
)
OWN_OR_ADMIN = f"{IN_ORG} AND (user_id = app_user_id() OR app_role() = 'admin')"


class Migration(migrations.Migration):
    dependencies = [("events", "0002_initial"), ("school", "0002_row_level_security")]
    operations = [
        rls.rls_table("realtime_events"),
        rls.policy("realtime_events", "events_select", command="SELECT", using=VISIBLE_EVENT),
        rls.policy_insert("realtime_events", "events_insert", check=IN_ORG),
        rls.policy("realtime_events", "events_update", command="UPDATE", using=VISIBLE_EVENT, check=IN_ORG),
        rls.rls_table("realtime_subscriptions"),
        rls.policy("realtime_subscriptions", "own_subscriptions", using=OWN_OR_ADMIN, check=OWN_OR_ADMIN),
        rls.updated_at_trigger("realtime_events"),
        rls.updated_at_trigger("realtime_subscriptions"),
    ]
