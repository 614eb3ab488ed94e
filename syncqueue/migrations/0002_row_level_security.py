from django.db import migrations

from harry_realtime import rls

OWN_OR_ADMIN = "organization_id = app_org_id() AND (user_id = app_user_id() OR app_role() = 'admin')"


class Migration(migrations.Migration):
    dependencies = [("syncqueue", "0001_initial"), ("school", "0002_row_level_security")]
    operations = [
        rls.rls_table("offline_sync_queue"),
        rls.policy("offline_sync_queue", "own_sync_queue", using=OWN_OR_ADMIN, check=OWN_OR_ADMIN),
        rls.updated_at_trigger("offline_sync_queue"),
    ]
