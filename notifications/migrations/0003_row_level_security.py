from django.db import migrations

from harry_realtime import rls

IN_ORG = "organization_id = app_org_id()"
# Recipients read their own; staff (teachers send messages, admins run delivery) read the school's.
VISIBLE = f"{IN_ORG} AND (target_user_id = app_user_id() OR app_role() IN ('admin', 'teacher'))"


class Migration(migrations.Migration):
    dependencies = [("notifications", "0002_initial"), ("school", "0002_row_level_security")]
    operations = [
        rls.rls_table("push_notifications"),
        rls.policy("push_notifications", "push_select", command="SELECT", using=VISIBLE),
        rls.policy_insert("push_notifications", "push_insert", check=IN_ORG),
        rls.policy("push_notifications", "push_update", command="UPDATE", using=VISIBLE, check=IN_ORG),
        rls.policy("push_notifications", "push_delete", command="DELETE", using=f"{IN_ORG} AND app_role() = 'admin'"),
        rls.updated_at_trigger("push_notifications"),
    ]
