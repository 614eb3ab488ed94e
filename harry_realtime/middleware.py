from contextlib import nullcontext

from django.conf import settings

from .tenancy import Tenant, dangerously_platform_context, tenant_context


def admin_scope(user):
    """School staff see their own organization; only a platform superuser without one sees all."""
    if not (user.is_authenticated and user.is_staff):
        return nullcontext()
    if user.organization_id:
        return tenant_context(Tenant(organization_id=user.organization_id, user_id=user.pk, role=user.role))
    if user.is_superuser:
        return dangerously_platform_context()
    return nullcontext()


class AdminTenantMiddleware:
    """Django admin pages run inside the signed-in staff member's tenant context."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.prefix = "/" + getattr(settings, "ADMIN_URL", "admin/")

    def __call__(self, request):
        if not request.path.startswith(self.prefix):
            return self.get_response(request)
        with admin_scope(request.user):
            return self.get_response(request)
