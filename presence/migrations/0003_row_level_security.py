from django.db import migrations

from harry_realtime import rls

IN_ORG = "organization_id = app_org_id()"
OWN_OR_ADMIN = f"{IN_ORG} AND (user_id = app_user_id() OR app_role() = 'admin')"


class Migration(migrations.Migration):
    dependencies = [("presence", "0002_initial"), ("school", "0002_row_level_security")]
    operations = [
        rls.rls_table("realtime_presence"),
        # Everyone in the school sees who is online; a user writes only their own presence.
        rls.policy("realtime_presence", "presence_select", command="SELECT", using=IN_ORG),
        rls.policy_insert("realtime_presence", "presence_insert", check=OWN_OR_ADMIN),
        rls.policy("realtime_presence", "presence_update", command="UPDATE", using=OWN_OR_ADMIN, check=OWN_OR_ADMIN),
        rls.policy("realtime_presence", "presence_delete", command="DELETE", using=OWN_OR_ADMIN),
    ]
