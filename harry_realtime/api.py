"""The one base API view that scopes every request to its tenant, and the error format.

Errors always look like `{"error": {"code": "...", "message": "...", "details": ...}}`. Services
raise the domain's errors (`harry_realtime/errors.py`); `HTTP_STATUS` maps each kind to its status.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotAuthenticated,
    NotFound,
    TooLarge,
    TooMany,
    Unavailable,
)
from .tenancy import Tenant, tenant_context

HTTP_STATUS: dict[type[DomainError], int] = {
    Invalid: status.HTTP_400_BAD_REQUEST,
    NotAuthenticated: status.HTTP_401_UNAUTHORIZED,
    Forbidden: status.HTTP_403_FORBIDDEN,
    NotFound: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    TooLarge: status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    TooMany: status.HTTP_429_TOO_MANY_REQUESTS,
    Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}


def http_status(error: DomainError) -> int:
    """The status of the error's kind (its nearest listed class); 400 for the bare base class."""
    for kind in type(error).__mro__:
        if kind in HTTP_STATUS:
            return HTTP_STATUS[kind]
    return status.HTTP_400_BAD_REQUEST


class _DomainErrorResponse(exceptions.APIException):
    """A domain error handed to DRF's handler, which then rolls back and sets headers as for any
    API error (`wait` becomes Retry-After)."""

    def __init__(self, error: DomainError):
        super().__init__(error.message, error.code)
        self.status_code = http_status(error)
        self.error = error
        self.wait = getattr(error, "retry_after", None)


def error_body(code: str, message: str, details=None) -> dict:
    body = {"code": code, "message": str(message)}
    if details is not None:
        body["details"] = details
    return {"error": body}


def _code_of(exc: exceptions.APIException) -> str:
    if isinstance(exc, exceptions.ValidationError):
        return "validation_error"
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else exc.default_code


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        exc = _DomainErrorResponse(exc)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.messages)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        body = error_body("validation_error", "The request is not valid.", exc.detail)
    elif isinstance(exc, _DomainErrorResponse):
        body = error_body(exc.error.code, exc.error.message, exc.error.details)
    else:
        body = error_body(_code_of(exc), exc.detail)
    response.data = body
    return response


# Authenticated by JWT; the handler runs inside the caller's tenant context. The whole handler is
# one transaction: an error rolls back everything it wrote. Views whose service opens its own
# per-item transactions set `tenant_transaction = False` and pass `self.tenant` to those services.
# (A comment, not a docstring: the API schema inherits docstrings as the public description of
# every view without its own.)
class TenantAPIView(APIView):
    tenant_transaction = True

    @property
    def tenant(self) -> Tenant:
        return self.request.auth.tenant

    def initial(self, request, *args, **kwargs):
        """After DRF's checks (authentication, permissions, throttles), wrap the handler DRF is
        about to call so that it runs inside the caller's tenant context."""
        super().initial(request, *args, **kwargs)
        method = request.method.lower()
        handler = getattr(self, method, None) if method in self.http_method_names else None
        if handler is not None and self.tenant_transaction and request.auth is not None:
            setattr(self, method, self._in_tenant_context(handler))

    def _in_tenant_context(self, handler: Callable) -> Callable:
        @functools.wraps(handler)
        def run(request, *args, **kwargs):
            with tenant_context(self.tenant):
                return handler(request, *args, **kwargs)

        return run


def created(data) -> Response:
    return Response(data, status=status.HTTP_201_CREATED)


def not_found(request, exception) -> HttpResponse:
    """Django's 404 view (`handler404`): a path under /api/ or /realtime/ that matches no route
    answers the API's JSON error, not an HTML page; the admin keeps Django's page."""
    if request.path.startswith(("/api/", "/realtime/")):
        return JsonResponse(error_body("not_found", "No such resource or route."), status=404)
    return defaults.page_not_found(request, exception)
