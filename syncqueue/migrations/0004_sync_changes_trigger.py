"""Row-level security on sync_changes and the trigger that fills it from the syncable tables."""

from django.db import migrations

from harry_realtime import rls

# Frozen here: a migration must not change when the model module does.
SYNCABLE_TABLES = [
    "students",
    "groups",
    "student_group_enrollments",
    "attendance",
    "student_rankings",
    "student_achievements",
    "home_tasks",
    "feedback_entries",
]

RECORD_FUNCTION = """
CREATE OR REPLACE FUNCTION record_sync_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
    op text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := to_jsonb(OLD);
        op := 'delete';
    ELSE
        r := to_jsonb(NEW);
        op := CASE WHEN r->>'deleted_at' IS NOT NULL THEN 'delete' ELSE 'upsert' END;
    END IF;
    INSERT INTO sync_changes
        (organization_id, xid, table_name, record_id, operation, student_id, group_id, sync_version, changed_at)
    VALUES (
        (r->>'organization_id')::uuid,
        pg_current_xact_id()::text::bigint,
        TG_TABLE_NAME,
        (r->>'id')::uuid,
        op,
        CASE WHEN TG_TABLE_NAME = 'students' THEN (r->>'id')::uuid ELSE (r->>'student_id')::uuid END,
        CASE WHEN TG_TABLE_NAME = 'groups' THEN (r->>'id')::uuid ELSE (r->>'group_id')::uuid END,
        (r->>'sync_version')::bigint,
        now()
    );
    RETURN NULL;
END $$;
"""

operations = [
    *rls.tenant_table("sync_changes"),
    migrations.RunSQL(RECORD_FUNCTION, "DROP FUNCTION IF EXISTS record_sync_change();"),
]
operations += [
    migrations.RunSQL(
        f"CREATE TRIGGER {table}_sync_change AFTER INSERT OR UPDATE OR DELETE ON {table}"
        " FOR EACH ROW EXECUTE FUNCTION record_sync_change();",
        f"DROP TRIGGER IF EXISTS {table}_sync_change ON {table};",
    )
    for table in SYNCABLE_TABLES
]


class Migration(migrations.Migration):
    dependencies = [("syncqueue", "0003_sync_changes"), ("school", "0002_row_level_security")]
    operations = operations
