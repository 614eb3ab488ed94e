"""Database roles: the schema owner, the app role (RLS applies) and the platform role.

`manage.py db_bootstrap` creates them with a superuser connection (the machine's `postgres`, or
the embedded server's); migrations then run as the owner and grant row privileges to the others.
"""

from django.conf import settings

APP_ROLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"


def app_role_name() -> str:
    return settings.DATABASES["default"]["USER"]


def grant_table_privileges(connection) -> None:
    roles = f'"{app_role_name()}", "{settings.DB_PLATFORM_ROLE}"'
    with connection.cursor() as cursor:
        cursor.execute(f"GRANT USAGE ON SCHEMA public TO {roles}")
        cursor.execute(f"GRANT {APP_ROLE_PRIVILEGES} ON ALL TABLES IN SCHEMA public TO {roles}")
        cursor.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {roles}")
        cursor.execute(f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {roles}")
