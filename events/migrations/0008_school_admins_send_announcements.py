"""The school-admin group gets the Announcements page (view and add: school/staff.py)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from school.staff import school_admin_group_sync


def sync_group(apps, schema_editor):
    using = schema_editor.connection.alias
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0, using=using)
        app_config.models_module = None
    school_admin_group_sync(
        group_model=apps.get_model("auth", "Group"),
        permission_model=apps.get_model("auth", "Permission"),
        using=using,
        only_existing=True,
    )


class Migration(migrations.Migration):
    dependencies = [("events", "0007_announcements_and_notices"), ("school", "0003_school_admin_group")]
    operations = [migrations.RunPython(sync_group, migrations.RunPython.noop)]
