"""The admin site and the base classes every app's admin builds on.

School staff sign in as staff with the "School admin" permission group (school/staff.py), never
as superusers: Django's model permissions decide which lists they see (no periodic tasks, auth
groups or Hijri overrides), and row-level security decides which rows (their school's only).
The platform superuser works across schools and gets an organization column and filter.
"""

from __future__ import annotations

from functools import wraps

from django import forms
from django.contrib import admin
from django.db import DatabaseError, transaction
from django.http import HttpRequest
from django.template.response import TemplateResponse

# PostgreSQL's insufficient_privilege: a row-level-security WITH CHECK or a missing grant.
INSUFFICIENT_PRIVILEGE = "42501"


def refused_by_row_security(exc: BaseException) -> bool:
    return isinstance(exc, DatabaseError) and getattr(exc.__cause__, "sqlstate", None) == INSUFFICIENT_PRIVILEGE


class HarryAdminSite(admin.AdminSite):
    site_header = "Harry Realtime administration"
    site_title = "Harry Realtime admin"
    index_title = "School administration"
    site_url = "/board/"
    index_template = "harry_admin/index.html"

    def admin_view(self, view, cacheable=False):
        inner = super().admin_view(view, cacheable)

        @wraps(view)
        def refusals_as_403(request: HttpRequest, *args, **kwargs):
            # A savepoint, so that the request's transaction stays usable to render the answer.
            try:
                with transaction.atomic():
                    return inner(request, *args, **kwargs)
            except DatabaseError as exc:
                if not refused_by_row_security(exc):
                    raise
                return self.row_security_refusal(request)

        return refusals_as_403

    def row_security_refusal(self, request: HttpRequest) -> TemplateResponse:
        context = {
            **self.each_context(request),
            "title": "Permission denied",
            "subtitle": None,
        }
        return TemplateResponse(request, "harry_admin/refused.html", context, status=403)


class TenantAdmin(admin.ModelAdmin):
    """A list of one school's rows: the platform superuser also sees which school each row is of."""

    def get_list_display(self, request: HttpRequest):
        columns = tuple(super().get_list_display(request))
        if request.user.is_superuser and "organization" not in columns:
            return (*columns, "organization")
        return columns

    def get_list_filter(self, request: HttpRequest):
        filters = tuple(super().get_list_filter(request))
        if request.user.is_superuser and "organization" not in filters:
            return ("organization", *filters)
        return filters

    def formfield_for_dbfield(self, db_field, request: HttpRequest, **kwargs):
        # Texts are written in four languages, Arabic right to left: each box follows its text.
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if field is not None and isinstance(field.widget, forms.TextInput | forms.Textarea):
            field.widget.attrs.setdefault("dir", "auto")
        return field

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        # School staff can only pick their own school (RLS hides the others): preselect it.
        if db_field.name == "organization" and request.user.organization_id:
            kwargs.setdefault("initial", request.user.organization_id)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ReadOnlyAdmin(TenantAdmin):
    """Records the system writes (outbox, presence, deliveries): staff look, nobody edits."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
