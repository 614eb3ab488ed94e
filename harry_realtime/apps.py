from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig
from django.contrib.auth.signals import user_logged_in
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate

_role_checked = False


def _refuse_rls_bypass(sender, connection, **kwargs) -> None:
    """Checked on the first connection of the process: the role does not change afterwards."""
    global _role_checked
    if connection.alias == "default" and not _role_checked:
        from .tenancy import assert_role_cannot_bypass_rls

        assert_role_cannot_bypass_rls(connection)
        _role_checked = True


def _grant_app_roles(sender, using: str, **kwargs) -> None:
    """After every migrate, the app and platform roles may use every table the owner created."""
    if using != "owner":
        return
    from django.db import connections

    from .roles import grant_table_privileges

    grant_table_privileges(connections[using])


def _update_last_login_in_scope(sender, user, **kwargs) -> None:
    """Django's own handler would write outside any tenant context, which RLS refuses."""
    from django.contrib.auth.models import update_last_login

    from .middleware import user_scope

    with user_scope(user):
        update_last_login(sender, user, **kwargs)


class HarryRealtimeConfig(AppConfig):
    name = "harry_realtime"
    verbose_name = "Harry Realtime platform"

    def ready(self) -> None:
        from . import openapi  # noqa: F401 - registers the schema's authentication extensions
        from .logredact import install
        from .logs import install_client_fault_filter

        install()
        install_client_fault_filter()
        connection_created.connect(_refuse_rls_bypass, dispatch_uid="refuse_rls_bypass")
        post_migrate.connect(_grant_app_roles, dispatch_uid="grant_app_roles")
        user_logged_in.disconnect(dispatch_uid="update_last_login")
        user_logged_in.connect(_update_last_login_in_scope, dispatch_uid="update_last_login_in_scope")


class HarryAdminConfig(AdminConfig):
    """Django's admin with the project's site (harry_realtime/admin.py)."""

    default_site = "harry_realtime.admin.HarryAdminSite"
