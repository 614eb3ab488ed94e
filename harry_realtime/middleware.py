import logging
import re
import time
import uuid
from contextlib import nullcontext

from django.conf import settings

from . import kpi
from .tenancy import Tenant, dangerously_platform_context, tenant_context


def user_scope(user):
    """A signed-in user's own context: their school's; a platform superuser (no school) sees all."""
    if not user.is_authenticated:
        return nullcontext()
    if user.organization_id:
        return tenant_context(Tenant(organization_id=user.organization_id, user_id=user.pk, role=user.role))
    if user.is_superuser:
        return dangerously_platform_context()
    return nullcontext()


def admin_scope(user):
    """School staff see their own organization; only a platform superuser without one sees all."""
    if not (user.is_authenticated and user.is_staff):
        return nullcontext()
    return user_scope(user)


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


request_log = logging.getLogger("harry.request")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestLogMiddleware:
    """One JSON log line and one latency observation per HTTP request; the path without its
    query string (a client may put a token there). A well-formed `X-Request-ID` from the proxy is
    kept, otherwise one is made; the response carries it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        offered = request.headers.get("X-Request-ID", "")
        request.request_id = offered if _REQUEST_ID.match(offered) else uuid.uuid4().hex
        started = time.perf_counter()
        response = self.get_response(request)
        seconds = time.perf_counter() - started
        match = getattr(request, "resolver_match", None)
        route = f"/{match.route}" if match and match.route else "unmatched"
        user = getattr(request, "user", None)
        authenticated = bool(user is not None and user.is_authenticated)
        kpi.observe(
            "harry_http_request_duration_seconds",
            seconds,
            route=route,
            method=request.method,
            status=f"{response.status_code // 100}xx",
        )
        request_log.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "event": "http_request",
                "request_id": request.request_id,
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 2),
                "user_id": str(user.pk) if authenticated else None,
                "organization_id": str(user.organization_id) if authenticated and user.organization_id else None,
            },
        )
        response["X-Request-ID"] = request.request_id
        return response
