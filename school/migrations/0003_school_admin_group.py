"""School admins become staff in the "School admin" permission group (school/staff.py) instead
of superusers, and the database keeps the superuser flag to the platform (no organization).

Permissions are created here first: Django creates them only after the whole migrate run
(post_migrate). Existing school superusers are demoted with row-level security briefly not
forced on the owner, inside this migration's transaction, so nothing else sees the change half
done.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations, models
from django.db.models import Q

from school.staff import SCHOOL_ADMIN_GROUP, school_admin_group_sync


def create_group(apps, schema_editor):
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


def demote_school_superusers(apps, schema_editor):
    using = schema_editor.connection.alias
    User = apps.get_model("school", "User")
    group = apps.get_model("auth", "Group").objects.using(using).get(name=SCHOOL_ADMIN_GROUP)
    schema_editor.execute("ALTER TABLE users NO FORCE ROW LEVEL SECURITY")
    school_superusers = User.objects.using(using).filter(organization__isnull=False, is_superuser=True)
    for user in school_superusers:
        if user.is_staff:
            user.groups.add(group)
    school_superusers.update(is_superuser=False)
    schema_editor.execute("ALTER TABLE users FORCE ROW LEVEL SECURITY")


def remove_group(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.using(schema_editor.connection.alias).filter(name=SCHOOL_ADMIN_GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("school", "0002_row_level_security"),
        ("events", "0006_capture_helpers_plpgsql"),
        ("presence", "0003_row_level_security"),
        ("syncqueue", "0004_sync_changes_trigger"),
        ("notifications", "0005_device_delivery_row_level_security"),
        ("culture", "0003_row_level_security"),
    ]
    operations = [
        migrations.RunPython(create_group, remove_group),
        migrations.RunPython(demote_school_superusers, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="user",
            constraint=models.CheckConstraint(
                condition=Q(is_superuser=False) | Q(organization__isnull=True),
                name="users_superuser_is_platform_only",
            ),
        ),
    ]
