"""Row-level-security SQL for migrations: reversible operations, one definition of the rules.

The policies read the transaction-local settings that `harry_realtime.tenancy` writes through
the helper functions `app_org_id()`, `app_user_id()` and `app_role()`.
"""

from django.db import migrations

PLATFORM_ROLE = "harry_platform"

HELPER_FUNCTIONS = """
CREATE OR REPLACE FUNCTION app_org_id() RETURNS uuid LANGUAGE sql STABLE AS
$$ SELECT nullif(current_setting('app.org_id', true), '')::uuid $$;
CREATE OR REPLACE FUNCTION app_user_id() RETURNS uuid LANGUAGE sql STABLE AS
$$ SELECT nullif(current_setting('app.user_id', true), '')::uuid $$;
CREATE OR REPLACE FUNCTION app_role() RETURNS text LANGUAGE sql STABLE AS
$$ SELECT nullif(current_setting('app.role', true), '') $$;
CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE OR REPLACE FUNCTION bump_sync_version() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN NEW.updated_at := now(); NEW.sync_version := OLD.sync_version + 1; RETURN NEW; END $$;
"""
DROP_HELPER_FUNCTIONS = """
DROP FUNCTION IF EXISTS bump_sync_version();
DROP FUNCTION IF EXISTS touch_updated_at();
DROP FUNCTION IF EXISTS app_role();
DROP FUNCTION IF EXISTS app_user_id();
DROP FUNCTION IF EXISTS app_org_id();
"""


def helper_functions() -> migrations.RunSQL:
    return migrations.RunSQL(HELPER_FUNCTIONS, DROP_HELPER_FUNCTIONS)


def _enable(table: str) -> str:
    return (
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY; ALTER TABLE {table} FORCE ROW LEVEL SECURITY;"
        f" CREATE POLICY platform_all ON {table} TO {PLATFORM_ROLE} USING (true) WITH CHECK (true);"
    )


def _disable(table: str) -> str:
    return (
        f"DROP POLICY IF EXISTS platform_all ON {table};"
        f" ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY; ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;"
    )


def policy(table: str, name: str, *, using: str, check: str | None = None, command: str = "ALL") -> migrations.RunSQL:
    """One extra policy; permissive policies on a table are OR-ed together."""
    with_check = f" WITH CHECK ({check})" if check else ""
    return migrations.RunSQL(
        f"CREATE POLICY {name} ON {table} FOR {command} USING ({using}){with_check};",
        f"DROP POLICY IF EXISTS {name} ON {table};",
    )


def policy_insert(table: str, name: str, *, check: str) -> migrations.RunSQL:
    return migrations.RunSQL(
        f"CREATE POLICY {name} ON {table} FOR INSERT WITH CHECK ({check});",
        f"DROP POLICY IF EXISTS {name} ON {table};",
    )


def tenant_table(table: str, *, org_column: str = "organization_id") -> list[migrations.RunSQL]:
    """ENABLE + FORCE RLS, the platform role's explicit path, and organization isolation."""
    isolation = f"{org_column} = app_org_id()"
    return [
        migrations.RunSQL(_enable(table), _disable(table)),
        policy(table, "tenant_isolation", using=isolation, check=isolation),
    ]


def rls_table(table: str) -> migrations.RunSQL:
    """ENABLE + FORCE RLS and the platform path only; the caller adds the table's own policies."""
    return migrations.RunSQL(_enable(table), _disable(table))


def sync_version_trigger(table: str) -> migrations.RunSQL:
    return migrations.RunSQL(
        f"CREATE TRIGGER {table}_sync_version BEFORE UPDATE ON {table}"
        f" FOR EACH ROW EXECUTE FUNCTION bump_sync_version();",
        f"DROP TRIGGER IF EXISTS {table}_sync_version ON {table};",
    )


def updated_at_trigger(table: str) -> migrations.RunSQL:
    return migrations.RunSQL(
        f"CREATE TRIGGER {table}_updated_at BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION touch_updated_at();",
        f"DROP TRIGGER IF EXISTS {table}_updated_at ON {table};",
    )
