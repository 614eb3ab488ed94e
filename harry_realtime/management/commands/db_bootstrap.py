"""Create the database roles and database, with a superuser connection. Idempotent."""

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand
from psycopg import sql


def ensure_role(
    cursor, name: str, password: str | None, *, login: bool, createdb: bool = False, inherit: bool = True
) -> None:
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name])
    verb = "ALTER" if cursor.fetchone() else "CREATE"
    options = [
        "LOGIN" if login else "NOLOGIN",
        "CREATEDB" if createdb else "NOCREATEDB",
        "NOSUPERUSER",
        "NOBYPASSRLS",
        "NOCREATEROLE",
        "INHERIT" if inherit else "NOINHERIT",
    ]
    statement = sql.SQL(verb + " ROLE {} " + " ".join(options)).format(sql.Identifier(name))
    if password:
        statement = statement + sql.SQL(" PASSWORD {}").format(sql.Literal(password))
    cursor.execute(statement)


class Command(BaseCommand):
    help = "Create the owner, app and platform roles and the database (needs a superuser URL)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--admin-url",
            default=None,
            help="Superuser connection (default: DATABASE_ADMIN_URL or postgres@127.0.0.1:5432).",
        )

    def handle(self, *args, admin_url=None, **options):
        import os

        admin_url = admin_url or os.environ.get("DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
        owner = settings.DATABASES["owner"]
        app = settings.DATABASES["default"]
        with psycopg.connect(admin_url, autocommit=True) as conn, conn.cursor() as cursor:
            ensure_role(cursor, owner["USER"], owner.get("PASSWORD"), login=True, createdb=True)
            # NOINHERIT: membership in the platform role must not leak its policies into every query.
            ensure_role(cursor, app["USER"], app.get("PASSWORD"), login=True, inherit=False)
            ensure_role(cursor, settings.DB_PLATFORM_ROLE, None, login=False)
            # The app may switch to the platform role (SET ROLE) for explicit platform work only.
            cursor.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(settings.DB_PLATFORM_ROLE), sql.Identifier(app["USER"]))
            )
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [owner["NAME"]])
            if not cursor.fetchone():
                cursor.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(owner["NAME"]), sql.Identifier(owner["USER"])
                    )
                )
        self.stdout.write(
            f"roles {owner['USER']}, {app['USER']}, {settings.DB_PLATFORM_ROLE}; database {owner['NAME']}"
        )
