"""Row-level security: school settings and reminders per organization; announced Hijri month
starts are country data every school reads and only the platform role (superuser admin) writes.
"""

from django.db import migrations

from harry_realtime import rls

operations = [
    *rls.tenant_table("culture_prayer_settings"),
    *rls.tenant_table("culture_prayer_reminders"),
    rls.rls_table("culture_hijri_month_overrides"),
    rls.policy("culture_hijri_month_overrides", "read_all", command="SELECT", using="true"),
    rls.updated_at_trigger("culture_prayer_settings"),
    rls.updated_at_trigger("culture_prayer_reminders"),
    rls.updated_at_trigger("culture_hijri_month_overrides"),
]


class Migration(migrations.Migration):
    dependencies = [("culture", "0002_seed_uzbekistan_hijri_overrides")]
    operations = operations
