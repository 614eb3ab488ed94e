"""The one base API view that scopes every request to its tenant, and the error format.

Errors always look like `{"error": {"code": "...", "message": "...", "details": ...}}`.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from .tenancy import Tenant, tenant_context


class ApiError(exceptions.APIException):
    """A domain error with its own HTTP status and machine-readable code."""

    def __init__(
        self, code: str, message: str, *, status_code: int = 400, details=None, retry_after: int | None = None
    ):
        super().__init__(message, code)
        self.status_code = status_code
        self.error_code = code
        self.details = details
        # DRF's handler turns `wait` into a Retry-After header.
        self.wait = retry_after


def error_body(code: str, message: str, details=None) -> dict:
    body = {"code": code, "message": str(message)}
    if details is not None:
        body["details"] = details
    return {"error": body}


def _code_of(exc: exceptions.APIException) -> str:
    if isinstance(exc, ApiError):
        return exc.error_code
    if isinstance(exc, exceptions.ValidationError):
        return "validation_error"
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else exc.default_code


def exception_handler(exc, context):
    if isinstance(exc, Http404):
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
    elif isinstance(exc, ApiError):
        body = error_body(exc.error_code, exc.detail, exc.details)
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

    def dispatch(self, request, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            self.initial(request, *args, **kwargs)
            handler = getattr(self, request.method.lower(), None)
            if request.method.lower() not in self.http_method_names or handler is None:
                handler = self.http_method_not_allowed
            if self.tenant_transaction and request.auth is not None:
                with tenant_context(self.tenant):
                    response = handler(request, *args, **kwargs)
            else:
                response = handler(request, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - DRF's own contract: every error becomes a response
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return self.response


def created(data) -> Response:
    return Response(data, status=status.HTTP_201_CREATED)
