"""The one place that sets the row-level-security context (docs/design.md, decision 4).

Every query against a tenant table runs inside `tenant_context()`: a transaction whose
transaction-local settings `app.org_id`, `app.user_id` and `app.role` are what the policies
written in the migrations read. Nothing here filters rows in Python; PostgreSQL does.

`dangerously_platform_context()` is the only way around it: it switches the transaction to the
`harry_platform` database role, which has explicit allow-all policies. Jobs that work across
schools (the listener, expiry, reminders), authentication lookups and the platform superuser
in the admin use it; request handlers never do.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.db import connections, transaction

_SETTINGS = ("app.org_id", "app.user_id", "app.role")


@dataclass(frozen=True)
class Tenant:
    """Who a unit of work runs as: the organization, the user and their role."""

    organization_id: uuid.UUID | str
    user_id: uuid.UUID | str | None = None
    role: str | None = None

    def as_settings(self) -> tuple[str, str, str]:
        return (str(self.organization_id), str(self.user_id or ""), self.role or "")


def _read(cursor) -> tuple[str, str, str]:
    cursor.execute(
        "SELECT current_setting('app.org_id', true), current_setting('app.user_id', true),"
        " current_setting('app.role', true)"
    )
    return tuple(value or "" for value in cursor.fetchone())


def _write(cursor, values: tuple[str, str, str]) -> None:
    cursor.execute(
        "SELECT set_config('app.org_id', %s, true), set_config('app.user_id', %s, true),"
        " set_config('app.role', %s, true)",
        list(values),
    )


@contextmanager
def tenant_context(tenant: Tenant, *, using: str = "default") -> Iterator[None]:
    """Run the block in a transaction scoped to one organization, user and role.

    Nested use restores the outer context on exit, so a helper may narrow the scope safely.
    """
    if not tenant.organization_id:
        raise ValueError("tenant_context needs an organization")
    connection = connections[using]
    # When this block owns the transaction, its end reverts the transaction-local settings: reading
    # and restoring them would be two round trips more for every socket call and request.
    nested = connection.in_atomic_block
    with transaction.atomic(using=using):
        with connection.cursor() as cursor:
            previous = _read(cursor) if nested else None
            _write(cursor, tenant.as_settings())
        # On an exception the atomic block rolls back, which also reverts the settings.
        yield
        if previous is not None:
            with connection.cursor() as cursor:
                _write(cursor, previous)


@contextmanager
def dangerously_platform_context(*, using: str = "default") -> Iterator[None]:
    """Run the block as the platform role, which sees every organization. Jobs and admin only."""
    connection = connections[using]
    # When this block owns the transaction, its commit or rollback reverts SET LOCAL: reading and
    # restoring the role would be two round trips more for the listener and the token lookups.
    nested = connection.in_atomic_block
    with transaction.atomic(using=using):
        with connection.cursor() as cursor:
            if nested:
                cursor.execute("SELECT current_user")
                previous_role = cursor.fetchone()[0]
            cursor.execute(f'SET LOCAL ROLE "{settings.DB_PLATFORM_ROLE}"')
        yield
        if nested:
            with connection.cursor() as cursor:
                cursor.execute(f'SET LOCAL ROLE "{previous_role}"')


def current_tenant(*, using: str = "default") -> Tenant | None:
    """The context the current transaction runs in, or None outside any."""
    with connections[using].cursor() as cursor:
        org, user, role = _read(cursor)
    if not org:
        return None
    return Tenant(organization_id=org, user_id=user or None, role=role or None)


def assert_role_cannot_bypass_rls(connection) -> None:
    """Refuse to serve when the app's database role is a superuser or has BYPASSRLS."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = session_user")
        name, is_super, bypass = cursor.fetchone()
    if is_super or bypass:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f"Database role {name!r} is a superuser or has BYPASSRLS; row-level security would "
            "not protect tenants. Connect the app as a role without those attributes "
            "(see README: database roles)."
        )
